"""A subset of Civitai's REST API v1, with Civitai's field names, for tools that speak it.

Civitai clients take a base URL: give them ``<site>/civitai``. The routes are

- ``GET /civitai/api/v1/models`` (``limit``, ``page``, ``query``, ``tag``, ``username``,
  ``types``, ``sort``, ``nsfw``, ``baseModels``) -> ``{"items": [...], "metadata": {...}}``;
- ``GET /civitai/api/v1/models/{id}``;
- ``GET /civitai/api/v1/model-versions/{id}`` and ``.../model-versions/by-hash/{hash}``
  (SHA256, AutoV1, AutoV2, AutoV3, CRC32 or BLAKE3, any case).

The two ``model-versions`` routes are also mounted at ``/api/v1/model-versions/...`` (Atelier's
own API uses ``/api/v1/versions/{id}``, so nothing clashes), which serves tools that hard-code
the path and only let the host be changed. ``/api/v1/models`` itself is Atelier's own API.
``downloadUrl`` is ``/api/download/models/{versionId}``, the same path as Civitai's, which
redirects to a short-lived signed URL with a ``Content-Disposition`` file name.

Mapping: a model's ``nsfw`` is its ``nsfw`` tag; ``baseModel`` is the family's usual Civitai
name (``SD 1.5``, ``SD 2.1``, ``SDXL 1.0``, ...); ratings and download counts are Atelier's.
Errors are ``{"error": message}`` as on Civitai (with Atelier's ``code``/``message``/``details``
alongside); a bearer token authenticates as on Civitai. ``?token=`` (which Civitai clients
append to download links) is taken on the download route only and refused here with 401, so
that tokens stay out of access logs (see :mod:`core.auth`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import serializers

from core.auth import QUERY_TOKEN_REFUSED, bearer_secret, query_token_refused, request_user
from registry.compat.selectors import (
    NSFW_TAG,
    CivitaiModelFilters,
    civitai_model,
    civitai_models,
    civitai_version,
    civitai_version_by_hash,
)
from registry.models import (
    BaseModelFamily,
    FileFormat,
    Model,
    ModelFile,
    ModelKind,
    ModelVersion,
    SampleImage,
    VersionStatus,
)

User = AuthUser | AnonymousUser
View = Callable[..., HttpResponse]

# Civitai's ModelType enum -> Atelier's kind (None: a valid Civitai type Atelier has no
# models of, which filters to nothing).
CIVITAI_TYPES: dict[str, str | None] = {
    "Checkpoint": ModelKind.CHECKPOINT,
    "TextualInversion": ModelKind.EMBEDDING,
    "Hypernetwork": None,
    "AestheticGradient": None,
    "LORA": ModelKind.LORA,
    "LoCon": ModelKind.LYCORIS,
    "DoRA": None,
    "Controlnet": ModelKind.CONTROLNET,
    "Upscaler": None,
    "MotionModule": None,
    "VAE": ModelKind.VAE,
    "Poses": None,
    "Wildcards": None,
    "Workflows": None,
    "Detection": None,
    "Other": None,
}
KIND_TO_CIVITAI: dict[str, str] = {
    ModelKind.CHECKPOINT: "Checkpoint",
    ModelKind.EMBEDDING: "TextualInversion",
    ModelKind.LORA: "LORA",
    ModelKind.LYCORIS: "LoCon",
    ModelKind.CONTROLNET: "Controlnet",
    ModelKind.VAE: "VAE",
}
KIND_TO_AIR: dict[str, str] = {
    ModelKind.CHECKPOINT: "checkpoint",
    ModelKind.EMBEDDING: "embedding",
    ModelKind.LORA: "lora",
    ModelKind.LYCORIS: "lycoris",
    ModelKind.CONTROLNET: "controlnet",
    ModelKind.VAE: "vae",
}
FAMILY_TO_CIVITAI: dict[str, str] = {
    BaseModelFamily.SD1: "SD 1.5",
    BaseModelFamily.SD2: "SD 2.1",
    BaseModelFamily.SDXL: "SDXL 1.0",
    BaseModelFamily.SD3: "SD 3",
    BaseModelFamily.FLUX: "Flux.1 D",
    BaseModelFamily.OTHER: "Other",
    BaseModelFamily.UNKNOWN: "Other",
}
# Civitai base-model names by prefix (lowercase) -> family; anything else is "other".
BASE_MODEL_PREFIXES = (
    ("sd 1", BaseModelFamily.SD1),
    ("sd 2", BaseModelFamily.SD2),
    ("sdxl", BaseModelFamily.SDXL),
    ("pony", BaseModelFamily.SDXL),
    ("illustrious", BaseModelFamily.SDXL),
    ("noobai", BaseModelFamily.SDXL),
    ("sd 3", BaseModelFamily.SD3),
    ("flux", BaseModelFamily.FLUX),
)
SORTS: dict[str, tuple[str, ...]] = {
    "highest rated": ("-rating_avg", "-rating_count", "-download_count", "-pk"),
    "most downloaded": ("-download_count", "-rating_avg", "-pk"),
    "newest": ("-created_at", "-pk"),
}
FORMAT_TO_CIVITAI: dict[str, str] = {
    FileFormat.SAFETENSORS: "SafeTensor",
    FileFormat.PICKLE: "PickleTensor",
    FileFormat.ARCHIVE: "Other",
    FileFormat.OTHER: "Other",
}
STATUS_TO_CIVITAI: dict[str, str] = {
    VersionStatus.PUBLISHED: "Published",
    VersionStatus.DRAFT: "Draft",
    VersionStatus.UNPUBLISHED: "Unpublished",
}
HASH_RE = re.compile(r"^[0-9a-fA-F]{8,64}$")
ID_RE = re.compile(r"^[0-9]{1,18}$")
MAX_LIMIT = 200
DEFAULT_LIMIT = 100


# Errors and plumbing --------------------------------------------------------------------------


def civitai_error(status: int, message: str, code: str) -> JsonResponse:
    body = {"error": message, "code": code, "message": message, "details": {}}
    response = JsonResponse(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


def _not_found(message: str) -> JsonResponse:
    return civitai_error(404, message, "not_found")


def civitai_view(view: View) -> View:
    """GET/HEAD only (JSON 405 otherwise); the view gets the requesting user after ``request``.

    A token that is present but unknown is refused, as on Civitai.
    """

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            response = civitai_error(
                405, f"Method {request.method} is not allowed here.", "method_not_allowed"
            )
            response["Allow"] = "GET, HEAD"
            return response
        if query_token_refused(request):
            return civitai_error(401, QUERY_TOKEN_REFUSED, "token_in_query")
        user = request_user(request)
        if bearer_secret(request) and not user.is_authenticated:
            return civitai_error(401, "Invalid or revoked API token.", "bad_token")
        return view(request, user, *args, **kwargs)

    return wrapper


def _parse_id(raw: str, what: str) -> int | JsonResponse:
    if not ID_RE.match(raw):
        return civitai_error(
            400, f"The {what} id must be a positive integer, not {raw!r}.", "bad_id"
        )
    return int(raw)


def _first_error(detail: Any) -> str:
    if isinstance(detail, dict):
        key, value = next(iter(detail.items()))
        return f"{key}: {_first_error(value)}"
    if isinstance(detail, list) and detail:
        return _first_error(detail[0])
    return str(detail)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Input ----------------------------------------------------------------------------------------


def _split(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


class ModelListInput(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, default=DEFAULT_LIMIT)
    page = serializers.IntegerField(min_value=1, max_value=100_000, default=1)
    query = serializers.CharField(max_length=200, allow_blank=True, default="")
    tag = serializers.CharField(max_length=64, allow_blank=True, default="")
    username = serializers.CharField(max_length=150, allow_blank=True, default="")
    types = serializers.ListField(child=serializers.CharField(max_length=400), default=list)
    sort = serializers.CharField(max_length=40, default="Highest Rated")
    nsfw = serializers.BooleanField(allow_null=True, default=None)
    baseModels = serializers.ListField(  # Civitai's parameter name
        child=serializers.CharField(max_length=400), default=list
    )

    def validate_types(self, value: list[str]) -> list[str]:
        known = {name.lower(): name for name in CIVITAI_TYPES}
        names = _split(value)
        unknown = [name for name in names if name.lower() not in known]
        if unknown:
            raise serializers.ValidationError(
                f"Unknown type {unknown[0]!r}; one of: {', '.join(CIVITAI_TYPES)}."
            )
        return [known[name.lower()] for name in names]

    def validate_sort(self, value: str) -> str:
        if value.strip().lower() not in SORTS:
            raise serializers.ValidationError(
                "sort must be one of: Highest Rated, Most Downloaded, Newest."
            )
        return value.strip().lower()

    def validate_baseModels(self, value: list[str]) -> list[str]:
        return _split(value)

    def filters(self) -> CivitaiModelFilters:
        data = self.validated_data
        # A type filter that names only types Atelier has no models of matches nothing.
        kinds = tuple(kind for name in data["types"] if (kind := CIVITAI_TYPES[name]) is not None)
        families = tuple(dict.fromkeys(_family(name) for name in data["baseModels"]))
        return CivitaiModelFilters(
            query=data["query"].strip(),
            tag=data["tag"].strip(),
            username=data["username"].strip(),
            kinds=kinds if data["types"] else None,
            families=families if families else None,
            nsfw=data["nsfw"],
            order=SORTS[data["sort"]],
        )


def _family(civitai_name: str) -> str:
    lowered = civitai_name.lower()
    for prefix, family in BASE_MODEL_PREFIXES:
        if lowered.startswith(prefix):
            return family
    return BaseModelFamily.OTHER


# Output ---------------------------------------------------------------------------------------


def _download_url(request: HttpRequest, version: ModelVersion, model_file: ModelFile | None) -> str:
    url = request.build_absolute_uri(
        reverse("registry:download-model-version", kwargs={"version_id": version.pk})
    )
    if model_file is not None and not model_file.is_primary:
        url += "?" + urlencode({"type": model_file.path})
    return url


def _file_type(model_file: ModelFile) -> str:
    if model_file.format == FileFormat.ARCHIVE:
        return "Archive"
    if model_file.format == FileFormat.OTHER:
        return "Config"
    return "Model"


def _hashes(model_file: ModelFile) -> dict[str, str]:
    blob = model_file.blob
    hashes = {
        "AutoV1": blob.autov1,
        "AutoV2": blob.autov2,
        "SHA256": blob.sha256,
        "CRC32": blob.crc32,
        "BLAKE3": blob.blake3,
        "AutoV3": blob.autov3[:12],
    }
    return {name: value.upper() for name, value in hashes.items() if value}


def _file_item(request: HttpRequest, version: ModelVersion, model_file: ModelFile) -> dict:
    item: dict[str, Any] = {
        "id": model_file.pk,
        "name": model_file.filename,
        "sizeKB": round(model_file.blob.size / 1024, 4),
        "type": _file_type(model_file),
        "primary": model_file.is_primary,
        "metadata": {
            "fp": None,
            "size": None,
            "format": FORMAT_TO_CIVITAI.get(model_file.format, "Other"),
        },
        "pickleScanResult": "Success",
        "pickleScanMessage": (
            "Imports: " + ", ".join(model_file.pickle_globals)
            if model_file.pickle_globals
            else "No pickle imports"
        ),
        "hashes": _hashes(model_file),
        "downloadUrl": _download_url(request, version, model_file),
    }
    if model_file.path != model_file.filename:
        item["path"] = model_file.path  # Atelier's addition: the path inside a diffusers folder
    return item


def _absolute(request: HttpRequest, url: str) -> str:
    """An absolute URL; storage URLs may be relative to the site root without a leading /."""
    if url.startswith(("http://", "https://")):
        return url
    return request.build_absolute_uri(url if url.startswith("/") else f"/{url}")


def _image_item(request: HttpRequest, image: SampleImage) -> dict[str, Any]:
    return {
        "id": image.pk,
        "url": _absolute(request, image.image.url),
        "nsfw": "None",
        "nsfwLevel": 1,
        "width": None,
        "height": None,
        "hash": None,
        "type": "image",
        "meta": (
            {"prompt": image.prompt, **image.parameters}
            if image.prompt or image.parameters
            else None
        ),
    }


def _version_core(request: HttpRequest, version: ModelVersion) -> dict[str, Any]:
    model = version.model
    files = list(version.files.all())
    return {
        "id": version.pk,
        "modelId": version.model_id,
        "name": version.name,
        "description": version.description_html or None,
        "createdAt": _iso(version.created_at),
        "updatedAt": _iso(version.published_at or version.created_at),
        "publishedAt": _iso(version.published_at),
        "status": STATUS_TO_CIVITAI.get(version.status, "Draft"),
        "trainedWords": list(version.trigger_words),
        "trainingStatus": None,
        "trainingDetails": None,
        "baseModel": FAMILY_TO_CIVITAI.get(version.base_model, "Other"),
        "baseModelType": "Standard",
        "earlyAccessTimeFrame": 0,
        "air": (
            f"urn:air:{version.base_model}:{KIND_TO_AIR.get(model.kind, 'other')}"
            f":atelier:{model.pk}@{version.pk}"
        ),
        "stats": {
            "downloadCount": version.download_count,
            "ratingCount": 0,
            "rating": 0,
            "thumbsUpCount": 0,
            "thumbsDownCount": 0,
        },
        "files": [_file_item(request, version, f) for f in files],
        "images": [_image_item(request, image) for image in version.images.all()],
        "downloadUrl": _download_url(request, version, None),
    }


def _is_nsfw(model: Model) -> bool:
    return any(tag.name == NSFW_TAG for tag in model.tags.all())


def _version_item(request: HttpRequest, version: ModelVersion) -> dict[str, Any]:
    """A version as ``/model-versions/{id}`` answers it: with its model's summary."""
    model = version.model
    return {
        **_version_core(request, version),
        "model": {
            "name": model.name,
            "type": KIND_TO_CIVITAI.get(model.kind, "Other"),
            "nsfw": _is_nsfw(model),
            "poi": False,
        },
    }


def _model_item(request: HttpRequest, model: Model) -> dict[str, Any]:
    versions = getattr(model, "civitai_versions", None)
    if versions is None:
        versions = list(model.versions.all())
    return {
        "id": model.pk,
        "name": model.name,
        "description": model.description_html,
        "type": KIND_TO_CIVITAI.get(model.kind, "Other"),
        "poi": False,
        "nsfw": _is_nsfw(model),
        "nsfwLevel": 1,
        "mode": None,
        "creator": {"username": model.owner.get_username(), "image": None},
        "tags": [tag.name for tag in model.tags.all()],
        "stats": {
            "downloadCount": model.download_count,
            "favoriteCount": 0,
            "thumbsUpCount": 0,
            "thumbsDownCount": 0,
            "commentCount": 0,
            "ratingCount": model.rating_count,
            "rating": round(model.rating_avg, 2),
        },
        "modelVersions": [_version_core(request, v) for v in versions],
    }


# Views ----------------------------------------------------------------------------------------


def _page_url(request: HttpRequest, page: int) -> str:
    query = request.GET.copy()
    query["page"] = str(page)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


@civitai_view
def model_list(request: HttpRequest, user: User) -> HttpResponse:
    params = ModelListInput(data=request.GET)
    if not params.is_valid():
        return civitai_error(400, _first_error(params.errors), "invalid")
    limit, page = params.validated_data["limit"], params.validated_data["page"]
    models = civitai_models(user=user, filters=params.filters())
    total = models.count()
    items = list(models[(page - 1) * limit : page * limit])
    total_pages = math.ceil(total / limit)
    metadata: dict[str, Any] = {
        "totalItems": total,
        "currentPage": page,
        "pageSize": limit,
        "totalPages": total_pages,
    }
    if page < total_pages:
        metadata["nextPage"] = _page_url(request, page + 1)
    if page > 1:
        metadata["prevPage"] = _page_url(request, page - 1)
    return JsonResponse({"items": [_model_item(request, m) for m in items], "metadata": metadata})


@civitai_view
def model_detail(request: HttpRequest, user: User, model_id: str) -> HttpResponse:
    pk = _parse_id(model_id, "model")
    if isinstance(pk, JsonResponse):
        return pk
    model = civitai_model(user=user, model_id=pk)
    if model is None:
        return _not_found(f"No model with id {pk}")
    return JsonResponse(_model_item(request, model))


@civitai_view
def version_detail(request: HttpRequest, user: User, version_id: str) -> HttpResponse:
    pk = _parse_id(version_id, "model version")
    if isinstance(pk, JsonResponse):
        return pk
    version = civitai_version(user=user, version_id=pk)
    if version is None:
        return _not_found(f"No model version with id {pk}")
    return JsonResponse(_version_item(request, version))


@civitai_view
def version_by_hash(request: HttpRequest, user: User, hash_value: str) -> HttpResponse:
    if not HASH_RE.match(hash_value):
        return civitai_error(
            400,
            "A hash is 8 to 64 hexadecimal digits (AutoV1, AutoV2, AutoV3, SHA256, CRC32 "
            "or BLAKE3).",
            "bad_hash",
        )
    version = civitai_version_by_hash(user=user, hash_value=hash_value)
    if version is None:
        return _not_found("Model not found")
    return JsonResponse(_version_item(request, version))
