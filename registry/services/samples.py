"""A version's sample images: rendered on the worker when it is published, and ordered,
added and removed by its owner.

Rendering needs the generation code, which lives above the registry (the studio); the registry
only defines the hook, as it does for access: the studio registers a :class:`SampleRenderer`
when its app loads (``studio.apps``). :func:`version_samples_request` is called by
``version_publish``; after the commit, the task ``registry.tasks.version_samples_render`` runs
:func:`version_samples_render` on the worker, which asks the renderer for images and stores
them. A version whose images cannot be made (no base model to pair a LoRA with, a file that
does not load) stays published with no rendered samples, and the reason is logged.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Max

from core.errors import AccessDeniedError, ApplicationError, NotFoundError
from core.tasks import enqueue_on_commit
from registry.models import ModelVersion, SampleImage, SampleRole, SampleSource
from registry.services.images import sample_image_add

log = logging.getLogger(__name__)

RENDER_TASK = "registry.tasks.version_samples_render"


@dataclass(frozen=True)
class RenderedSample:
    """One image the renderer made: a PNG, its prompt and parameters, and for a LoRA's pair
    its ``role`` (``base`` or ``adapted``) and the ``pair`` number shared by both halves."""

    png: bytes
    prompt: str
    parameters: dict[str, Any] = field(default_factory=dict)
    role: str = SampleRole.SINGLE
    pair: int | None = None


class SampleRenderError(ApplicationError):
    """The version's samples cannot be rendered (no base, a file that does not load)."""


@dataclass(frozen=True)
class SampleRenderer:
    """What the studio plugs in: ``render(version)`` makes the images (raises
    :class:`SampleRenderError` or ``ApplicationError`` with the reason), ``queue()`` names the
    Celery queue of the workers that can (None: the default queue)."""

    render: Callable[[ModelVersion], Sequence[RenderedSample]]
    queue: Callable[[], str | None]


_renderer: list[SampleRenderer] = []


def sample_renderer_register(*, renderer: SampleRenderer) -> None:
    """Install the renderer (the last registered wins: an app's ``ready`` may run twice)."""
    _renderer[:] = [renderer]


def sample_renderer() -> SampleRenderer | None:
    return _renderer[0] if _renderer else None


def version_samples_request(*, version: ModelVersion) -> None:
    """Queue the rendering of ``version``'s samples once the transaction commits (called by
    ``version_publish``). Nothing is queued without a renderer, when they exist already, or
    with ``ATELIER_SAMPLES_ON_PUBLISH`` off."""
    renderer = sample_renderer()
    if renderer is None or not getattr(settings, "ATELIER_SAMPLES_ON_PUBLISH", True):
        return
    if SampleImage.objects.filter(version=version, source=SampleSource.RENDERED).exists():
        return
    enqueue_on_commit(RENDER_TASK, args=[version.pk], queue=renderer.queue())


def _next_position(version: ModelVersion) -> int:
    top = SampleImage.objects.filter(version=version).aggregate(top=Max("position"))["top"]
    return 0 if top is None else top + 1


def version_samples_render(*, version_id: int) -> list[SampleImage]:
    """Render and store ``version``'s samples (the task's body). Returns the new images; an
    empty list when there is nothing to do or the renderer refused (the reason is logged).
    Running it twice adds nothing (the rendered samples are there)."""
    version = ModelVersion.objects.select_related("model", "model__owner").filter(pk=version_id)
    found = version.first()
    renderer = sample_renderer()
    if found is None or not found.is_published or renderer is None:
        log.info("samples of version %s: nothing to render", version_id)
        return []
    if SampleImage.objects.filter(version=found, source=SampleSource.RENDERED).exists():
        return []
    try:
        rendered = list(renderer.render(found))
    except ApplicationError as err:
        log.warning(
            "samples of version %s (%s) not rendered: %s [%s]",
            found.pk,
            found,
            err.message,
            err.code,
        )
        return []
    except (OSError, RuntimeError, ValueError) as exc:  # a file the loaders choke on
        log.warning(
            "samples of version %s (%s) not rendered: %s: %s",
            found.pk,
            found,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return []
    return _store(found, rendered)


@transaction.atomic
def _store(version: ModelVersion, rendered: Sequence[RenderedSample]) -> list[SampleImage]:
    ModelVersion.objects.select_for_update().filter(pk=version.pk).first()
    if SampleImage.objects.filter(version=version, source=SampleSource.RENDERED).exists():
        return []  # another worker stored them first
    position = _next_position(version)
    bases: dict[int, SampleImage] = {}
    stored: list[SampleImage] = []
    for sample in rendered:  # a pair's base half comes before its adapted half
        image = SampleImage(
            version=version,
            prompt=sample.prompt,
            parameters=sample.parameters,
            position=position,
            source=SampleSource.RENDERED,
            role=sample.role,
            pair=bases.get(sample.pair)
            if sample.role == SampleRole.ADAPTED and sample.pair is not None
            else None,
        )
        image.image.save(f"{uuid.uuid4().hex}.png", ContentFile(sample.png), save=False)
        image.save()
        if sample.role == SampleRole.BASE and sample.pair is not None:
            bases[sample.pair] = image
        stored.append(image)
        position += 1
    log.info("samples of version %s: %d rendered", version.pk, len(stored))
    return stored


# --- the owner's changes --------------------------------------------------------------------

MAX_FILES_PER_REQUEST = 10


def sample_images_add(
    *, version: ModelVersion, user: User, files: Sequence[File], prompt: str = ""
) -> list[SampleImage]:
    """Add several files in the order given; the first refusal stops and names the file."""
    if len(files) > MAX_FILES_PER_REQUEST:
        raise ApplicationError(
            f"At most {MAX_FILES_PER_REQUEST} images at a time.", code="too_many_images"
        )
    added = []
    for upload in files:
        try:
            added.append(sample_image_add(version=version, user=user, image=upload, prompt=prompt))
        except ApplicationError as err:
            err.message = f"{upload.name}: {err.message}"  # same type and status, named
            raise
    return added


def _require_owner(user: User, version: ModelVersion) -> None:
    if not (user.is_authenticated and (user.pk == version.model.owner_id or user.is_staff)):
        raise AccessDeniedError("Only the owner can change the sample images.")


def sample_image_remove(*, image: SampleImage, user: User) -> None:
    """Remove one image (and the other half of its pair, which means nothing alone)."""
    _require_owner(user, image.version)
    with transaction.atomic():
        halves = SampleImage.objects.filter(pk=image.pk) | SampleImage.objects.filter(
            pair_id=image.pk
        )
        if image.pair_id is not None:
            halves = halves | SampleImage.objects.filter(pk=image.pair_id)
        doomed = list(halves.distinct())
        names = [i.image.name for i in doomed if i.image.name]
        SampleImage.objects.filter(pk__in=[i.pk for i in doomed]).delete()
    storage = image.image.storage
    for name in names:
        transaction.on_commit(functools.partial(storage.delete, name))


@transaction.atomic
def sample_images_order(
    *, version: ModelVersion, user: User, image_ids: Sequence[int]
) -> list[SampleImage]:
    """Put the version's images in the order of ``image_ids`` (every image, each once); the
    first is the cover. A pair stays together: its base half goes right before its other."""
    _require_owner(user, version)
    ModelVersion.objects.select_for_update().filter(pk=version.pk).first()
    images = {i.pk: i for i in SampleImage.objects.filter(version=version)}
    wanted = [int(i) for i in image_ids]
    shown = [pk for pk, i in images.items() if i.role != SampleRole.BASE]
    if sorted(wanted) != sorted(shown) and sorted(wanted) != sorted(images):
        raise ApplicationError(
            "image_ids: list every image of the version once.",
            code="bad_order",
            details={"field": "image_ids", "expected": sorted(shown)},
        )
    position = 0
    ordered: list[SampleImage] = []
    for pk in wanted:
        image = images[pk]
        if image.role == SampleRole.BASE:
            continue  # placed with its pair
        base = images.get(image.pair_id) if image.pair_id else None
        for item in (base, image):
            if item is None:
                continue
            item.position = position
            position += 1
            ordered.append(item)
    SampleImage.objects.bulk_update(ordered, ["position"])
    return ordered


def sample_image_move(*, image: SampleImage, user: User, offset: int) -> list[SampleImage]:
    """Move one image ``offset`` places (-1: one up, toward the cover; 1: one down)."""
    _require_owner(user, image.version)
    if image.role == SampleRole.BASE and hasattr(image, "paired_with"):
        image = image.paired_with
    ids = [
        i.pk
        for i in SampleImage.objects.filter(version=image.version).order_by("position", "pk")
        if i.role != SampleRole.BASE
    ]
    if image.pk not in ids:
        raise NotFoundError("No such image.")
    index = ids.index(image.pk)
    target = max(0, min(len(ids) - 1, index + offset))
    ids.insert(target, ids.pop(index))
    return sample_images_order(version=image.version, user=user, image_ids=ids)
