"""Download routes shared by the web, the REST API and Civitai tools.

``/api/download/models/{version_id}`` (Civitai's shape) answers 302 to a short-lived signed
URL; ``/files/{sha256}/{filename}`` serves the bytes with Range and ETag. A diffusers-layout
version downloads as one zip (:mod:`registry.services.archives`) unless ``?type=<path>`` names
one of its files; ``/files/archive/{version_id}/{filename}`` serves that zip.

Errors here carry Civitai's ``error`` key next to Atelier's ``code``/``message``/``details``:
Civitai clients read ``error``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    JsonResponse,
)
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from core.auth import bearer_secret, request_user
from core.errors import AccessDeniedError, ApplicationError
from core.throttles import DownloadThrottle, throttle_view
from registry.access import download_decision
from registry.http import counts_as_download, serve_archive, serve_blob
from registry.models import Blob, DatasetVersion, ModelFile, ModelVersion
from registry.selectors.datasets import dataset_version_for
from registry.services.archives import (
    archive_signed_url,
    archive_signed_verify,
    is_archived,
    version_archive,
)
from registry.services.catalog import download_count_increment
from registry.services.downloads import signed_file_url, signed_file_verify


def _error(err: ApplicationError) -> JsonResponse:
    """Atelier's error body with Civitai's ``error`` key (what Civitai clients print)."""
    return JsonResponse({"error": err.message, **err.as_dict()}, status=err.status_code)


def _civitai_errors(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Every refusal of a download route in Civitai's shape: ``{"error": ...}`` (Atelier's
    keys alongside), the method refusal and the throttle's included. The routes take GET and
    HEAD only, so CSRF has nothing to guard: another method is this JSON 405, not the CSRF
    failure page."""

    @csrf_exempt
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if response.status_code == 405 and not getattr(response, "content", b""):
            refused = JsonResponse(
                {
                    "error": f"Method {request.method} is not allowed here.",
                    "code": "method_not_allowed",
                    "message": f"Method {request.method} is not allowed here.",
                    "details": {},
                },
                status=405,
            )
            refused["Allow"] = response.get("Allow", "GET, HEAD")
            return refused
        if response.status_code >= 400 and isinstance(response, JsonResponse):
            body = json.loads(response.content or b"{}")
            if isinstance(body, dict) and "error" not in body:
                message = body.get("message") or body.get("detail") or "Request refused."
                response.content = json.dumps({"error": message, **body}).encode()
                response["Content-Length"] = str(len(response.content))
        return response

    return wrapped


def _denied(user: User | AnonymousUser, status: int, body: dict) -> JsonResponse:
    if status == 403 and not user.is_authenticated:
        body = {
            "code": "authentication_required",
            "message": "Log in or pass an API token to download this file.",
            "details": body.get("details", {}),
        }
        status = 401
    response = JsonResponse({"error": body.get("message", ""), **body}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


def authorize_download(
    request: HttpRequest, target: ModelVersion | DatasetVersion
) -> tuple[User | AnonymousUser, JsonResponse | None]:
    """The requesting user, and an error response when they may not download ``target``."""
    user = request_user(request)
    if bearer_secret(request) and not user.is_authenticated:
        return user, _denied(user, 401, {"code": "bad_token", "message": "Invalid API token."})
    decision = download_decision(user, target)
    if decision.allowed:
        return user, None
    body = {"code": decision.code, "message": decision.message, "details": decision.details}
    return user, _denied(user, decision.status, body)


def _wants_archive(version: ModelVersion, request: HttpRequest) -> bool:
    """A diffusers folder downloads as its zip unless ``type`` names one of its files."""
    if not is_archived(version):
        return False
    return request.GET.get("type", "").lower() in ("", "model", "archive")


def _pick_file(version: ModelVersion, request: HttpRequest) -> ModelFile | None:
    files = list(version.files.select_related("blob").all())
    wanted_type = request.GET.get("type", "").lower()
    wanted_format = request.GET.get("format", "").lower()
    for f in files:
        aliases = (f.format, f.format.replace("pickle", "pickletensor"))
        if wanted_format and wanted_format not in aliases:
            continue
        if wanted_type and wanted_type not in ("model",) and wanted_type != f.path.lower():
            continue
        return f
    return files[0] if files else None


@_civitai_errors
@require_http_methods(["GET", "HEAD"])
@throttle_view(DownloadThrottle)
def model_version_download(request: HttpRequest, version_id: int) -> HttpResponse:
    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if version is None:
        return _error(ApplicationError("No such model version.", code="not_found", status=404))
    user, denied = authorize_download(request, version)
    if denied is not None:
        return denied
    if _wants_archive(version, request):
        files = list(version.files.select_related("blob"))
        if not files:
            return _error(
                ApplicationError("This version has no files.", code="not_found", status=404)
            )
        archive = version_archive(version=version, files=files)
        if counts_as_download(request):
            download_count_increment(target=version)
        url = archive_signed_url(archive=archive, user_id=user.pk or 0)
        return HttpResponseRedirect(request.build_absolute_uri(url))
    model_file = _pick_file(version, request)
    if model_file is None:
        return _error(ApplicationError("This version has no files.", code="not_found", status=404))
    if counts_as_download(request):
        download_count_increment(target=version)
    url = signed_file_url(blob=model_file.blob, filename=model_file.filename, user_id=user.pk or 0)
    return HttpResponseRedirect(request.build_absolute_uri(url) if url.startswith("/") else url)


@_civitai_errors
@require_http_methods(["GET", "HEAD"])
@throttle_view(DownloadThrottle)
def dataset_version_download(request: HttpRequest, version_id: int) -> HttpResponse:
    user = request_user(request)
    dataset_version = dataset_version_for(version_id, user)
    if dataset_version is None or dataset_version.blob is None:
        return _error(ApplicationError("No such dataset file.", code="not_found", status=404))
    user, denied = authorize_download(request, dataset_version)
    if denied is not None:
        return denied
    if counts_as_download(request):
        download_count_increment(target=dataset_version)
    url = signed_file_url(
        blob=dataset_version.blob, filename=dataset_version.filename, user_id=user.pk or 0
    )
    return HttpResponseRedirect(request.build_absolute_uri(url) if url.startswith("/") else url)


def _still_entitled(user_id: int, sha256: str) -> bool:
    """The signed URL's user may still download some version or dataset holding the blob."""
    from django.contrib.auth import get_user_model

    user: User | AnonymousUser = (
        get_user_model().objects.filter(pk=user_id, is_active=True).first() or AnonymousUser()
    )
    for model_file in ModelFile.objects.filter(blob_id=sha256).select_related(
        "version", "version__model"
    ):
        if download_decision(user, model_file.version).allowed:
            return True
    for dataset_version in DatasetVersion.objects.filter(blob_id=sha256).select_related("dataset"):
        if download_decision(user, dataset_version).allowed:
            return True
    return False


@_civitai_errors
@require_http_methods(["GET", "HEAD"])
@throttle_view(DownloadThrottle)
def signed_file(request: HttpRequest, sha256: str, filename: str) -> HttpResponseBase:
    try:
        signed = signed_file_verify(
            sha256=sha256,
            filename=filename,
            uid=request.GET.get("uid", ""),
            expires=request.GET.get("expires", ""),
            signature=request.GET.get("signature", ""),
        )
    except AccessDeniedError as err:
        return _error(err)
    blob = Blob.objects.filter(pk=signed.sha256).first()
    if blob is None or not _still_entitled(signed.user_id, signed.sha256):
        return _error(AccessDeniedError("This file is not available to you.", code="forbidden"))
    try:
        return serve_blob(request, blob, signed.filename)
    except ApplicationError as err:
        return _error(err)


def _user(user_id: int) -> User | AnonymousUser:
    from django.contrib.auth import get_user_model

    found: User | None = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return found or AnonymousUser()


@_civitai_errors
@require_http_methods(["GET", "HEAD"])
@throttle_view(DownloadThrottle)
def archive_file(request: HttpRequest, version_id: int, filename: str) -> HttpResponseBase:
    """A diffusers version's zip, to the user its signed link names, while still entitled."""
    try:
        user_id = archive_signed_verify(
            version_id=version_id,
            filename=filename,
            uid=request.GET.get("uid", ""),
            expires=request.GET.get("expires", ""),
            signature=request.GET.get("signature", ""),
        )
    except AccessDeniedError as err:
        return _error(err)
    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if (
        version is None
        or not is_archived(version)
        or not download_decision(_user(user_id), version).allowed
    ):
        return _error(AccessDeniedError("This file is not available to you.", code="forbidden"))
    archive = version_archive(version=version)
    if archive.filename != filename:  # the version was renamed since the link was signed
        return _error(AccessDeniedError("This download link is not valid.", code="bad_signature"))
    try:
        return serve_archive(request, archive)
    except ApplicationError as err:
        return _error(err)
