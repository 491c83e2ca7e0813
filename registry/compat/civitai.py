"""A subset of Civitai's REST API v1, with Civitai's field names, for tools that speak it.

Civitai clients take a base URL: give them ``<site>/civitai``. The routes are

- ``GET /civitai/api/v1/models`` (``limit``, ``page``, ``query``, ``tag``, ``username``,
  ``types``, ``sort``, ``nsfw``, ``baseModels``) -> ``{"items": [...], "metadata": {...}}``;
- ``GET /civitai/api/v1/models/{id}``;
- ``GET /civitai/api/v1/model-versions/{id}`` and ``.../model-versions/by-hash/{hash}``
  (SHA256, AutoV1, AutoV2, AutoV3, CRC32 or BLAKE3, any case);
- ``POST /civitai/api/v1/model-versions/by-hash`` (a JSON array of up to 100 SHA256 hashes)
  -> the published versions holding them;
- ``GET /civitai/api/v1/model-versions/mini/{id}`` (what generators read: AIR, file, hashes,
  download URLs) and ``GET /civitai/api/v1/enums``.

Lists page as Civitai's current API does: without ``page``, ``metadata`` holds ``nextCursor``
and ``nextPage`` (a URL with ``cursor=``), and ``?cursor=`` continues after the last model of
the previous page (a keyset, so models published meanwhile neither repeat nor vanish); with
``page``, the page-based ``totalItems``/``currentPage``/``pageSize``/``totalPages`` and
``nextPage``. Lists show published versions only, whoever asks.

The ``model-versions`` routes and the enums are also mounted at ``/api/v1/...`` (Atelier's own
API uses ``/api/v1/versions/{id}``, so nothing clashes), which serves tools that hard-code the
path and only let the host be changed. ``/api/v1/models`` itself is Atelier's own API. Any other
path under ``/civitai/`` or ``/api/v1/model-versions/`` is a JSON 404.
``downloadUrl`` is ``/api/download/models/{versionId}``, the same path as Civitai's, which
redirects to a short-lived signed URL whose ``Content-Disposition`` reads
``attachment; filename="<name>"`` as Civitai's does.

A diffusers-layout version (a folder of files) shows as Civitai shows such models: one file of
format ``Diffusers``, a zip of the folder built as it is sent, with its own hashes
(:mod:`registry.services.archives`). ``?type=<path>`` on its download URL still fetches one of
its files.

Mapping: a model's ``nsfw`` is its ``nsfw`` tag; ``baseModel`` is the version's Civitai name
(``Pony``, ``Illustrious``, ``NoobAI``..., detected or set by the creator), else the family's
usual one (``SD 1.5``, ``SD 2.1``, ``SDXL 1.0``, ...); ``baseModels=Pony`` lists models with a
Pony version, ``baseModels=SDXL 1.0`` every SDXL one; ratings and download counts are Atelier's.
Errors are ``{"error": message}`` as on Civitai (with Atelier's ``code``/``message``/``details``
alongside); a bearer token authenticates as on Civitai. ``?token=`` (which Civitai clients
append to download links) is taken on the download route only and refused here with 401, so
that tokens stay out of access logs (see :mod:`core.auth`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import serializers

from core.auth import QUERY_TOKEN_REFUSED, bearer_secret, query_token_refused, request_user
from registry.compat.selectors import (
    NSFW_TAG,
    CivitaiModelFilters,
    civitai_model,
    civitai_models,
    civitai_models_after,
    civitai_version,
    civitai_version_by_hash,
    civitai_versions,
    civitai_versions_by_sha256,
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
from registry.services.archives import (
    ARCHIVE_FORMAT,
    archive_hashes,
    archive_versions_by_hash,
    is_archived,
    version_archive,
)
from sdcore.detect import CIVITAI_BASE_MODELS

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


def _civitai(methods: tuple[str, ...]) -> Callable[[View], View]:
    """Only ``methods`` (JSON 405 otherwise); the view gets the requesting user after
    ``request``. A token that is present but unknown is refused, as on Civitai."""

    def decorate(view: View) -> View:
        @csrf_exempt  # token or anonymous clients, never a session form
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = civitai_error(
                    405, f"Method {request.method} is not allowed here.", "method_not_allowed"
                )
                response["Allow"] = ", ".join(methods)
                return response
            if query_token_refused(request):
                return civitai_error(401, QUERY_TOKEN_REFUSED, "token_in_query")
            if _session_post_without_csrf(request):
                return civitai_error(403, "CSRF check failed for a logged-in session.", "csrf")
            user = request_user(request)
            if bearer_secret(request) and not user.is_authenticated:
                return civitai_error(401, "Invalid or revoked API token.", "bad_token")
            return view(request, user, *args, **kwargs)

        return wrapper

    return decorate


def _session_post_without_csrf(request: HttpRequest) -> bool:
    """A POST carried by a session cookie (not a token) must pass Django's CSRF check, as the
    REST API's do; token and anonymous clients (every Civitai client) have no session."""
    if request.method != "POST" or bearer_secret(request):
        return False
    session_user = getattr(request, "user", None)
    if session_user is None or not session_user.is_authenticated:
        return False
    check = CsrfViewMiddleware(lambda _request: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda _request: HttpResponse(), (), {}) is not None


civitai_view = _civitai(("GET", "HEAD"))
civitai_post_view = _civitai(("POST",))


@csrf_exempt
def unknown_route(request: HttpRequest) -> HttpResponse:
    """Any other path under Civitai's prefixes: a JSON 404, never the site's HTML page."""
    return _not_found(f"No Civitai API route at {request.path}")


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
    page = serializers.IntegerField(min_value=1, max_value=100_000, required=False)
    cursor = serializers.CharField(max_length=200, required=False)
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

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "page" in attrs and "cursor" in attrs:
            raise serializers.ValidationError({"cursor": "Use page or cursor, not both."})
        if "cursor" in attrs:
            values = _cursor_decode(attrs["cursor"], SORTS[attrs["sort"]])
            if values is None:
                raise serializers.ValidationError(
                    {"cursor": "Not a cursor this list gave (use metadata.nextCursor as is)."}
                )
            attrs["after"] = values
        return attrs

    def base_model_names(self) -> tuple[str, ...]:
        """The descendants asked for by name (``Pony``, ``Illustrious``...): they match the
        versions labelled so, where ``SDXL 1.0`` matches the whole SDXL family."""
        names = (_descendant(name) for name in self.validated_data["baseModels"])
        return tuple(dict.fromkeys(n for n in names if n is not None))

    def filters(self) -> CivitaiModelFilters:
        data = self.validated_data
        # A type filter that names only types Atelier has no models of matches nothing.
        kinds = tuple(kind for name in data["types"] if (kind := CIVITAI_TYPES[name]) is not None)
        families = tuple(
            dict.fromkeys(_family(name) for name in data["baseModels"] if _descendant(name) is None)
        )
        if self.base_model_names():  # a descendant's name: matched by name in model_list
            families = ()
        return CivitaiModelFilters(
            query=data["query"].strip(),
            tag=data["tag"].strip(),
            username=data["username"].strip(),
            kinds=kinds if data["types"] else None,
            families=families if families else None,
            nsfw=data["nsfw"],
            order=SORTS[data["sort"]],
        )


# The sort fields a cursor holds, and how each is read back.
_CURSOR_READERS: dict[str, Callable[[str], Any]] = {
    "rating_avg": float,
    "rating_count": int,
    "download_count": int,
    "created_at": datetime.fromisoformat,
    "pk": int,
}


def _cursor_encode(model: Model, order: Sequence[str]) -> str:
    """The sort values of the last model of a page, ``|``-separated (as Civitai's look)."""
    parts = []
    for name in order:
        value = getattr(model, name.removeprefix("-"))
        parts.append(value.isoformat() if isinstance(value, datetime) else repr(value))
    return "|".join(parts)


def _cursor_decode(raw: str, order: Sequence[str]) -> list[Any] | None:
    parts = raw.split("|")
    if len(parts) != len(order):
        return None
    values: list[Any] = []
    for name, part in zip(order, parts, strict=True):
        try:
            value = _CURSOR_READERS[name.removeprefix("-")](part)
        except (ValueError, OverflowError):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, datetime) and value.tzinfo is None:
            return None
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            return None
        values.append(value)
    return values


def _descendant(civitai_name: str) -> str | None:
    """The canonical name when ``civitai_name`` is a family's non-default Civitai name
    (``pony`` -> ``Pony``), else None (a family name such as ``SDXL 1.0``, or unknown)."""
    lowered = civitai_name.strip().lower()
    for names in CIVITAI_BASE_MODELS.values():
        for name in names[1:]:
            if name.lower() == lowered and name != "Other":
                return name
    return None


def civitai_base_model_name(version: ModelVersion) -> str:
    """``baseModel`` as Civitai writes it: the version's own name (``Pony``) when it belongs to
    its family or is the creator's own, else the family's usual name."""
    family = version.base_model
    name = (version.base_model_name or "").strip()
    own = CIVITAI_BASE_MODELS.get(family, ())
    others = {n for f, names in CIVITAI_BASE_MODELS.items() if f != family for n in names}
    if name and (name in own or name not in others):
        return name
    return FAMILY_TO_CIVITAI.get(family, "Other")


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
    return _hash_dict(model_file.blob)


def _hash_dict(blob: Any) -> dict[str, str]:
    """Civitai's hash names, uppercase, for a blob or an archive's ``FileHashes``."""
    hashes = {
        "AutoV1": blob.autov1,
        "AutoV2": blob.autov2,
        "SHA256": blob.sha256,
        "CRC32": blob.crc32,
        "BLAKE3": blob.blake3,
        "AutoV3": (blob.autov3 or "")[:12],
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


def _archive_item(request: HttpRequest, version: ModelVersion, files: list[ModelFile]) -> dict:
    """A diffusers folder as Civitai shows one: a single zip of format "Diffusers"."""
    archive = version_archive(version=version, files=files)
    return {
        "id": archive.version_id,  # one archive per version; no ModelFile row behind it
        "name": archive.filename,
        "sizeKB": round(archive.size / 1024, 4),
        "type": "Model",
        "primary": True,
        "metadata": {"fp": None, "size": None, "format": ARCHIVE_FORMAT},
        "pickleScanResult": "Success",
        "pickleScanMessage": "No pickle imports",
        "hashes": _hash_dict(archive_hashes(archive=archive)),
        "downloadUrl": _download_url(request, version, None),
    }


def _files(request: HttpRequest, version: ModelVersion) -> list[dict[str, Any]]:
    files = list(version.files.all())
    if is_archived(version) and files:
        return [_archive_item(request, version, files)]
    return [_file_item(request, version, f) for f in files]


def _images(request: HttpRequest, version: ModelVersion) -> list[dict[str, Any]]:
    """The version's sample images in their order, the cover first (clients show the first):
    the cover is the first image that is not the "base model alone" half of a pair."""
    images = list(version.images.all())
    cover = next((i for i in images if getattr(i, "role", "") != "base"), None)
    if cover is not None:
        images.remove(cover)
        images.insert(0, cover)
    return [_image_item(request, image) for image in images]


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
        "baseModel": civitai_base_model_name(version),
        "baseModelType": "Standard",
        "earlyAccessTimeFrame": 0,
        "nsfwLevel": 1,
        "availability": "Public",
        "uploadType": "Created",
        "usageControl": "Download",
        "vaeId": None,  # Atelier versions do not name a separate VAE
        "air": _air(version),
        "stats": {
            "downloadCount": version.download_count,
            "ratingCount": 0,
            "rating": 0,
            "thumbsUpCount": 0,
            "thumbsDownCount": 0,
        },
        "files": _files(request, version),
        "images": _images(request, version),
        "downloadUrl": _download_url(request, version, None),
    }


def _air(version: ModelVersion) -> str:
    model = version.model
    return (
        f"urn:air:{version.base_model}:{KIND_TO_AIR.get(model.kind, 'other')}"
        f":atelier:{model.pk}@{version.pk}"
    )


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


def _list_url(request: HttpRequest, **changes: str) -> str:
    query = request.GET.copy()
    query.pop("token", None)
    for key, value in changes.items():
        query[key] = value
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def _page_url(request: HttpRequest, page: int) -> str:
    return _list_url(request, page=str(page))


@civitai_view
def model_list(request: HttpRequest, user: User) -> HttpResponse:
    params = ModelListInput(data=request.GET)
    if not params.is_valid():
        return civitai_error(400, _first_error(params.errors), "invalid")
    data = params.validated_data
    filters = params.filters()
    models = civitai_models(user=user, filters=filters)
    if names := params.base_model_names():
        asked = Q()
        for name in names:
            asked |= Q(base_model_name__iexact=name)
        if families := tuple(
            dict.fromkeys(_family(n) for n in data["baseModels"] if _descendant(n) is None)
        ):
            asked |= Q(base_model__in=families)
        matching = ModelVersion.objects.filter(asked, status=VersionStatus.PUBLISHED)
        models = models.filter(pk__in=matching.values("model_id"))
    if "page" not in data:  # cursor-based, as Civitai's current API
        limit = data["limit"]
        if "after" in data:
            models = civitai_models_after(models, order=filters.order, values=data["after"])
        items = list(models[: limit + 1])
        metadata: dict[str, Any] = {}
        if len(items) > limit:
            items = items[:limit]
            cursor = _cursor_encode(items[-1], filters.order)
            metadata = {"nextCursor": cursor, "nextPage": _list_url(request, cursor=cursor)}
        return JsonResponse(
            {"items": [_model_item(request, m) for m in items], "metadata": metadata}
        )
    limit, page = data["limit"], data["page"]
    total = models.count()
    items = list(models[(page - 1) * limit : page * limit])
    total_pages = math.ceil(total / limit)
    metadata = {
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
    if version is None:  # a diffusers folder's zip, by its own hashes
        archived = _archived_versions(user, hash_value)
        version = archived[0] if archived else None
    if version is None:
        return _not_found("Model not found")
    return JsonResponse(_version_item(request, version))


def _archived_versions(user: User, hash_value: str) -> list[ModelVersion]:
    """Published versions whose archive has that hash *now* (the cache's record of it may
    predate a change of the version's files)."""
    wanted = hash_value.lower()
    found = []
    for version in civitai_versions(user=user, version_ids=archive_versions_by_hash(wanted)):
        files = list(version.files.all())
        if not is_archived(version) or not files:
            continue
        hashes = archive_hashes(archive=version_archive(version=version, files=files))
        values = (hashes.sha256, hashes.autov1, hashes.autov2, hashes.crc32, hashes.blake3)
        if wanted in values:
            found.append(version)
    return found


MAX_HASHES = 100
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
BAD_HASHES = "Request must include an array of SHA256 Hashes."


@civitai_post_view
def versions_by_hashes(request: HttpRequest, user: User) -> HttpResponse:
    """``POST .../model-versions/by-hash``: a JSON array of up to 100 SHA256 hashes -> the
    published versions holding them (one entry per version, as Civitai answers)."""
    try:
        hashes = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        return civitai_error(400, f"{BAD_HASHES} The body is not JSON.", "invalid")
    if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
        return civitai_error(400, f"{BAD_HASHES} Send a JSON array of strings.", "invalid")
    if len(hashes) > MAX_HASHES:
        return civitai_error(400, f"{BAD_HASHES} Too many hashes (at most 100).", "invalid")
    bad = next((h for h in hashes if not SHA256_RE.match(h)), None)
    if bad is not None:
        return civitai_error(400, f"{BAD_HASHES} Invalid hash: {bad[:80]!r}.", "invalid")
    versions = {v.pk: v for v in civitai_versions_by_sha256(user=user, hashes=hashes)}
    for value in hashes:  # a diffusers folder's zip, by its own SHA256
        for version in _archived_versions(user, value):
            versions.setdefault(version.pk, version)
    items = [_version_item(request, versions[pk]) for pk in sorted(versions)]
    return JsonResponse(items, safe=False)


@civitai_view
def version_mini(request: HttpRequest, user: User, version_id: str) -> HttpResponse:
    """``GET .../model-versions/mini/{id}``: the primary file of a version, as generators
    read it (AIR, name, size, hashes, download URLs)."""
    pk = _parse_id(version_id, "model version")
    if isinstance(pk, JsonResponse):
        return pk
    version = civitai_version(user=user, version_id=pk)
    if version is None:
        return _not_found("Model not found")
    files = _files(request, version)
    primary = next((f for f in files if f["primary"]), files[0] if files else None)
    if primary is None:
        return _not_found("Missing model file")
    model = version.model
    return JsonResponse(
        {
            "air": _air(version),
            "versionName": version.name,
            "modelName": model.name,
            "userId": model.owner_id,
            "baseModel": civitai_base_model_name(version),
            "availability": "Public",
            "publishedAt": _iso(version.published_at),
            "size": primary["sizeKB"],
            "fileType": primary["type"],
            "fileName": primary["name"],
            "hashes": primary["hashes"],
            "downloadUrls": [primary["downloadUrl"]],
            "format": primary["metadata"]["format"],
            "canGenerate": False,
            "requireAuth": False,
            "checkPermission": False,
            "minor": False,
            "sfwOnly": False,
        }
    )


@civitai_view
def enums(request: HttpRequest, user: User) -> HttpResponse:
    """``GET .../enums``: the values the other routes take and answer, Civitai's names."""
    return JsonResponse(
        {
            "ModelType": list(CIVITAI_TYPES),
            "ModelFileType": ["Model", "Config", "Archive"],
            "BaseModel": list(dict.fromkeys(FAMILY_TO_CIVITAI.values())),
            "BaseModelType": ["Standard"],
        }
    )
