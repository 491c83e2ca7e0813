from django.contrib import admin

from studio.models import Generation, GenerationResource


class GenerationResourceInline(admin.TabularInline):
    model = GenerationResource
    extra = 0
    can_delete = False
    readonly_fields = (
        "kind",
        "version",
        "model_file",
        "position",
        "weight",
        "name",
        "display_name",
    )


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    """Read-only: generations change only through ``studio.services``."""

    list_display = (
        "id",
        "user",
        "base_name",
        "status",
        "steps",
        "width",
        "height",
        "device",
        "duration_ms",
        "is_public",
        "created_at",
    )
    list_filter = ("status", "is_public", "sampler", "device")
    search_fields = ("prompt", "user__username", "base_name")
    list_select_related = ("user",)
    inlines = [GenerationResourceInline]
    readonly_fields = [f.name for f in Generation._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
