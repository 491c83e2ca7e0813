"""Every read beyond a plain get: visibility, listing, search, lineage."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Prefetch, Q, QuerySet

from registry.models import (
    Dataset,
    DatasetVersion,
    Lineage,
    Model,
    ModelFile,
    ModelVersion,
    VersionStatus,
    Visibility,
)

User = AbstractBaseUser | AnonymousUser


def visible_models(user: User) -> QuerySet[Model]:
    """Models the user may open: listed ones, plus unlisted by link, plus their own."""
    qs = Model.objects.all()
    if user.is_authenticated and user.is_staff:
        return qs
    public = Q(is_removed=False) & ~Q(visibility=Visibility.PRIVATE)
    if user.is_authenticated:
        return qs.filter(public | Q(owner=user))
    return qs.filter(public)


def listed_models(user: User) -> QuerySet[Model]:
    """Models that appear in browse and search: public, with a published version."""
    qs = Model.objects.filter(
        is_removed=False,
        visibility=Visibility.PUBLIC,
        versions__status=VersionStatus.PUBLISHED,
    ).distinct()
    return qs


def visible_versions(user: User) -> QuerySet[ModelVersion]:
    qs = ModelVersion.objects.select_related("model", "model__owner")
    if user.is_authenticated and user.is_staff:
        return qs
    public = (
        Q(status=VersionStatus.PUBLISHED)
        & Q(model__is_removed=False)
        & ~Q(model__visibility=Visibility.PRIVATE)
    )
    if user.is_authenticated:
        return qs.filter(public | Q(model__owner=user))
    return qs.filter(public)


def version_with_files(version_id: int, user: User) -> ModelVersion | None:
    return (
        visible_versions(user)
        .prefetch_related(
            Prefetch("files", queryset=ModelFile.objects.select_related("blob")), "images"
        )
        .filter(pk=version_id)
        .first()
    )


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


def lineage_parents(version: ModelVersion) -> QuerySet[Lineage]:
    return version.parents.select_related(
        "parent_version", "parent_version__model", "parent_dataset", "parent_dataset__dataset"
    )


def lineage_children(version: ModelVersion, user: User) -> QuerySet[Lineage]:
    return Lineage.objects.filter(
        parent_version=version, child__in=visible_versions(user)
    ).select_related("child", "child__model")


def visible_datasets(user: User) -> QuerySet[Dataset]:
    qs = Dataset.objects.select_related("owner")
    if user.is_authenticated and user.is_staff:
        return qs
    public = Q(is_removed=False) & ~Q(visibility=Visibility.PRIVATE)
    if user.is_authenticated:
        return qs.filter(public | Q(owner=user))
    return qs.filter(public)


def dataset_version_for(dataset_version_id: int, user: User) -> DatasetVersion | None:
    return (
        DatasetVersion.objects.select_related("dataset", "blob")
        .filter(pk=dataset_version_id, dataset__in=visible_datasets(user))
        .first()
    )
