"""Models, versions, files, lineage and datasets: every write to the catalogue."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Choices, F, QuerySet
from django.utils import timezone
from django.utils.text import slugify

from core.errors import AccessDeniedError, ApplicationError, ConflictError
from core.validators import invisible_character, invisible_character_message
from registry.markdown import render_markdown
from registry.models import (
    BaseModelFamily,
    Dataset,
    DatasetKind,
    DatasetVersion,
    FileFormat,
    FileLayout,
    Lineage,
    LineageRelation,
    Model,
    ModelFile,
    ModelKind,
    ModelVersion,
    Tag,
    Upload,
    UploadStatus,
    VersionStatus,
    Visibility,
)
from registry.selectors.versions import lineage_ancestor_version_ids
from registry.services.samples import version_samples_request
from sdcore.errors import UnsafePathError
from sdcore.paths import safe_relative_path

MAX_TAGS = 20

# Checks the marketplace installs (license lineage); each raises ApplicationError to refuse.
PublishCheck = Callable[[ModelVersion], None]
_publish_checks: list[PublishCheck] = []


def register_publish_check(check: PublishCheck) -> None:
    if check not in _publish_checks:
        _publish_checks.append(check)


@dataclass(frozen=True)
class FileSpec:
    """A completed upload to attach to a version, at ``path`` inside it."""

    upload: Upload
    path: str = ""
    is_primary: bool = False


@dataclass(frozen=True)
class ParentSpec:
    relation: str
    version: ModelVersion | None = None
    dataset_version: DatasetVersion | None = None


def _require_owner(user: User, owner_id: int) -> None:
    if not (user.pk == owner_id or user.is_staff):
        raise AccessDeniedError("Only the owner can change this.")


def _choice(value: str, choices: type[Choices], field: str) -> str:
    if value not in choices.values:
        allowed = ", ".join(choices.values)
        raise ApplicationError(f"{field} must be one of: {allowed}.", code=f"bad_{field}")
    return value


def _visible(value: str, field: str) -> str:
    """``value``, refused when it holds invisible or control characters (core.validators)."""
    char = invisible_character(value)
    if char is not None:
        raise ApplicationError(
            f"{field}: {invisible_character_message(char)}",
            code="invisible_characters",
            details={"field": field, "codepoint": f"U+{ord(char):04X}"},
        )
    return value


def _tags(names: Iterable[str]) -> list[Tag]:
    cleaned = []
    for name in names:
        tag = _visible(name, "tags").strip().lower()[:64]
        if tag and tag not in cleaned:
            cleaned.append(tag)
    if len(cleaned) > MAX_TAGS:
        raise ApplicationError(
            f"tags: at most {MAX_TAGS} tags ({len(cleaned)} given).",
            code="too_many_tags",
            details={"field": "tags", "limit": MAX_TAGS, "count": len(cleaned)},
        )
    return [Tag.objects.get_or_create(name=n)[0] for n in cleaned]


def _unique_slug(queryset: QuerySet, name: str) -> str:
    base = slugify(name)[:180] or "untitled"
    slug, n = base, 1
    while queryset.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def model_search_vector_update(*, model: Model) -> None:
    """Refresh the full-text search document (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        return
    from django.contrib.postgres.search import SearchVector
    from django.db.models import TextField, Value
    from django.db.models.functions import Coalesce

    tags = " ".join(model.tags.values_list("name", flat=True))
    Model.objects.filter(pk=model.pk).update(
        search_vector=SearchVector("name", weight="A")
        + SearchVector(Value(tags), weight="B")
        + SearchVector(Coalesce("description", Value(""), output_field=TextField()), weight="C")
    )


def _listing_fields(
    *,
    owner: User,
    queryset: QuerySet,
    name: str,
    what: str,
    kind: str,
    kinds: type[Choices],
    description: str,
    visibility: str,
) -> dict[str, object]:
    """The validated fields models and datasets share: name, unique slug, kind, text."""
    name = _visible(name, "name").strip()
    if not name:
        raise ApplicationError(f"A {what} needs a name.", code="name_required")
    return {
        "owner": owner,
        "name": name[:200],
        "slug": _unique_slug(queryset.filter(owner=owner), name),
        "kind": _choice(kind, kinds, "kind"),
        "description": description,
        "description_html": render_markdown(description),
        "visibility": _choice(visibility, Visibility, "visibility"),
    }


@transaction.atomic
def model_create(
    *,
    owner: User,
    name: str,
    kind: str,
    description: str = "",
    tags: Sequence[str] = (),
    visibility: str = Visibility.PUBLIC,
) -> Model:
    model = Model.objects.create(
        **_listing_fields(
            owner=owner,
            queryset=Model.objects.all(),
            name=name,
            what="model",
            kind=kind,
            kinds=ModelKind,
            description=description,
            visibility=visibility,
        )
    )
    model.tags.set(_tags(tags))
    model_search_vector_update(model=model)
    return model


@transaction.atomic
def model_update(
    *,
    model: Model,
    user: User,
    name: str | None = None,
    description: str | None = None,
    tags: Sequence[str] | None = None,
    visibility: str | None = None,
) -> Model:
    _require_owner(user, model.owner_id)
    if name is not None and _visible(name, "name").strip():
        model.name = name.strip()[:200]
    if description is not None:
        model.description = description
        model.description_html = render_markdown(description)
    if visibility is not None:
        model.visibility = _choice(visibility, Visibility, "visibility")
    model.save()
    if tags is not None:
        model.tags.set(_tags(tags))
    model_search_vector_update(model=model)
    return model


def _file_path(raw: str) -> str:
    """A version file's path, relative and safe wherever a client saves it (`sdcore.paths`)."""
    try:
        path, is_dir = safe_relative_path(raw.strip(), what="File path")
    except UnsafePathError as exc:
        raise ApplicationError(
            exc.message, code="bad_path", details={"path": raw, "reason": exc.code}
        ) from None
    if is_dir:
        raise ApplicationError(
            f"File path {raw!r} names a folder, not a file.",
            code="bad_path",
            details={"path": raw, "reason": "folder"},
        )
    return path


def _file_from_upload(version: ModelVersion, spec: FileSpec, user: User) -> ModelFile:
    upload = spec.upload
    if upload.user_id != user.pk:
        raise AccessDeniedError("That upload belongs to someone else.", code="not_your_upload")
    if upload.status != UploadStatus.COMPLETE or upload.blob_id is None:
        raise ApplicationError(f"Upload {upload.pk} is not complete.", code="upload_incomplete")
    info = upload.inspection
    path = _file_path(spec.path or upload.filename)
    if ModelFile.objects.filter(version=version, path=path).exists():
        raise ConflictError(f"The version already has a file at {path}.", code="duplicate_path")
    return ModelFile.objects.create(
        version=version,
        blob_id=upload.blob_id,
        path=path,
        format=info.get("format", FileFormat.OTHER),
        is_primary=spec.is_primary,
        detected_kind=info.get("kind") or "",
        architecture=info.get("architecture") or "",
        lora_rank=info.get("lora_rank"),
        lora_alpha=info.get("lora_alpha"),
        header_metadata=info.get("metadata") or {},
        pickle_globals=info.get("pickle_globals") or [],
    )


def _base_family(architecture: str) -> str:
    return architecture if architecture in BaseModelFamily.values else BaseModelFamily.UNKNOWN


def _base_model_name(given: str, family: str, metadata: object, names: Sequence[str]) -> str:
    """The creator's Civitai base-model name (trimmed, 40 characters), else the one the file's
    metadata and names say (:func:`sdcore.detect.civitai_base_model`)."""
    from sdcore.detect import civitai_base_model

    text = _visible(given, "base_model_name").strip() if given else ""
    if len(text) > 40:
        raise ApplicationError(
            "base_model_name: at most 40 characters.", code="bad_base_model_name"
        )
    if text:
        return text
    meta = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    return civitai_base_model(family, meta, names)


@transaction.atomic
def version_create(
    *,
    model: Model,
    user: User,
    name: str,
    files: Sequence[FileSpec],
    description: str = "",
    base_model: str = "",
    trigger_words: Sequence[str] = (),
    layout: str = FileLayout.SINGLE_FILE,
    parents: Sequence[ParentSpec] = (),
    license_code: str = "",
    base_model_name: str = "",
) -> ModelVersion:
    """A draft version with its files. The base-model family is detected unless given, and so
    is its Civitai name (``base_model_name``: "Pony", "Illustrious"...)."""
    _require_owner(user, model.owner_id)
    name = _visible(name, "name").strip()[:100]
    if not name:
        raise ApplicationError("A version needs a name.", code="name_required")
    if ModelVersion.objects.filter(model=model, name=name).exists():
        raise ConflictError(f"Version {name!r} already exists.", code="duplicate_version")
    if not files:
        raise ApplicationError("A version needs at least one file.", code="files_required")
    version = ModelVersion.objects.create(
        model=model,
        name=name,
        description=description,
        description_html=render_markdown(description),
        layout=_choice(layout, FileLayout, "layout"),
        trigger_words=[w.strip() for w in trigger_words if w.strip()][:50],
        license_code=license_code,
    )
    has_primary = any(spec.is_primary for spec in files)
    created = [
        _file_from_upload(
            version, FileSpec(s.upload, s.path, s.is_primary or (not has_primary and i == 0)), user
        )
        for i, s in enumerate(files)
    ]
    primary = next(f for f in created if f.is_primary)
    version.base_model = (
        _choice(base_model, BaseModelFamily, "base_model")
        if base_model
        else _base_family(primary.architecture)
    )
    version.base_model_name = _base_model_name(
        base_model_name, version.base_model, primary.header_metadata, (model.name, primary.path)
    )
    version.training_metadata = primary.header_metadata
    if not version.trigger_words:
        phrase = primary.header_metadata.get("trigger_phrase")
        if isinstance(phrase, str) and phrase.strip():
            version.trigger_words = [w.strip() for w in phrase.split(",") if w.strip()]
    version.save()
    for parent in parents:
        lineage_add(version=version, user=user, parent=parent)
    return version


def lineage_add(*, version: ModelVersion, user: User, parent: ParentSpec) -> Lineage:
    _require_owner(user, version.model.owner_id)
    relation = _choice(parent.relation, LineageRelation, "relation")
    if (parent.version is None) == (parent.dataset_version is None):
        raise ApplicationError("A parent is a model version or a dataset.", code="bad_parent")
    if parent.version is not None and parent.version.pk == version.pk:
        raise ApplicationError("A version cannot derive from itself.", code="bad_parent")
    if parent.version is not None and version.pk in lineage_ancestor_version_ids(parent.version.pk):
        raise ApplicationError(
            f"Model version {parent.version.pk} already derives from version {version.pk}; "
            f"making {version.pk} derive from it would close a lineage cycle.",
            code="lineage_cycle",
            details={"version_id": version.pk, "parent_version_id": parent.version.pk},
        )
    return Lineage.objects.create(
        child=version,
        parent_version=parent.version,
        parent_dataset=parent.dataset_version,
        relation=relation,
    )


@transaction.atomic
def version_publish(*, version: ModelVersion, user: User) -> ModelVersion:
    _require_owner(user, version.model.owner_id)
    version = ModelVersion.objects.select_for_update().select_related("model").get(pk=version.pk)
    if version.is_published:
        return version
    for check in _publish_checks:
        check(version)
    version.status = VersionStatus.PUBLISHED
    version.published_at = timezone.now()
    version.save(update_fields=["status", "published_at"])
    model_latest_published_refresh(model_id=version.model_id)
    version_samples_request(version=version)
    return version


@transaction.atomic
def version_unpublish(*, version: ModelVersion, user: User) -> ModelVersion:
    _require_owner(user, version.model.owner_id)
    version.status = VersionStatus.UNPUBLISHED
    version.save(update_fields=["status"])
    model_latest_published_refresh(model_id=version.model_id)
    return version


@transaction.atomic
def version_license_set(*, version: ModelVersion, user: User, license_code: str) -> ModelVersion:
    """Set the license of a version that was never published (buyers keep the terms they
    bought under). The marketplace checks the code against its catalogue and the lineage."""
    _require_owner(user, version.model.owner_id)
    version = ModelVersion.objects.select_for_update().select_related("model").get(pk=version.pk)
    if version.published_at is not None:
        raise ConflictError(
            "A published version keeps its license; publish a new version to change it.",
            code="license_locked",
        )
    version.license_code = license_code.strip()[:64]
    version.save(update_fields=["license_code"])
    return version


def model_latest_published_refresh(*, model_id: int) -> None:
    """Recompute ``Model.latest_published_at`` after a version's status changed."""
    latest = (
        ModelVersion.objects.filter(model_id=model_id, status=VersionStatus.PUBLISHED)
        .order_by("-published_at")
        .values_list("published_at", flat=True)
        .first()
    )
    Model.objects.filter(pk=model_id).update(latest_published_at=latest)


def model_rating_set(*, model_id: int, average: float, count: int) -> None:
    """The denormalised rating that sorting uses; the marketplace owns the reviews."""
    Model.objects.filter(pk=model_id).update(rating_avg=average, rating_count=count)


def download_count_increment(*, target: ModelVersion | DatasetVersion) -> None:
    type(target).objects.filter(pk=target.pk).update(download_count=F("download_count") + 1)
    if isinstance(target, ModelVersion):
        Model.objects.filter(pk=target.model_id).update(download_count=F("download_count") + 1)


@transaction.atomic
def dataset_create(
    *,
    owner: User,
    name: str,
    kind: str,
    description: str = "",
    tags: Sequence[str] = (),
    visibility: str = Visibility.PUBLIC,
) -> Dataset:
    dataset = Dataset.objects.create(
        **_listing_fields(
            owner=owner,
            queryset=Dataset.objects.all(),
            name=name,
            what="dataset",
            kind=kind,
            kinds=DatasetKind,
            description=description,
            visibility=visibility,
        )
    )
    dataset.tags.set(_tags(tags))
    return dataset


@transaction.atomic
def dataset_version_create_public(
    *, dataset: Dataset, user: User, name: str, upload: Upload, license_code: str = ""
) -> DatasetVersion:
    """A hosted dataset version from an uploaded archive of image + caption pairs."""
    _require_owner(user, dataset.owner_id)
    if dataset.kind != DatasetKind.PUBLIC:
        raise ApplicationError(
            "Private datasets never upload images; publish a manifest.", code="private_dataset"
        )
    if upload.user_id != user.pk or upload.status != UploadStatus.COMPLETE:
        raise ApplicationError(
            "That upload is not a completed upload of yours.", code="upload_incomplete"
        )
    archive = upload.inspection.get("archive")
    if upload.inspection.get("format") != "archive" or not archive:
        raise ApplicationError(
            "A public dataset is uploaded as a .zip or .tar archive.", code="not_an_archive"
        )
    if DatasetVersion.objects.filter(dataset=dataset, name=_visible(name, "name")).exists():
        raise ConflictError(f"Version {name!r} already exists.", code="duplicate_version")
    return DatasetVersion.objects.create(
        dataset=dataset,
        name=name.strip()[:100] or "v1",
        blob_id=upload.blob_id,
        filename=upload.filename,
        image_count=int(archive.get("image_count", 0)),
        manifest=archive,
        manifest_hash=upload.blob_id or "",
        license_code=license_code,
    )


MANIFEST_KEYS = ("count", "manifest_hash")


@transaction.atomic
def dataset_version_create_private(
    *, dataset: Dataset, user: User, name: str, manifest: dict, license_code: str = ""
) -> DatasetVersion:
    """A private dataset version: the node's manifest only, never images."""
    _require_owner(user, dataset.owner_id)
    if dataset.kind != DatasetKind.PRIVATE:
        raise ApplicationError("Only private datasets take a manifest.", code="public_dataset")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ApplicationError(f"The manifest lacks {', '.join(missing)}.", code="bad_manifest")
    count = manifest["count"]
    digest = str(manifest["manifest_hash"])
    if not isinstance(count, int) or count < 1 or len(digest) != 64:
        raise ApplicationError(
            "The manifest needs a positive image count and a 64-digit hash.", code="bad_manifest"
        )
    if DatasetVersion.objects.filter(dataset=dataset, name=_visible(name, "name")).exists():
        raise ConflictError(f"Version {name!r} already exists.", code="duplicate_version")
    return DatasetVersion.objects.create(
        dataset=dataset,
        name=name.strip()[:100] or "v1",
        image_count=count,
        manifest=manifest,
        manifest_hash=digest,
        license_code=license_code,
    )
