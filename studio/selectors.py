"""Reads of the studio: a user's gallery, one generation, the choices of the generation form."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from registry.models import FileLayout, ModelKind, ModelVersion, VersionStatus, visible_q
from studio.limits import GENERATION_FAMILIES
from studio.models import Generation, GenerationResource, GenerationStatus, ResourceKind

User = AuthUser | AnonymousUser

MAX_CHOICES = 200


def _with_details(qs: QuerySet[Generation]) -> QuerySet[Generation]:
    return qs.select_related("base_version", "base_version__model").prefetch_related(
        Prefetch(
            "resources",
            queryset=GenerationResource.objects.select_related("version", "version__model"),
        )
    )


def generation_list(*, user: AuthUser) -> QuerySet[Generation]:
    """The user's own generations, newest first, with what each used."""
    return _with_details(Generation.objects.filter(user=user))


def generation_get(*, generation_id: int, user: User) -> Generation | None:
    """A generation its owner may see, or anyone when the owner made it public."""
    visible = Q(is_public=True, status=GenerationStatus.SUCCEEDED)
    if user.is_authenticated:
        visible |= Q(user_id=user.pk)
    return _with_details(Generation.objects.filter(visible, pk=generation_id)).first()


def queue_position(generation: Generation) -> int | None:
    """How many queued generations were asked for before this one (None unless queued)."""
    if generation.status != GenerationStatus.QUEUED:
        return None
    return Generation.objects.filter(
        status=GenerationStatus.QUEUED, created_at__lt=generation.created_at
    ).count()


RECENT_FOR_ETA = 20


def seconds_per_step() -> float | None:
    """The mean seconds per step of the latest finished generations (anyone's): the pace
    that estimates a generation that has not made a step yet; None when none finished."""
    recent = list(
        Generation.objects.filter(status=GenerationStatus.SUCCEEDED, duration_ms__isnull=False)
        .order_by("-finished_at", "-pk")
        .values_list("duration_ms", "steps")[:RECENT_FOR_ETA]
    )
    if not recent:
        return None
    return sum(ms or 0 for ms, _ in recent) / 1000 / max(1, sum(steps for _, steps in recent))


def generation_eta(
    generation: Generation,
    *,
    ahead: int | None,
    pace: Callable[[], float | None] = seconds_per_step,
    now: datetime.datetime | None = None,
) -> int | None:
    """Seconds until the image is likely done, or None when there is no basis for a guess.

    Running with steps made: the pace of its own steps so far. Otherwise the recent pace
    (``pace()``, read only then), times its steps and those of the ``ahead`` queued before it
    (:func:`queue_position`)."""
    if generation.is_finished:
        return None
    step, total = generation.progress_step, generation.steps
    if generation.status == GenerationStatus.RUNNING and step > 0 and generation.started_at:
        elapsed = ((now or timezone.now()) - generation.started_at).total_seconds()
        return max(1, round(elapsed / step * (total - step)))
    per_step = pace()
    if per_step is None:
        return None
    return max(1, round(per_step * total * ((ahead or 0) + 1)))


def progress_label(generation: Generation) -> str:
    """What the badge and the bar both say: Queued, Loading the model, Step N of M, Done…"""
    if generation.status == GenerationStatus.QUEUED:
        return "Queued"
    if generation.status == GenerationStatus.RUNNING:
        if generation.progress_step == 0:
            return "Loading the model"
        return f"Step {generation.progress_step} of {generation.steps}"
    return str(generation.get_status_display())


def _usable_versions(user: AuthUser) -> QuerySet[ModelVersion]:
    """Published versions of models others may see, and every version of the user's own: the
    registry's visibility rule (``visible_q``), applied to staff as to any member (the form
    offers what a member would use, not every private model).

    Whether a paid version was bought is checked when the request is made (a 403 says what it
    costs); listing it here lets the user find it.
    """
    published = Q(status=VersionStatus.PUBLISHED)
    rule = visible_q(user, via="model__", public_also=published, staff_sees_all=False)
    return ModelVersion.objects.select_related("model", "model__owner").filter(rule)


@dataclass(frozen=True)
class FormChoices:
    checkpoints: list[ModelVersion]
    loras: list[ModelVersion]
    embeddings: list[ModelVersion]


def _ordered(qs: QuerySet[ModelVersion]) -> list[ModelVersion]:
    return list(qs.order_by("-model__download_count", "model__name", "-created_at")[:MAX_CHOICES])


def form_choices(*, user: AuthUser, include: int | None = None) -> FormChoices:
    """Checkpoints, LoRAs and embeddings to offer (``include``: one version to keep listed)."""
    usable = _usable_versions(user).filter(base_model__in=GENERATION_FAMILIES)
    if include is not None:
        usable = usable | _usable_versions(user).filter(pk=include)
    checkpoints = (
        usable.filter(model__kind=ModelKind.CHECKPOINT)
        .filter(Q(layout=FileLayout.DIFFUSERS) | Q(files__path__endswith=".safetensors"))
        .distinct()
    )
    return FormChoices(
        checkpoints=_ordered(checkpoints.prefetch_related("files__blob")),
        loras=_ordered(usable.filter(model__kind=ModelKind.LORA)),
        embeddings=_ordered(
            usable.filter(model__kind=ModelKind.EMBEDDING).prefetch_related("files")
        ),
    )


def sample_targets(*, generation: Generation, user: AuthUser) -> list[ModelVersion]:
    """The versions that made ``generation`` and that ``user`` owns (may get it as sample)."""
    used = [generation.base_version_id, *(r.version_id for r in generation.resources.all())]
    ids = {pk for pk in used if pk is not None}
    return list(ModelVersion.objects.select_related("model").filter(pk__in=ids, model__owner=user))


def resources_of(generation: Generation, kind: str) -> list[GenerationResource]:
    return [r for r in generation.resources.all() if r.kind == kind]


def loras_of(generation: Generation) -> list[GenerationResource]:
    return resources_of(generation, ResourceKind.LORA)


def embeddings_of(generation: Generation) -> list[GenerationResource]:
    return resources_of(generation, ResourceKind.EMBEDDING)
