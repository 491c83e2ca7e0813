"""Reads the server-rendered pages need beyond :mod:`registry.selectors`.

Every query here applies the same visibility rules as the selectors it builds on; the views
only call these functions and render.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet, Subquery

from registry.models import (
    Dataset,
    DatasetVersion,
    Lineage,
    Model,
    ModelFile,
    ModelVersion,
    SampleImage,
    VersionStatus,
)
from registry.selectors import (
    lineage_children,
    listed_models,
    search_models,
    visible_datasets,
    visible_models,
    visible_versions,
)

User = AuthUser | AnonymousUser

SORTS = {
    "newest": ("-created_at", "-pk"),
    "downloads": ("-download_count", "-created_at", "-pk"),
    "rating": ("-rating_avg", "-rating_count", "-created_at", "-pk"),
}
DEFAULT_SORT = "newest"


@dataclass(frozen=True)
class ModelFilters:
    """What the browse page was asked for; empty strings mean "any"."""

    q: str = ""
    kind: str = ""
    base_model: str = ""
    tag: str = ""
    sort: str = DEFAULT_SORT


def _published_versions() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(model=OuterRef("pk"), status=VersionStatus.PUBLISHED)


def _search(qs: QuerySet[Model], q: str) -> QuerySet[Model]:
    return search_models(qs, q)


def with_card_fields(qs: QuerySet[Model]) -> QuerySet[Model]:
    """What a model card shows: owner, tags, the newest published version's base model and
    its first sample image (``latest_base_model``, ``cover_image``), in a fixed query count.
    """
    latest = _published_versions().order_by("-published_at", "-pk")
    cover = SampleImage.objects.filter(
        version__model=OuterRef("pk"), version__status=VersionStatus.PUBLISHED
    ).order_by("-version__published_at", "created_at", "pk")
    return (
        qs.select_related("owner")
        .prefetch_related("tags")
        .annotate(
            latest_base_model=Subquery(latest.values("base_model")[:1]),
            cover_image=Subquery(cover.values("image")[:1]),
        )
    )


def browse_models(filters: ModelFilters) -> QuerySet[Model]:
    """Listed models (public, not removed, with a published version), filtered and sorted.

    Each model carries the card fields of :func:`with_card_fields`.
    """
    qs = with_card_fields(listed_models())
    if filters.kind:
        qs = qs.filter(kind=filters.kind)
    if filters.base_model:
        qs = qs.filter(Exists(_published_versions().filter(base_model=filters.base_model)))
    if filters.tag:
        qs = qs.filter(tags__name=filters.tag.strip().lower())
    if filters.q.strip():
        qs = _search(qs, filters.q.strip())
    return qs.order_by(*SORTS.get(filters.sort, SORTS[DEFAULT_SORT]))


def model_for_page(model_id: int, user: User) -> Model | None:
    """The model if ``user`` may open it (unlisted by link, private only for its owner)."""
    return (
        visible_models(user)
        .select_related("owner")
        .prefetch_related("tags")
        .filter(pk=model_id)
        .first()
    )


def model_versions_for_page(model: Model, user: User) -> list[ModelVersion]:
    """The versions ``user`` may see, newest first: published ones, and drafts for the owner."""
    return list(visible_versions(user).filter(model=model).order_by("-created_at", "-pk"))


def version_detail(version_id: int, user: User) -> ModelVersion | None:
    """One visible version with its files (and their blobs) and sample images."""
    return (
        visible_versions(user)
        .prefetch_related(
            Prefetch("files", queryset=ModelFile.objects.select_related("blob")),
            "images",
        )
        .filter(pk=version_id)
        .first()
    )


@dataclass(frozen=True)
class LineageLink:
    """One edge of the lineage graph as a page shows it."""

    relation: str
    label: str
    model: Model | None = None
    version: ModelVersion | None = None
    dataset: Dataset | None = None
    dataset_version: DatasetVersion | None = None


def lineage_for_page(
    version: ModelVersion, user: User
) -> tuple[list[LineageLink], list[LineageLink]]:
    """What ``version`` derives from and what derives from it, hiding what ``user`` can't see."""
    visible_version_ids = set(
        visible_versions(user)
        .filter(
            Q(pk__in=Lineage.objects.filter(child=version).values("parent_version"))
            | Q(pk__in=Lineage.objects.filter(parent_version=version).values("child"))
        )
        .values_list("pk", flat=True)
    )
    visible_dataset_ids = set(
        visible_datasets(user)
        .filter(versions__derived_versions__child=version)
        .values_list("pk", flat=True)
    )
    parents: list[LineageLink] = []
    for edge in version.parents.select_related(
        "parent_version__model__owner", "parent_dataset__dataset__owner"
    ):
        label = edge.get_relation_display()
        if edge.parent_version is not None:
            if edge.parent_version_id in visible_version_ids:
                parents.append(
                    LineageLink(
                        relation=edge.relation,
                        label=label,
                        model=edge.parent_version.model,
                        version=edge.parent_version,
                    )
                )
        elif edge.parent_dataset is not None:
            if edge.parent_dataset.dataset_id in visible_dataset_ids:
                parents.append(
                    LineageLink(
                        relation=edge.relation,
                        label=label,
                        dataset=edge.parent_dataset.dataset,
                        dataset_version=edge.parent_dataset,
                    )
                )
    children = [
        LineageLink(
            relation=edge.relation,
            label=edge.get_relation_display(),
            model=edge.child.model,
            version=edge.child,
        )
        for edge in lineage_children(version, user).select_related("child__model__owner")
        if edge.child_id in visible_version_ids
    ]
    return parents, children


def listed_datasets() -> QuerySet[Dataset]:
    """Datasets on the public list: public visibility, not removed, with a version."""
    return (
        Dataset.objects.listed()
        .select_related("owner")
        .prefetch_related("tags")
        .annotate(
            image_count=Subquery(
                DatasetVersion.objects.filter(dataset=OuterRef("pk"))
                .order_by("-created_at", "-pk")
                .values("image_count")[:1]
            )
        )
        .order_by("-created_at", "-pk")
    )


def dataset_for_page(dataset_id: int, user: User) -> Dataset | None:
    return (
        visible_datasets(user)
        .prefetch_related(
            "tags",
            Prefetch(
                "versions",
                queryset=DatasetVersion.objects.select_related("blob")
                .prefetch_related("previews")
                .order_by("-created_at", "-pk"),
            ),
        )
        .filter(pk=dataset_id)
        .first()
    )


def manifest_stats(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
    """The aggregate facts of a manifest: numbers, flags and its hash, never a string that
    could name a file or a folder, never the per-image entries."""
    stats: list[tuple[str, Any]] = []
    for key, value in sorted(manifest.items()):
        if not isinstance(key, str) or len(key) > 64 or any(c in key for c in "/\\."):
            continue
        is_hash = key == "manifest_hash" and isinstance(value, str) and len(value) == 64
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_hash or is_number or isinstance(value, bool):
            stats.append((key.replace("_", " "), value))
    return stats


@dataclass
class CreatorProfile:
    creator: AuthUser
    models: list[Model] = field(default_factory=list)
    datasets: list[Dataset] = field(default_factory=list)
    is_self: bool = False


def creator_profile(username: str, user: User) -> CreatorProfile | None:
    """A creator's listed models and datasets; the creator themself also sees the rest."""
    creator = get_user_model().objects.filter(username=username, is_active=True).first()
    if creator is None:
        return None
    is_self = bool(user.is_authenticated and user.pk == creator.pk)
    if is_self:
        models = list(
            with_card_fields(Model.objects.filter(owner=creator, is_removed=False)).order_by(
                "-created_at", "-pk"
            )
        )
        datasets = list(
            Dataset.objects.filter(owner=creator, is_removed=False)
            .select_related("owner")
            .order_by("-created_at", "-pk")
        )
    else:
        models = list(browse_models(ModelFilters()).filter(owner=creator))
        datasets = list(listed_datasets().filter(owner=creator))
    return CreatorProfile(creator=creator, models=models, datasets=datasets, is_self=is_self)
