"""Model versions and their files: who may see which, a version with its files, images and
lineage, lookups by hash, and the lineage graph."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection
from django.db.models import Prefetch, Q, QuerySet

from registry.models import (
    Dataset,
    DatasetVersion,
    Lineage,
    Model,
    ModelFile,
    ModelVersion,
)
from registry.selectors.common import NEWEST, User
from registry.selectors.datasets import visible_datasets


def visible_versions(user: User) -> QuerySet[ModelVersion]:
    """Versions the user may see (``ModelVersionQuerySet.visible_to``), with their model."""
    return ModelVersion.objects.select_related("model", "model__owner").visible_to(user)


def model_versions(*, model: Model, user: User) -> QuerySet[ModelVersion]:
    """The versions of ``model`` the user may see, newest first, with their files."""
    return (
        visible_versions(user)
        .filter(model=model)
        .prefetch_related(Prefetch("files", queryset=ModelFile.objects.select_related("blob")))
        .order_by(*NEWEST)
    )


def version_detail(*, version_id: int, user: User) -> ModelVersion | None:
    """A version with files, images and lineage both ways, limited to what the user may see.

    Parents and children the user may not see are left out (``visible_parents`` and
    ``visible_children``).
    """
    parents = Lineage.objects.filter(
        Q(parent_version__in=visible_versions(user).values("pk"))
        | Q(parent_dataset__dataset__in=visible_datasets(user).values("pk"))
    ).select_related(
        "parent_version",
        "parent_version__model",
        "parent_version__model__owner",
        "parent_dataset",
        "parent_dataset__dataset",
        "parent_dataset__dataset__owner",
    )
    children = Lineage.objects.filter(child__in=visible_versions(user).values("pk")).select_related(
        "child", "child__model", "child__model__owner"
    )
    return (
        visible_versions(user)
        .prefetch_related(
            Prefetch("files", queryset=ModelFile.objects.select_related("blob")),
            "images",
            Prefetch("parents", queryset=parents.order_by("pk"), to_attr="visible_parents"),
            Prefetch("children", queryset=children.order_by("pk"), to_attr="visible_children"),
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


def lineage_links(version: ModelVersion) -> tuple[list[LineageLink], list[LineageLink]]:
    """What a version loaded by :func:`version_detail` derives from and what derives from it
    (only what the viewer may see), as links for a page. No query."""
    parents: list[LineageLink] = []
    for edge in version.visible_parents:  # type: ignore[attr-defined]
        label = edge.get_relation_display()
        if edge.parent_version is not None:
            parents.append(
                LineageLink(
                    relation=edge.relation,
                    label=label,
                    model=edge.parent_version.model,
                    version=edge.parent_version,
                )
            )
        elif edge.parent_dataset is not None:
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
        for edge in version.visible_children  # type: ignore[attr-defined]
    ]
    return parents, children


def files_by_hash(hash_value: str) -> QuerySet[ModelFile]:
    """Files whose bytes match any stored hash type, case-insensitively."""
    h = hash_value.strip().lower()
    if not h or len(h) > 64:
        return ModelFile.objects.none()
    match = (
        Q(blob__sha256=h)
        | Q(blob__autov1=h)
        | Q(blob__autov2=h)
        | Q(blob__crc32=h)
        | Q(blob__blake3=h)
        | Q(blob__autov3=h)
    )
    if len(h) == 12:  # AutoV3 as Civitai shows it: the first 12 digits
        match |= Q(blob__autov3__startswith=h)
    return ModelFile.objects.filter(match).select_related("blob", "version", "version__model")


def visible_files_by_hash(*, hash_value: str, user: User) -> QuerySet[ModelFile]:
    """Files matching a hash of any type that sit in versions the user may see."""
    return (
        files_by_hash(hash_value)
        .filter(version__in=visible_versions(user).values("pk"))
        .select_related("version__model__owner")
        .order_by("-version__published_at", "pk")
    )


# Every model version upstream of one, at any depth. UNION (not UNION ALL) drops a row already
# found, so a cycle in the table ends the recursion instead of looping (PostgreSQL and SQLite).
_ANCESTOR_IDS_SQL = """
WITH RECURSIVE ancestor(id) AS (
    SELECT parent_version_id FROM registry_lineage
        WHERE child_id = %s AND parent_version_id IS NOT NULL
    UNION
    SELECT l.parent_version_id FROM registry_lineage l JOIN ancestor a ON l.child_id = a.id
        WHERE l.parent_version_id IS NOT NULL
)
SELECT id FROM ancestor
"""


def lineage_ancestor_version_ids(version_id: int) -> set[int]:
    """The ids of every model version ``version_id`` derives from, however deep (one
    recursive query, no depth limit, safe against cycles; the version itself only when it
    lies on a cycle)."""
    with connection.cursor() as cursor:
        cursor.execute(_ANCESTOR_IDS_SQL, [version_id])
        return {int(row[0]) for row in cursor.fetchall()}


def lineage_links_upstream(version_id: int) -> list[Lineage]:
    """Every lineage row of the version and of its ancestors, with parents loaded."""
    children = lineage_ancestor_version_ids(version_id) | {version_id}
    return list(
        Lineage.objects.filter(child_id__in=children)
        .select_related("parent_version__model", "parent_dataset__dataset")
        .order_by("pk")
    )
