"""Django admin for the registry: staff look at everything and moderate through services.

Catalogue rows are created by the upload and catalogue services, never here, and most
fields are read-only; staff act with the actions (unpublish a version, mark a model or
dataset removed, restore it), which call :mod:`registry.services`.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest

from core.errors import ApplicationError
from registry.models import (
    Blob,
    Dataset,
    DatasetVersion,
    Lineage,
    Model,
    ModelFile,
    ModelVersion,
    SampleImage,
    Tag,
    Upload,
    VersionStatus,
)
from registry.services.catalog import version_unpublish
from registry.services.moderation import dataset_set_removed, model_set_removed


class ServiceOwnedAdmin(admin.ModelAdmin):
    """Rows that only services create and change: staff view them and use the actions."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyAdmin(ServiceOwnedAdmin):
    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ModelFileInline(ReadOnlyInline):
    model = ModelFile
    fields = ("path", "format", "is_primary", "detected_kind", "architecture", "blob")


class ModelVersionInline(ReadOnlyInline):
    model = ModelVersion
    fields = ("name", "status", "base_model", "license_code", "published_at", "download_count")


class DatasetVersionInline(ReadOnlyInline):
    model = DatasetVersion
    fields = ("name", "image_count", "license_code", "manifest_hash", "created_at")


def _staff(request: HttpRequest) -> User:
    """The signed-in staff member acting (the admin only lets staff in)."""
    user = request.user
    if isinstance(user, AnonymousUser) or not user.is_staff:
        raise PermissionDenied
    return user


def _report(request: HttpRequest, done: int, what: str, failures: list[str]) -> None:
    if done:
        messages.success(request, f"{done} {what}.")
    for failure in failures:
        messages.error(request, failure)


@admin.register(Model)
class ModelAdmin(ServiceOwnedAdmin):
    list_display = (
        "name",
        "owner",
        "kind",
        "visibility",
        "is_removed",
        "download_count",
        "created_at",
    )
    list_filter = ("kind", "visibility", "is_removed")
    search_fields = ("name", "slug", "owner__username")
    list_select_related = ("owner",)
    readonly_fields = (
        "owner",
        "name",
        "slug",
        "kind",
        "description",
        "visibility",
        "is_removed",
        "download_count",
        "rating_avg",
        "rating_count",
        "created_at",
        "updated_at",
    )
    exclude = ("description_html", "tags")
    inlines = (ModelVersionInline,)
    actions = ("mark_removed", "restore")

    @admin.action(description="Mark removed (hide from everyone but the owner)")
    def mark_removed(self, request: HttpRequest, queryset: QuerySet[Model]) -> None:
        for model in queryset:
            model_set_removed(model=model, user=_staff(request), removed=True)
        _report(request, queryset.count(), "model(s) marked removed", [])

    @admin.action(description="Restore (undo removal)")
    def restore(self, request: HttpRequest, queryset: QuerySet[Model]) -> None:
        for model in queryset:
            model_set_removed(model=model, user=_staff(request), removed=False)
        _report(request, queryset.count(), "model(s) restored", [])


@admin.register(ModelVersion)
class ModelVersionAdmin(ServiceOwnedAdmin):
    list_display = ("__str__", "status", "base_model", "license_code", "published_at")
    list_filter = ("status", "base_model", "layout")
    search_fields = ("name", "model__name", "model__owner__username")
    list_select_related = ("model",)
    readonly_fields = (
        "model",
        "name",
        "description",
        "base_model",
        "trigger_words",
        "layout",
        "status",
        "license_code",
        "training_metadata",
        "download_count",
        "published_at",
        "created_at",
    )
    exclude = ("description_html",)
    inlines = (ModelFileInline,)
    actions = ("unpublish",)

    @admin.action(description="Unpublish")
    def unpublish(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        done, failures = 0, []
        for version in queryset.filter(status=VersionStatus.PUBLISHED).select_related("model"):
            try:
                version_unpublish(version=version, user=_staff(request))
                done += 1
            except ApplicationError as err:
                failures.append(f"{version}: {err.message}")
        _report(request, done, "version(s) unpublished", failures)


@admin.register(ModelFile)
class ModelFileAdmin(ReadOnlyAdmin):
    list_display = ("path", "version", "format", "detected_kind", "architecture", "blob")
    list_filter = ("format", "detected_kind", "architecture")
    search_fields = ("path", "blob__sha256", "blob__autov2", "version__model__name")
    list_select_related = ("version", "version__model", "blob")


@admin.register(Blob)
class BlobAdmin(ReadOnlyAdmin):
    list_display = ("sha256", "size", "autov2", "crc32", "created_at")
    search_fields = ("sha256", "autov1", "autov2", "autov3", "crc32", "blake3")


@admin.register(Dataset)
class DatasetAdmin(ServiceOwnedAdmin):
    list_display = ("name", "owner", "kind", "visibility", "is_removed", "created_at")
    list_filter = ("kind", "visibility", "is_removed")
    search_fields = ("name", "slug", "owner__username")
    list_select_related = ("owner",)
    readonly_fields = (
        "owner",
        "name",
        "slug",
        "kind",
        "description",
        "visibility",
        "is_removed",
        "created_at",
    )
    exclude = ("description_html", "tags")
    inlines = (DatasetVersionInline,)
    actions = ("mark_removed", "restore")

    @admin.action(description="Mark removed (hide from everyone but the owner)")
    def mark_removed(self, request: HttpRequest, queryset: QuerySet[Dataset]) -> None:
        for dataset in queryset:
            dataset_set_removed(dataset=dataset, user=_staff(request), removed=True)
        _report(request, queryset.count(), "dataset(s) marked removed", [])

    @admin.action(description="Restore (undo removal)")
    def restore(self, request: HttpRequest, queryset: QuerySet[Dataset]) -> None:
        for dataset in queryset:
            dataset_set_removed(dataset=dataset, user=_staff(request), removed=False)
        _report(request, queryset.count(), "dataset(s) restored", [])


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "image_count", "license_code", "created_at")
    search_fields = ("name", "dataset__name", "manifest_hash")
    list_select_related = ("dataset",)
    exclude = ("manifest",)  # a private manifest stays out of the admin too


@admin.register(Lineage)
class LineageAdmin(ReadOnlyAdmin):
    list_display = ("child", "relation", "parent_version", "parent_dataset")
    list_filter = ("relation",)
    list_select_related = ("child__model", "parent_version__model", "parent_dataset__dataset")


@admin.register(SampleImage)
class SampleImageAdmin(admin.ModelAdmin):
    """Staff may delete an inappropriate sample image."""

    list_display = ("pk", "version", "created_at")
    list_select_related = ("version__model",)
    readonly_fields = ("version", "image", "prompt", "parameters", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Upload)
class UploadAdmin(ReadOnlyAdmin):
    list_display = ("filename", "user", "size", "offset", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("filename", "user__username", "blob__sha256")
    list_select_related = ("user",)


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    search_fields = ("name",)
