"""Models, versions, files, datasets and the content-addressed blobs behind them.

Every write goes through ``registry.services``; reads beyond a plain get go through
``registry.selectors``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models import Exists, OuterRef, Q

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User


class ModelKind(models.TextChoices):
    CHECKPOINT = "checkpoint", "Checkpoint"
    LORA = "lora", "LoRA"
    LYCORIS = "lycoris", "LyCORIS / LoCon"
    EMBEDDING = "embedding", "Textual inversion"
    VAE = "vae", "VAE"
    CONTROLNET = "controlnet", "ControlNet"


class BaseModelFamily(models.TextChoices):
    SD1 = "sd1", "SD 1.x"
    SD2 = "sd2", "SD 2.x"
    SDXL = "sdxl", "SDXL"
    SD3 = "sd3", "SD 3"
    FLUX = "flux", "Flux"
    OTHER = "other", "Other"
    UNKNOWN = "unknown", "Unknown"


class Visibility(models.TextChoices):
    PUBLIC = "public", "Public"
    UNLISTED = "unlisted", "Unlisted"
    PRIVATE = "private", "Private"


# --- visibility: the one rule -------------------------------------------------------------
# Staff see everything; an owner sees all of their own; everyone else sees what is neither
# private nor removed (and, for a model's versions, only published ones). The querysets'
# ``visible_to(user)`` and ``is_visible_to`` below are that rule for a query and for a row
# (``registry.access`` asks it of rows already loaded).


def is_owner_or_staff(user: User | AnonymousUser, owner_id: int) -> bool:
    return bool(user.is_authenticated and (user.pk == owner_id or user.is_staff))


def visible_q(
    user: User | AnonymousUser,
    *,
    via: str = "",
    public_also: Q | None = None,
    staff_sees_all: bool = True,
) -> Q:
    """The rule as a filter on a ``Model`` or ``Dataset`` reached through ``via``
    (``"model__"``, ``"dataset_version__dataset__"``). ``public_also`` narrows what others
    see (a model's published versions); ``staff_sees_all=False`` applies the rule to staff as
    to any member (the federated dataset picker)."""
    if staff_sees_all and user.is_authenticated and user.is_staff:
        return Q()
    public = Q(**{f"{via}is_removed": False}) & ~Q(**{f"{via}visibility": Visibility.PRIVATE})
    if public_also is not None:
        public &= public_also
    if user.is_authenticated:
        return public | Q(**{f"{via}owner_id": user.pk})
    return public


def is_visible_to(
    user: User | AnonymousUser,
    *,
    owner_id: int,
    visibility: str,
    is_removed: bool,
    published: bool = True,
) -> bool:
    """The rule for one model or dataset already loaded (``published``: for a version)."""
    if is_owner_or_staff(user, owner_id):
        return True
    return published and not is_removed and visibility != Visibility.PRIVATE


class ModelQuerySet(models.QuerySet["Model"]):
    def visible_to(self, user: User | AnonymousUser) -> ModelQuerySet:
        """Models the user may open: listed ones, unlisted ones by link, and their own."""
        return self.filter(visible_q(user))

    def listed(self) -> ModelQuerySet:
        """Models on browse and search: public, not removed, with a published version.

        ``latest_published_at`` is kept by the publish services, so this needs no join and
        a partial index serves it."""
        return self.filter(
            is_removed=False, visibility=Visibility.PUBLIC, latest_published_at__isnull=False
        )


class ModelVersionQuerySet(models.QuerySet["ModelVersion"]):
    def visible_to(self, user: User | AnonymousUser) -> ModelVersionQuerySet:
        """Published versions of visible models, and every version of the user's own."""
        published = Q(status=VersionStatus.PUBLISHED)
        return self.filter(visible_q(user, via="model__", public_also=published))


class DatasetQuerySet(models.QuerySet["Dataset"]):
    def visible_to(self, user: User | AnonymousUser) -> DatasetQuerySet:
        """Datasets the user may open: listed ones, unlisted ones by link, and their own."""
        return self.filter(visible_q(user))

    def listed(self) -> DatasetQuerySet:
        """Datasets on the public list: public, not removed, with at least one version."""
        return self.filter(is_removed=False, visibility=Visibility.PUBLIC).filter(
            Exists(DatasetVersion.objects.filter(dataset=OuterRef("pk")))
        )


class DatasetVersionQuerySet(models.QuerySet["DatasetVersion"]):
    def visible_to(self, user: User | AnonymousUser) -> DatasetVersionQuerySet:
        """Versions of the datasets the user may open."""
        return self.filter(visible_q(user, via="dataset__"))


class FileFormat(models.TextChoices):
    SAFETENSORS = "safetensors", "SafeTensors"
    PICKLE = "pickle", "PickleTensor"
    ARCHIVE = "archive", "Archive"
    OTHER = "other", "Other"


class Blob(models.Model):
    """Bytes stored once, addressed by SHA-256, with every hash users look files up by."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.BigIntegerField()
    storage_name = models.CharField(max_length=300)
    autov1 = models.CharField(max_length=8, db_index=True)
    autov2 = models.CharField(max_length=10, db_index=True)
    autov3 = models.CharField(max_length=64, blank=True, db_index=True)
    crc32 = models.CharField(max_length=8, db_index=True)
    blake3 = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.sha256[:12]


class Tag(models.Model):
    name = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class Model(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="models"
    )
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200)
    kind = models.CharField(max_length=20, choices=ModelKind.choices)
    description = models.TextField(blank=True)
    description_html = models.TextField(blank=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="models")
    visibility = models.CharField(
        max_length=10, choices=Visibility.choices, default=Visibility.PUBLIC
    )
    is_removed = models.BooleanField(default=False)
    download_count = models.BigIntegerField(default=0)
    rating_avg = models.FloatField(default=0)
    rating_count = models.IntegerField(default=0)
    search_vector = SearchVectorField(null=True, editable=False)
    # When the newest published version was published; null while none is. Kept by the
    # publish services so listing and counting never join the versions table.
    latest_published_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ModelQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=("owner", "slug"), name="model_owner_slug_unique")
        ]
        indexes = [
            models.Index(fields=["visibility", "kind", "-created_at"], name="model_browse_idx"),
            models.Index(fields=["-download_count"], name="model_downloads_idx"),
            models.Index(
                fields=["-created_at"],
                name="model_listed_idx",
                condition=models.Q(
                    latest_published_at__isnull=False, is_removed=False, visibility="public"
                ),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def repo_id(self) -> str:
        """The Hugging Face style identifier, ``owner/slug``."""
        return f"{self.owner.username}/{self.slug}"


class VersionStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"
    UNPUBLISHED = "unpublished", "Unpublished"


class FileLayout(models.TextChoices):
    SINGLE_FILE = "single", "Single file"
    DIFFUSERS = "diffusers", "Diffusers folder"


class ModelVersion(models.Model):
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="versions")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    description_html = models.TextField(blank=True)
    base_model = models.CharField(
        max_length=20, choices=BaseModelFamily.choices, default=BaseModelFamily.UNKNOWN
    )
    # The base model as Civitai names it ("SD 1.5", "SDXL 1.0", "Pony", "Illustrious",
    # "NoobAI"): what people read and filter by. Detected from the file's metadata and names,
    # settable by the creator; ``base_model`` (the family) decides what loads with what.
    base_model_name = models.CharField(max_length=40, blank=True, default="")
    trigger_words = models.JSONField(default=list, blank=True)
    layout = models.CharField(
        max_length=10, choices=FileLayout.choices, default=FileLayout.SINGLE_FILE
    )
    status = models.CharField(
        max_length=12, choices=VersionStatus.choices, default=VersionStatus.DRAFT
    )
    # The marketplace attaches a license by its stable identifier (for example
    # "creativeml-openrail-m"); the registry only stores it.
    license_code = models.CharField(max_length=64, blank=True)
    training_metadata = models.JSONField(default=dict, blank=True)
    download_count = models.BigIntegerField(default=0)
    published_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(fields=("model", "name"), name="version_model_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.model.name} {self.name}"

    @property
    def is_published(self) -> bool:
        return self.status == VersionStatus.PUBLISHED

    @property
    def base_model_label(self) -> str:
        """The Civitai base-model name shown to people: the version's own, else its family's
        usual one (``sdxl`` -> ``SDXL 1.0``)."""
        from sdcore.detect import civitai_base_model

        return self.base_model_name or civitai_base_model(self.base_model)


class ModelFile(models.Model):
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="files")
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="model_files")
    path = models.CharField(max_length=500)
    format = models.CharField(max_length=12, choices=FileFormat.choices)
    is_primary = models.BooleanField(default=False)
    detected_kind = models.CharField(max_length=20, blank=True)
    architecture = models.CharField(max_length=20, blank=True)
    lora_rank = models.IntegerField(null=True, blank=True)
    lora_alpha = models.FloatField(null=True, blank=True)
    header_metadata = models.JSONField(default=dict, blank=True)
    pickle_globals = models.JSONField(default=list, blank=True)
    # Pickle files: conversion to safetensors, run by a Celery task ("", queued, done, failed).
    conversion_status = models.CharField(max_length=10, blank=True)
    conversion_error = models.TextField(blank=True)
    converted_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="conversions"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-is_primary", "path")
        constraints = [
            models.UniqueConstraint(fields=("version", "path"), name="file_version_path_unique")
        ]

    def __str__(self) -> str:
        return self.path

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class SampleSource(models.TextChoices):
    CREATOR = "creator", "Added by the creator"
    RENDERED = "rendered", "Rendered on publish"


class SampleRole(models.TextChoices):
    SINGLE = "", "Image"
    BASE = "base", "Base model alone"
    ADAPTED = "adapted", "Base model with this version"


class SampleImage(models.Model):
    """An image shown on a version's page, in the owner's order (``position``); the first one
    that is not a ``base`` half of a pair is the model's cover (:data:`COVER_SAMPLE_Q`).

    A LoRA's rendered pair is two rows: the base model alone (``role=base``) and the base with
    the LoRA (``role=adapted``, ``pair`` pointing at the base row), same prompt and seed."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="images")
    image = models.ImageField(upload_to="samples/%Y/%m/")
    prompt = models.TextField(blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    position = models.PositiveIntegerField(default=0)
    source = models.CharField(
        max_length=10, choices=SampleSource.choices, default=SampleSource.CREATOR
    )
    role = models.CharField(max_length=10, choices=SampleRole.choices, default="", blank=True)
    pair = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="paired_with"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("position", "pk")
        indexes = [models.Index(fields=["version", "position"], name="sample_version_pos_idx")]

    def __str__(self) -> str:
        return f"Sample image {self.pk} of version {self.version_id}"


# Which sample images may be a model's cover: not the "base alone" half of a LoRA's pair.
COVER_SAMPLE_Q = ~Q(role=SampleRole.BASE)


class DatasetKind(models.TextChoices):
    PUBLIC = "public", "Public (hosted files)"
    PRIVATE = "private", "Private (metadata only, served by its owner's node)"


class Dataset(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="datasets"
    )
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200)
    kind = models.CharField(max_length=10, choices=DatasetKind.choices)
    description = models.TextField(blank=True)
    description_html = models.TextField(blank=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="datasets")
    visibility = models.CharField(
        max_length=10, choices=Visibility.choices, default=Visibility.PUBLIC
    )
    is_removed = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DatasetQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(fields=("owner", "slug"), name="dataset_owner_slug_unique")
        ]

    def __str__(self) -> str:
        return self.name


class DatasetVersion(models.Model):
    """One state of a dataset. Public: an archive blob. Private: the node's manifest only."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    name = models.CharField(max_length=100)
    blob = models.ForeignKey(
        Blob, null=True, blank=True, on_delete=models.PROTECT, related_name="dataset_versions"
    )
    filename = models.CharField(max_length=255, blank=True)
    image_count = models.IntegerField(default=0)
    manifest = models.JSONField(default=dict, blank=True)
    manifest_hash = models.CharField(max_length=64, blank=True, db_index=True)
    license_code = models.CharField(max_length=64, blank=True)
    download_count = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DatasetVersionQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(
                fields=("dataset", "name"), name="datasetversion_dataset_name_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} {self.name}"


class DatasetPreview(models.Model):
    """An image the owner chose to show; for private datasets, the only pixels published."""

    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.CASCADE, related_name="previews"
    )
    image = models.ImageField(upload_to="dataset-previews/%Y/%m/")
    caption = models.CharField(max_length=500, blank=True)

    def __str__(self) -> str:
        return f"Preview {self.pk} of dataset version {self.dataset_version_id}"


class LineageRelation(models.TextChoices):
    ADAPTER = "adapter", "Adapter of"
    FINETUNE = "finetune", "Fine-tune of"
    MERGE = "merge", "Merge of"
    QUANTIZED = "quantized", "Quantized from"
    TRAINED_ON = "trained_on", "Trained on"


class Lineage(models.Model):
    """What a version derives from: another model version, or a dataset version."""

    child = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="parents")
    parent_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
    )
    parent_dataset = models.ForeignKey(
        DatasetVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="derived_versions",
    )
    relation = models.CharField(max_length=12, choices=LineageRelation.choices)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(parent_version__isnull=False, parent_dataset__isnull=True)
                    | models.Q(parent_version__isnull=True, parent_dataset__isnull=False)
                ),
                name="lineage_exactly_one_parent",
            )
        ]

    def __str__(self) -> str:
        parent = self.parent_version_id or f"dataset {self.parent_dataset_id}"
        return f"{self.child_id} {self.relation} {parent}"


class UploadStatus(models.TextChoices):
    OPEN = "open", "Receiving"
    COMPLETE = "complete", "Complete"
    FAILED = "failed", "Failed"


class Upload(models.Model):
    """A resumable upload: parts append to a temporary file until it is completed."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads"
    )
    filename = models.CharField(max_length=255)
    size = models.BigIntegerField()
    offset = models.BigIntegerField(default=0)
    expected_sha256 = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=10, choices=UploadStatus.choices, default=UploadStatus.OPEN
    )
    blob = models.ForeignKey(Blob, null=True, blank=True, on_delete=models.SET_NULL)
    inspection = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.filename} ({self.offset}/{self.size})"
