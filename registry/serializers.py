"""Output serializers the registry's API views share. They render; they decide nothing.

Every relation they read is loaded by the selector that produced the object (see
:mod:`registry.selectors`), so rendering a page costs no query per item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils.html import strip_tags
from django.utils.text import Truncator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.validators import refuse_invisible_characters
from registry.models import Dataset, DatasetKind, DatasetVersion, Model, ModelFile, ModelVersion
from registry.services.catalog import MAX_TAGS

SUMMARY_CHARS = 280
STAT_KEY_MAX = 64
STAT_MAP_MAX = 64


def name_field(*, max_length: int, **kwargs: Any) -> serializers.CharField:
    """An input name, title or tag: no control or invisible characters (core.validators)."""
    return serializers.CharField(
        max_length=max_length, validators=[refuse_invisible_characters], **kwargs
    )


def tags_field(**kwargs: Any) -> serializers.ListField:
    """Input tags: at most ``MAX_TAGS``, each a name of at most 64 characters."""
    return serializers.ListField(child=name_field(max_length=64), max_length=MAX_TAGS, **kwargs)


def absolute_url(context: Mapping[str, Any], path: str) -> str:
    request = context.get("request")
    return request.build_absolute_uri(path) if request is not None else path


def media_url(context: Mapping[str, Any], name: str) -> str:
    return absolute_url(context, default_storage.url(name)) if name else ""


def summary_text(html: str) -> str:
    return Truncator(strip_tags(html).strip()).chars(SUMMARY_CHARS)


def _safe_stat_key(key: object) -> bool:
    text = str(key)
    return len(text) <= STAT_KEY_MAX and not any(c in text for c in "/\\.")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def aggregate_stats(manifest: dict[str, Any]) -> dict[str, Any]:
    """The aggregate facts of a dataset manifest, and nothing that could name a file.

    Numbers and booleans at the top level, and flat histograms (``{"512x512": 40}``) whose
    keys look nothing like file names. Lists (where per-file entries live) and strings are
    never shown.
    """
    stats: dict[str, Any] = {}
    for key, value in manifest.items():
        if not _safe_stat_key(key):
            continue
        if _is_number(value) or isinstance(value, bool):
            stats[str(key)] = value
        elif (
            isinstance(value, dict)
            and 0 < len(value) <= STAT_MAP_MAX
            and all(_safe_stat_key(k) and _is_number(v) for k, v in value.items())
        ):
            stats[str(key)] = {str(k): v for k, v in value.items()}
    return stats


class OwnerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class ModelRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    kind = serializers.CharField()
    visibility = serializers.CharField()
    owner = OwnerSerializer()


class VersionSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    base_model = serializers.CharField()
    layout = serializers.CharField()
    license_code = serializers.CharField()
    trigger_words = serializers.ListField(child=serializers.CharField())
    download_count = serializers.IntegerField()
    published_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class ModelListItemSerializer(serializers.Serializer):
    """A model as listings show it; expects ``shown_versions``, ``cover_image``,
    ``price_now`` and ``owned`` from :func:`registry.selectors.models.model_list` (or
    ``model_detail``): ``price`` is what the shown version costs now in credits (0: free, as
    the cards' "Free"), ``owned`` whether the caller bought it or shares its revenue (always
    false for anonymous callers), the same two facts the cards show."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    repo_id = serializers.SerializerMethodField()
    kind = serializers.CharField()
    visibility = serializers.CharField()
    is_removed = serializers.BooleanField()
    owner = OwnerSerializer()
    tags = serializers.SerializerMethodField()
    summary = serializers.SerializerMethodField()
    download_count = serializers.IntegerField()
    rating_avg = serializers.FloatField()
    rating_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    base_models = serializers.SerializerMethodField()
    latest_version = serializers.SerializerMethodField()
    cover_image_url = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    price = serializers.IntegerField(source="price_now", min_value=0)
    owned = serializers.BooleanField()

    def get_repo_id(self, obj: Model) -> str:
        return f"{obj.owner.username}/{obj.slug}"

    def get_tags(self, obj: Model) -> list[str]:
        return [tag.name for tag in obj.tags.all()]

    def get_summary(self, obj: Model) -> str:
        return summary_text(obj.description_html)

    def get_base_models(self, obj: Model) -> list[str]:
        return sorted({v.base_model for v in obj.shown_versions})  # type: ignore[attr-defined]

    @extend_schema_field(VersionSummarySerializer(allow_null=True))
    def get_latest_version(self, obj: Model) -> dict[str, Any] | None:
        versions = obj.shown_versions  # type: ignore[attr-defined]
        return VersionSummarySerializer(versions[0]).data if versions else None

    def get_cover_image_url(self, obj: Model) -> str:
        return media_url(self.context, getattr(obj, "cover_image", None) or "")

    def get_url(self, obj: Model) -> str:
        return absolute_url(self.context, reverse("registry:api-model-detail", args=[obj.pk]))


class ModelDetailSerializer(ModelListItemSerializer):
    description = serializers.CharField()
    description_html = serializers.CharField()
    versions = VersionSummarySerializer(many=True, source="shown_versions")


class HashesSerializer(serializers.Serializer):
    sha256 = serializers.CharField()
    autov1 = serializers.CharField()
    autov2 = serializers.CharField()
    autov3 = serializers.CharField()
    crc32 = serializers.CharField()
    blake3 = serializers.CharField()


class FileSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    path = serializers.CharField()
    filename = serializers.CharField()
    size = serializers.IntegerField(source="blob.size")
    format = serializers.CharField()
    is_primary = serializers.BooleanField()
    sha256 = serializers.CharField(source="blob_id")
    hashes = HashesSerializer(source="blob")
    detected_kind = serializers.CharField()
    architecture = serializers.CharField()
    lora_rank = serializers.IntegerField(allow_null=True)
    lora_alpha = serializers.FloatField(allow_null=True)
    metadata = serializers.JSONField(source="header_metadata")
    pickle_globals = serializers.ListField(child=serializers.CharField())
    download_url = serializers.SerializerMethodField()

    def get_download_url(self, obj: ModelFile) -> str:
        return absolute_url(self.context, reverse("registry:api-file-download", args=[obj.pk]))


class SampleImageSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.SerializerMethodField()
    prompt = serializers.CharField()
    parameters = serializers.JSONField()
    position = serializers.IntegerField()
    # A field named like DRF's Field.source attribute (the model's name for it): declared
    # fields are collected from the class, so this works; the stubs see the attribute.
    source = serializers.CharField(help_text="creator, or rendered (on publish).")  # type: ignore[assignment]
    role = serializers.CharField(help_text="'' (an image), base or adapted (a LoRA's pair).")
    pair_id = serializers.IntegerField(
        allow_null=True, help_text="For an adapted image: its base-alone half."
    )
    created_at = serializers.DateTimeField()

    def get_url(self, obj: Any) -> str:
        return media_url(self.context, obj.image.name)


class VersionRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    base_model = serializers.CharField()
    model = ModelRefSerializer()


class DatasetRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    kind = serializers.CharField()
    owner = OwnerSerializer()


class DatasetVersionRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    image_count = serializers.IntegerField()
    dataset = DatasetRefSerializer()


class ParentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    relation = serializers.CharField()
    version = VersionRefSerializer(source="parent_version", allow_null=True)
    dataset_version = DatasetVersionRefSerializer(source="parent_dataset", allow_null=True)


class ChildSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    relation = serializers.CharField()
    version = VersionRefSerializer(source="child")


class VersionDetailSerializer(serializers.Serializer):
    """A version as :func:`registry.selectors.versions.version_detail` loads it."""

    id = serializers.IntegerField()
    model = ModelRefSerializer()
    name = serializers.CharField()
    description = serializers.CharField()
    description_html = serializers.CharField()
    base_model = serializers.CharField()
    trigger_words = serializers.ListField(child=serializers.CharField())
    layout = serializers.CharField()
    status = serializers.CharField()
    license_code = serializers.CharField()
    training_metadata = serializers.JSONField()
    download_count = serializers.IntegerField()
    published_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    download_url = serializers.SerializerMethodField()
    files = FileSerializer(many=True)
    images = SampleImageSerializer(many=True)
    parents = ParentSerializer(many=True, source="visible_parents")
    children = ChildSerializer(many=True, source="visible_children")

    def get_download_url(self, obj: ModelVersion) -> str:
        path = reverse("registry:download-model-version", args=[obj.pk])
        return absolute_url(self.context, path)


class VersionWithFilesSerializer(VersionSummarySerializer):
    files = FileSerializer(many=True)


class DatasetVersionSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    image_count = serializers.IntegerField()
    license_code = serializers.CharField()
    download_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class DatasetListItemSerializer(serializers.Serializer):
    """A dataset as listings show it; expects ``shown_versions`` from the selector."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    kind = serializers.CharField()
    visibility = serializers.CharField()
    is_removed = serializers.BooleanField()
    owner = OwnerSerializer()
    tags = serializers.SerializerMethodField()
    summary = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    version_count = serializers.SerializerMethodField()
    latest_version = serializers.SerializerMethodField()

    def get_tags(self, obj: Dataset) -> list[str]:
        return [tag.name for tag in obj.tags.all()]

    def get_summary(self, obj: Dataset) -> str:
        return summary_text(obj.description_html)

    def get_version_count(self, obj: Dataset) -> int:
        return len(obj.shown_versions)  # type: ignore[attr-defined]

    @extend_schema_field(DatasetVersionSummarySerializer(allow_null=True))
    def get_latest_version(self, obj: Dataset) -> dict[str, Any] | None:
        versions = obj.shown_versions  # type: ignore[attr-defined]
        return DatasetVersionSummarySerializer(versions[0]).data if versions else None


class DatasetDetailSerializer(DatasetListItemSerializer):
    description = serializers.CharField()
    description_html = serializers.CharField()
    versions = DatasetVersionSummarySerializer(many=True, source="shown_versions")


class DatasetFileSerializer(serializers.Serializer):
    filename = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    download_url = serializers.CharField()


class DatasetVersionDetailSerializer(serializers.Serializer):
    """A dataset version. Private ones show the manifest's aggregate statistics only: no file
    names, no captions, never a pixel beyond the owner's chosen previews."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    dataset = DatasetRefSerializer()
    image_count = serializers.IntegerField()
    license_code = serializers.CharField()
    manifest_hash = serializers.CharField()
    download_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    stats = serializers.SerializerMethodField()
    file = serializers.SerializerMethodField()

    def get_stats(self, obj: DatasetVersion) -> dict[str, Any]:
        return aggregate_stats(obj.manifest if isinstance(obj.manifest, dict) else {})

    @extend_schema_field(DatasetFileSerializer(allow_null=True))
    def get_file(self, obj: DatasetVersion) -> dict[str, Any] | None:
        if obj.dataset.kind != DatasetKind.PUBLIC or obj.blob is None:
            return None
        path = reverse("registry:download-dataset-version", args=[obj.pk])
        return {
            "filename": obj.filename,
            "size": obj.blob.size,
            "sha256": obj.blob_id,
            "download_url": absolute_url(self.context, path),
        }
