"""Download routes shared by the web, the REST API and Civitai tools.

``/api/download/models/{version_id}`` (Civitai's shape) answers 302 to a short-lived signed
URL; ``/files/{sha256}/{filename}`` serves the bytes with Range and ETag.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    JsonResponse,
)
from django.views.decorators.http import require_http_methods

from core.auth import bearer_secret, request_user
from core.errors import AccessDeniedError, ApplicationError, error_response
from core.throttles import DownloadThrottle, throttle_view
from registry.access import download_decision
from registry.http import counts_as_download, serve_blob
from registry.models import Blob, DatasetVersion, ModelFile, ModelVersion
from registry.selectors import dataset_version_for
from registry.services.catalog import download_count_increment
from registry.services.downloads import signed_file_url, signed_file_verify


def _denied(user: User | AnonymousUser, status: int, body: dict) -> JsonResponse:
    if status == 403 and not user.is_authenticated:
        body = {
            "code": "authentication_required",
            "message": "Log in or pass an API token to download this file.",
            "details": body.get("details", {}),
        }
        status = 401
    response = JsonResponse(body, status=status)
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


@require_http_methods(["GET", "HEAD"])
@throttle_view(DownloadThrottle)
def model_version_download(request: HttpRequest, version_id: int) -> HttpResponse:
    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if version is None:
        return error_response(
            ApplicationError("No such model version.", code="not_found", status=404)
        )
    user, denied = authorize_download(request, version)
    if denied is not None:
        return denied
    model_file = _pick_file(version, request)
    if model_file is None:
        return error_response(
            ApplicationError("This version has no files.", code="not_found", status=404)
        )
    if counts_as_download(request):
        download_count_increment(target=version)
    url = signed_file_url(blob=model_file.blob, filename=model_file.filename, user_id=user.pk or 0)
    return HttpResponseRedirect(request.build_absolute_uri(url) if url.startswith("/") else url)


@require_http_methods(["GET", "HEAD"])
@throttle_view(DownloadThrottle)
def dataset_version_download(request: HttpRequest, version_id: int) -> HttpResponse:
    user = request_user(request)
    dataset_version = dataset_version_for(version_id, user)
    if dataset_version is None or dataset_version.blob is None:
        return error_response(
            ApplicationError("No such dataset file.", code="not_found", status=404)
        )
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
        return error_response(err)
    blob = Blob.objects.filter(pk=signed.sha256).first()
    if blob is None or not _still_entitled(signed.user_id, signed.sha256):
        return error_response(
            AccessDeniedError("This file is not available to you.", code="forbidden")
        )
    try:
        return serve_blob(request, blob, signed.filename)
    except ApplicationError as err:
        return error_response(err)
