"""A subset of the Hugging Face Hub API, so that ``huggingface_hub`` and diffusers load from us.

Point the tools at the site and use ``owner/model-slug`` as the repository id::

    hf_hub_download("alice/tiny-sd-15", "unet/config.json", endpoint="https://atelier.example")
    HF_ENDPOINT=https://atelier.example python -c \
        'from diffusers import StableDiffusionPipeline as P; P.from_pretrained("alice/tiny-sd-15")'

A revision is a version name, ``main`` (the newest published version; a diffusers folder is
preferred over a single file) or the 40-hex commit id of a version (:func:`version_commit`).
Routes, as ``huggingface_hub`` builds them (``constants.HUGGINGFACE_CO_URL_TEMPLATE``,
``HfApi.model_info`` and ``HfApi.list_repo_tree``):

- ``GET /api/models/{owner}/{slug}[/revision/{rev}]``: ``ModelInfo`` JSON with ``siblings``;
- ``GET /api/models/{owner}/{slug}/tree/{rev}[/{path}][?recursive=true]``: tree entries;
- ``HEAD|GET /{owner}/{slug}/resolve/{rev}/{path}``: the bytes, served directly (no redirect)
  with Range, ``ETag`` = ``X-Linked-Etag`` = the quoted SHA-256, ``X-Linked-Size`` and
  ``X-Repo-Commit``.

Every file is described as a Git LFS file (``lfs.oid`` is its SHA-256, ``oid`` the Git hash
of its LFS pointer), so each file's ETag is its SHA-256, as the Hub's LFS files have.

Errors carry ``X-Error-Code`` as the Hub sends it, which ``huggingface_hub`` turns into its
typed errors: ``RepoNotFound`` (401 for anonymous callers, whether the repository is private
or missing, so that its existence does not leak; 404 for signed-in callers),
``RevisionNotFound`` and ``EntryNotFound`` (404), ``GatedRepo`` (401 anonymous, 403 signed in)
when the download policy refuses the file. Tokens come as ``Authorization: Bearer atl_...``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from core.auth import bearer_secret, request_user
from core.errors import ApplicationError
from core.throttles import DownloadThrottle, throttle_view
from registry.access import can_view_model, download_decision
from registry.compat.selectors import (
    MAIN_REVISION,
    hf_model,
    hf_revision,
    hf_versions,
    version_commit,
)
from registry.http import counts_as_download, serve_blob
from registry.models import (
    Blob,
    FileFormat,
    FileLayout,
    Model,
    ModelFile,
    ModelKind,
    ModelVersion,
    Visibility,
)
from registry.services.catalog import download_count_increment

User = AuthUser | AnonymousUser
View = Callable[..., HttpResponseBase]

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


# Errors ---------------------------------------------------------------------------------------


# X-Error-Code values huggingface_hub turns into typed errors -> Atelier's error codes.
HUB_ERROR_CODES = {
    "RepoNotFound": "not_found",
    "RevisionNotFound": "revision_not_found",
    "EntryNotFound": "entry_not_found",
    "GatedRepo": "gated",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _hf_error(
    status: int,
    error_code: str,
    message: str,
    *,
    code: str = "",
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    """An error as the Hub sends it: JSON ``error`` plus ``X-Error-Code``/``X-Error-Message``.

    ``error_code`` is the Hub's (empty for errors it has no code for); the body also has
    Atelier's ``code``/``message``/``details`` shape.
    """
    code = code or HUB_ERROR_CODES.get(error_code, "error")
    body = {"error": message, "code": code, "message": message, "details": {}}
    response = JsonResponse(body, status=status)
    if error_code:
        response["X-Error-Code"] = error_code
    # Messages may quote the path; a header cannot hold control characters.
    response["X-Error-Message"] = _CONTROL.sub(" ", message)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="Authentication required", charset="UTF-8"'
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def _repo_not_found(user: User) -> JsonResponse:
    if user.is_authenticated:
        return _hf_error(404, "RepoNotFound", "Repository not found.")
    return _hf_error(
        401,
        "RepoNotFound",
        "Repository not found. If it is private, pass a token of an account that may see it.",
    )


def get_or_head_only(view: View) -> View:
    """GET and HEAD only; anything else is a JSON 405 (not a CSRF page: nothing is written)."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method not in ("GET", "HEAD"):
            response = _hf_error(
                405, "", f"Method {request.method} is not allowed here.", code="method_not_allowed"
            )
            response["Allow"] = "GET, HEAD"
            return response
        return view(request, *args, **kwargs)

    return wrapper


# Context --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoContext:
    user: User
    model: Model
    versions: list[ModelVersion]


def _open_repo(request: HttpRequest, owner: str, slug: str) -> RepoContext | JsonResponse:
    user = request_user(request)
    if bearer_secret(request) and not user.is_authenticated:
        return _hf_error(401, "", INVALID_CREDENTIALS, code="bad_token")
    model = hf_model(owner=owner, slug=slug)
    if model is None or not can_view_model(user, model):
        return _repo_not_found(user)
    return RepoContext(user=user, model=model, versions=hf_versions(model=model, user=user))


def _open_revision(
    request: HttpRequest, owner: str, slug: str, revision: str
) -> tuple[RepoContext, ModelVersion] | JsonResponse:
    ctx = _open_repo(request, owner, slug)
    if isinstance(ctx, JsonResponse):
        return ctx
    version = hf_revision(ctx.versions, revision)
    if version is None:
        return _hf_error(
            404, "RevisionNotFound", f"Invalid rev id: {revision}. No such version of this model."
        )
    return ctx, version


# Shapes ---------------------------------------------------------------------------------------


def _hub_datetime(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _pointer(blob: Blob) -> bytes:
    return LFS_POINTER.format(sha256=blob.sha256, size=blob.size).encode()


def _git_oid(data: bytes, kind: str = "blob") -> str:
    return hashlib.sha1(f"{kind} {len(data)}\0".encode() + data).hexdigest()


def _lfs(blob: Blob) -> dict[str, Any]:
    return {"oid": blob.sha256, "size": blob.size, "pointerSize": len(_pointer(blob))}


def _sibling(model_file: ModelFile) -> dict[str, Any]:
    blob = model_file.blob
    return {
        "rfilename": model_file.path,
        "size": blob.size,
        "blobId": _git_oid(_pointer(blob)),
        "lfs": {"sha256": blob.sha256, "size": blob.size, "pointerSize": len(_pointer(blob))},
    }


def _sorted_files(version: ModelVersion) -> list[ModelFile]:
    return sorted(version.files.all(), key=lambda f: f.path)


def _is_gated(user: User, version: ModelVersion) -> bool:
    return not download_decision(user, version).allowed


def _model_info(ctx: RepoContext, version: ModelVersion) -> dict[str, Any]:
    model = ctx.model
    files = _sorted_files(version)
    tag_names = [t.name for t in model.tags.all()]
    is_diffusers = version.layout == FileLayout.DIFFUSERS
    library = "diffusers" if is_diffusers else None
    extra_tags = []
    if is_diffusers:
        extra_tags.append("diffusers")
    if any(f.format == FileFormat.SAFETENSORS for f in files):
        extra_tags.append("safetensors")
    if model.kind == ModelKind.CHECKPOINT:
        extra_tags += ["stable-diffusion", "text-to-image"]
    if version.license_code:
        extra_tags.append(f"license:{version.license_code}")
    moment = version.published_at or version.created_at
    return {
        "_id": f"atelier-model-{model.pk}",
        "id": model.repo_id,
        "modelId": model.repo_id,
        "author": model.owner.get_username(),
        "sha": version_commit(version),
        "revision": version.name,
        "lastModified": _hub_datetime(moment),
        "createdAt": _hub_datetime(model.created_at),
        "private": model.visibility == Visibility.PRIVATE,
        "gated": "manual" if _is_gated(ctx.user, version) else False,
        "disabled": False,
        "downloads": model.download_count,
        "likes": 0,
        "library_name": library,
        "pipeline_tag": "text-to-image" if model.kind == ModelKind.CHECKPOINT else None,
        "tags": list(dict.fromkeys(tag_names + extra_tags)),
        "cardData": {
            "license": version.license_code or None,
            "library_name": library,
            "tags": tag_names,
        },
        "siblings": [_sibling(f) for f in files],
        "usedStorage": sum(f.blob.size for f in files),
        "spaces": [],
    }


def _tree_entries(
    version: ModelVersion, base: str, *, recursive: bool
) -> list[dict[str, Any]] | None:
    """Entries under ``base`` (a folder, or "" for the root); ``None`` when it is no folder."""
    prefix = f"{base}/" if base else ""
    commit = version_commit(version)
    entries: dict[str, dict[str, Any]] = {}
    for model_file in _sorted_files(version):
        if not model_file.path.startswith(prefix):
            continue
        rest = model_file.path[len(prefix) :]
        parts = rest.split("/")
        folders = parts[:-1] if recursive else parts[:1] if len(parts) > 1 else []
        for depth in range(1, len(folders) + 1):
            folder = prefix + "/".join(folders[:depth])
            entries[folder] = {
                "type": "directory",
                "oid": _git_oid(f"{commit}:{folder}".encode(), "tree"),
                "size": 0,
                "path": folder,
            }
        if recursive or len(parts) == 1:
            blob = model_file.blob
            entries[model_file.path] = {
                "type": "file",
                "oid": _git_oid(_pointer(blob)),
                "size": blob.size,
                "path": model_file.path,
                "lfs": _lfs(blob),
            }
    if base and not entries:
        return None
    return [entries[path] for path in sorted(entries)]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


# Views ----------------------------------------------------------------------------------------


@get_or_head_only
def model_info(
    request: HttpRequest, owner: str, slug: str, revision: str | None = None
) -> HttpResponse:
    opened = _open_revision(request, owner, slug, revision or MAIN_REVISION)
    if isinstance(opened, JsonResponse):
        return opened
    ctx, version = opened
    return JsonResponse(_model_info(ctx, version))


@get_or_head_only
def tree(
    request: HttpRequest, owner: str, slug: str, revision: str, path: str | None = None
) -> HttpResponse:
    opened = _open_revision(request, owner, slug, revision)
    if isinstance(opened, JsonResponse):
        return opened
    _, version = opened
    base = (path or "").strip("/")
    entries = _tree_entries(version, base, recursive=_truthy(request.GET.get("recursive")))
    if entries is None:
        return _hf_error(
            404,
            "EntryNotFound",
            f"{base} is not a folder of this revision.",
            headers={"X-Repo-Commit": version_commit(version)},
        )
    return JsonResponse(entries, safe=False)


def _counts_as_download(request: HttpRequest, model_file: ModelFile) -> bool:
    """One download per fetch of the version's primary file (a resumed tail is not another)."""
    return model_file.is_primary and counts_as_download(request)


@get_or_head_only
@throttle_view(DownloadThrottle)
def resolve(
    request: HttpRequest, owner: str, slug: str, revision: str, path: str
) -> HttpResponseBase:
    opened = _open_revision(request, owner, slug, revision)
    if isinstance(opened, JsonResponse):
        return opened
    ctx, version = opened
    commit = version_commit(version)
    wanted = path.strip("/")
    model_file = next((f for f in version.files.all() if f.path == wanted), None)
    if model_file is None:
        return _hf_error(
            404,
            "EntryNotFound",
            f"{wanted} does not exist in revision {revision}.",
            headers={"X-Repo-Commit": commit},
        )
    decision = download_decision(ctx.user, version)
    if not decision.allowed:
        if decision.status == 404:
            return _repo_not_found(ctx.user)
        status = 403 if ctx.user.is_authenticated else 401
        message = decision.message or "Access to this model's files is restricted."
        return _hf_error(status, "GatedRepo", message, headers={"X-Repo-Commit": commit})
    blob = model_file.blob
    try:
        response = serve_blob(
            request,
            blob,
            model_file.filename,
            extra_headers={
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{blob.sha256}"',
                "X-Linked-Size": str(blob.size),
            },
        )
    except ApplicationError as err:
        headers = {"X-Repo-Commit": commit}
        if err.status_code == 416:
            headers["Content-Range"] = f"bytes */{blob.size}"
        return _hf_error(err.status_code, "", err.message, code=err.code, headers=headers)
    if _counts_as_download(request, model_file):
        download_count_increment(target=version)
    return response
