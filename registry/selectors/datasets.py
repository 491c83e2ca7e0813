"""Datasets: who may open which, the one filter-and-sort of every dataset listing (API and
pages), a dataset with its versions, one dataset version, a manifest's public facts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Prefetch, Q, QuerySet

from registry.models import Dataset, DatasetVersion
from registry.selectors.common import NEWEST, User

DATASET_ORDERINGS: dict[str, tuple[str, ...]] = {
    "newest": NEWEST,
    "name": ("name", "pk"),
}
MAX_FILTER_TAGS = 10


@dataclass(frozen=True)
class DatasetFilters:
    """What a dataset listing was asked for, already parsed (:mod:`registry.filters`).
    Empty means "any"; ``sort`` empty means newest."""

    q: str = ""
    kind: str = ""
    tags: tuple[str, ...] = ()
    creator: str = ""
    sort: str = ""


def visible_datasets(user: User) -> QuerySet[Dataset]:
    """Datasets the user may open (``DatasetQuerySet.visible_to``), with their owner."""
    return Dataset.objects.select_related("owner").visible_to(user)


def listed_datasets() -> QuerySet[Dataset]:
    """Datasets that appear in browse (``DatasetQuerySet.listed``)."""
    return Dataset.objects.listed()


def own_datasets(user: User) -> QuerySet[Dataset]:
    """Everything the user owns: empty, private, unlisted and removed datasets included."""
    if not user.is_authenticated:
        return Dataset.objects.none()
    return Dataset.objects.filter(owner_id=user.pk)


def with_dataset_data(qs: QuerySet[Dataset]) -> QuerySet[Dataset]:
    """Owner, tags and versions newest first (``shown_versions``), in a constant number of
    queries whatever the page size."""
    versions = DatasetVersion.objects.select_related("blob").order_by(*NEWEST)
    return qs.select_related("owner").prefetch_related(
        "tags", Prefetch("versions", queryset=versions, to_attr="shown_versions")
    )


def dataset_list(*, user: User, filters: DatasetFilters, mine: bool = False) -> QuerySet[Dataset]:
    """Listed datasets (or, with ``mine``, the user's own), filtered, searched and sorted."""
    qs = own_datasets(user) if mine else listed_datasets()
    if filters.kind:
        qs = qs.filter(kind=filters.kind)
    if filters.creator:
        qs = qs.filter(owner__username__iexact=filters.creator)
    for tag in filters.tags[:MAX_FILTER_TAGS]:
        qs = qs.filter(tags__name=tag)
    q = filters.q.strip()
    if q:
        qs = qs.filter(Q(name__icontains=q) | Q(description__icontains=q))
    ordering = DATASET_ORDERINGS.get(filters.sort, DATASET_ORDERINGS["newest"])
    return with_dataset_data(qs.order_by(*ordering))


def dataset_detail(*, dataset_id: int, user: User) -> Dataset | None:
    """A dataset the user may open with its versions newest first (``shown_versions``, each
    with its previews)."""
    versions = (
        DatasetVersion.objects.select_related("blob").prefetch_related("previews").order_by(*NEWEST)
    )
    return (
        visible_datasets(user)
        .prefetch_related("tags", Prefetch("versions", queryset=versions, to_attr="shown_versions"))
        .filter(pk=dataset_id)
        .first()
    )


def dataset_version_detail(*, dataset_version_id: int, user: User) -> DatasetVersion | None:
    """A version of a dataset the user may open, with its dataset, owner and blob."""
    return (
        DatasetVersion.objects.select_related("dataset", "dataset__owner", "blob")
        .filter(pk=dataset_version_id, dataset__in=visible_datasets(user).values("pk"))
        .first()
    )


def dataset_version_for(dataset_version_id: int, user: User) -> DatasetVersion | None:
    """:func:`dataset_version_detail` with positional arguments (the download view's call)."""
    return dataset_version_detail(dataset_version_id=dataset_version_id, user=user)


def manifest_stats(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
    """The aggregate facts of a manifest: numbers, flags and its hash, never a string that
    could name a file or a folder, never the per-image entries."""
    stats: list[tuple[str, Any]] = []
    for key, value in sorted(manifest.items()):
        if not isinstance(key, str) or len(key) > 64 or any(c in key for c in "/\\."):
            continue
        is_hash = key == "manifest_hash" and isinstance(value, str) and len(value) == 64
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if key == "median_short_side" and is_number:
            value = _rounded_side(value)
        if is_hash or is_number or isinstance(value, bool):
            stats.append((key.replace("_", " "), value))
    return stats


def _rounded_side(value: float) -> str:
    """The manifest's median short side is rounded to 64 px (so that it pins no image's
    size): 0 means the median is 32 px or less, not that the images have no size."""
    return "32 px or less" if value < 32 else f"about {value:g} px"
