"""Reads behind the compatible endpoints: repositories, revisions and Civitai listings.

Visibility comes from :mod:`registry.selectors` and :mod:`registry.access`; nothing here
decides who may see what, it only shapes the queries the Hugging Face and Civitai routes need
(and owns their ``select_related`` / ``prefetch_related``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.db.models import Prefetch, Q, QuerySet

from registry.models import FileLayout, Model, ModelFile, ModelVersion, VersionStatus
from registry.selectors.models import listed_models, visible_models
from registry.selectors.versions import files_by_hash, visible_versions

User = AuthUser | AnonymousUser

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
MAIN_REVISION = "main"


def version_commit(version: ModelVersion) -> str:
    """The 40-hex commit id a version answers to on the Hugging Face routes (stable per pk)."""
    return hashlib.sha1(f"atelier-version:{version.pk}".encode()).hexdigest()


def _files_prefetch() -> Prefetch:
    return Prefetch("files", queryset=ModelFile.objects.select_related("blob"))


# Hugging Face ---------------------------------------------------------------------------------


def hf_model(*, owner: str, slug: str) -> Model | None:
    """The model at ``owner/slug`` whoever may see it; callers check visibility."""
    return (
        Model.objects.select_related("owner")
        .prefetch_related("tags")
        .filter(owner__username__iexact=owner, slug=slug)
        .first()
    )


def hf_versions(*, model: Model, user: User) -> list[ModelVersion]:
    """The versions of ``model`` the user may see, newest first, with files and blobs."""
    return list(
        visible_versions(user)
        .filter(model=model)
        .prefetch_related(_files_prefetch())
        .order_by("-created_at", "-pk")
    )


def hf_main_version(versions: Sequence[ModelVersion]) -> ModelVersion | None:
    """What ``main`` means: the newest published version, a diffusers folder preferred.

    The owner, who also sees drafts, gets the newest draft while nothing is published.
    """
    pool = [v for v in versions if v.is_published] or list(versions)
    if not pool:
        return None

    def newest(v: ModelVersion) -> tuple[bool, float, int]:
        moment = v.published_at or v.created_at
        return (v.layout == FileLayout.DIFFUSERS, moment.timestamp(), v.pk)

    return max(pool, key=newest)


def hf_revision(versions: Sequence[ModelVersion], revision: str) -> ModelVersion | None:
    """The version a revision names: a commit id, a version name, or ``main``."""
    if COMMIT_RE.match(revision):
        for version in versions:
            if version_commit(version) == revision:
                return version
        return None
    for version in versions:
        if version.name == revision:
            return version
    if revision == MAIN_REVISION:
        return hf_main_version(versions)
    return None


# Civitai --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CivitaiModelFilters:
    query: str = ""
    tag: str = ""
    username: str = ""
    kinds: tuple[str, ...] | None = None  # None: any kind; (): no kind at all
    families: tuple[str, ...] | None = None
    nsfw: bool | None = None
    order: tuple[str, ...] = ("-rating_avg", "-rating_count", "-download_count", "-pk")


NSFW_TAG = "nsfw"


def _versions_prefetch(user: User) -> Prefetch:
    """A model's published versions only, whoever asks (the owner too), as on Civitai."""
    return Prefetch(
        "versions",
        queryset=visible_versions(user)
        .filter(status=VersionStatus.PUBLISHED)
        .select_related("model")
        .prefetch_related(_files_prefetch(), "images")
        .order_by("-created_at", "-pk"),
        to_attr="civitai_versions",
    )


def _with_versions(qs: QuerySet[Model], user: User) -> QuerySet[Model]:
    return qs.select_related("owner").prefetch_related("tags", _versions_prefetch(user))


def civitai_models(*, user: User, filters: CivitaiModelFilters) -> QuerySet[Model]:
    """Listed models (public, with a published version) matching Civitai's list filters."""
    qs = listed_models(user)
    if filters.query:
        qs = qs.filter(
            Q(name__icontains=filters.query)
            | Q(tags__name__iexact=filters.query)
            | Q(owner__username__iexact=filters.query)
        )
    if filters.tag:
        qs = qs.filter(tags__name__iexact=filters.tag)
    if filters.username:
        qs = qs.filter(owner__username__iexact=filters.username)
    if filters.kinds is not None:
        qs = qs.filter(kind__in=filters.kinds)
    if filters.families is not None:
        qs = qs.filter(
            versions__base_model__in=filters.families, versions__status=VersionStatus.PUBLISHED
        )
    if filters.nsfw is False:  # true (or no value) includes mature content, as on Civitai
        qs = qs.exclude(tags__name=NSFW_TAG)
    # The filters above join to-many relations: keep one row per model before ordering.
    ids = qs.values("pk")
    return _with_versions(Model.objects.filter(pk__in=ids), user).order_by(*filters.order)


def civitai_models_after(
    models: QuerySet[Model], *, order: Sequence[str], values: Sequence[object]
) -> QuerySet[Model]:
    """The models after the one whose ``order`` fields hold ``values`` (a keyset cursor).

    Every field of ``order`` is descending (``-name``) and the last one is unique (``-pk``).
    """
    fields = [name.removeprefix("-") for name in order]
    after = Q()
    for i, field_name in enumerate(fields):
        step = Q(**{f"{field_name}__lt": values[i]})
        for previous, value in zip(fields[:i], values[:i], strict=True):
            step &= Q(**{previous: value})
        after |= step
    return models.filter(after)


def civitai_versions_by_sha256(*, user: User, hashes: Sequence[str]) -> list[ModelVersion]:
    """Published versions the user may see holding a file with one of those SHA-256 hashes."""
    version_ids = ModelFile.objects.filter(blob_id__in=[h.lower() for h in hashes]).values_list(
        "version_id", flat=True
    )
    return civitai_versions(user=user, version_ids=list(version_ids))


def civitai_versions(*, user: User, version_ids: Sequence[int]) -> list[ModelVersion]:
    """Published versions the user may see among ``version_ids`` (ids or a subquery)."""
    return list(
        visible_versions(user)
        .filter(pk__in=version_ids, status=VersionStatus.PUBLISHED)
        .select_related("model", "model__owner")
        .prefetch_related(_files_prefetch(), "images", "model__tags")
        .order_by("pk")
    )


def civitai_model(*, user: User, model_id: int) -> Model | None:
    return _with_versions(visible_models(user).filter(pk=model_id), user).first()


def civitai_version(*, user: User, version_id: int) -> ModelVersion | None:
    return (
        visible_versions(user)
        .select_related("model", "model__owner")
        .prefetch_related(_files_prefetch(), "images", "model__tags")
        .filter(pk=version_id)
        .first()
    )


def civitai_version_by_hash(*, user: User, hash_value: str) -> ModelVersion | None:
    """The earliest version the user may see holding a file with that hash (any hash type)."""
    version_ids = files_by_hash(hash_value).values("version_id")
    match = (
        visible_versions(user)
        .filter(pk__in=version_ids)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
        .first()
    )
    return None if match is None else civitai_version(user=user, version_id=match)
