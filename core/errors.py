"""One application error type and one JSON error shape for every API.

Every error an API returns looks like ``{"code": ..., "message": ..., "details": ...}``.
Services raise :class:`ApplicationError` (or a subclass) with a stable ``code``; the DRF
exception handler below turns it, validation errors, 401/403/404 and throttling into that shape.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response


class ApplicationError(Exception):
    """A business-rule failure that the caller can act on."""

    status_code = 400
    code = "invalid"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status_code = status
        self.details = details or {}

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class NotFoundError(ApplicationError):
    status_code = 404
    code = "not_found"


class AccessDeniedError(ApplicationError):
    status_code = 403
    code = "forbidden"


class ConflictError(ApplicationError):
    status_code = 409
    code = "conflict"


class PayloadTooLargeError(ApplicationError):
    status_code = 413
    code = "too_large"


def error_response(err: ApplicationError) -> JsonResponse:
    """The JSON response for an error raised outside DRF (compatible routes, downloads)."""
    return JsonResponse(err.as_dict(), status=err.status_code)


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            text = _first_message(value)
            return text if key == "non_field_errors" else f"{key}: {text}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    from rest_framework.views import exception_handler  # not at import: DRF imports our auth

    if isinstance(exc, ApplicationError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        body = {
            "code": "invalid",
            "message": _first_message(exc.detail),
            "details": exc.detail if isinstance(exc.detail, dict) else {"errors": exc.detail},
        }
    elif isinstance(exc, drf_exceptions.APIException):
        codes = exc.get_codes()
        body = {
            "code": codes if isinstance(codes, str) else "error",
            "message": _first_message(exc.detail),
            "details": {},
        }
        if isinstance(exc, drf_exceptions.Throttled) and exc.wait is not None:
            body["details"] = {"retry_after": int(response.get("Retry-After", 1))}
    else:  # pragma: no cover - DRF only handles APIException subclasses
        return response
    response.data = body
    return response


_API_PREFIXES = ("/api/", "/civitai/")


def handler404(request: Any, exception: Exception | None = None) -> Any:
    """No route matched: the JSON error shape under the API prefixes, else the HTML page."""
    if request.path.startswith(_API_PREFIXES):
        return error_response(NotFoundError("No such route or object.", code="not_found"))
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())


def handler500(request: Any) -> Any:
    """An unexpected error: the JSON error shape under the API prefixes, else the HTML page."""
    if request.path.startswith(_API_PREFIXES):
        err = ApplicationError("Something went wrong on our side.", code="server_error",
                               status=500)
        return error_response(err)
    from django.views.defaults import server_error

    return server_error(request)
