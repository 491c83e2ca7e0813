"""One application error type and one JSON error shape for every API.

Every error an API returns looks like ``{"code": ..., "message": ..., "details": ...}``.
Services raise :class:`ApplicationError` (or a subclass) with a stable ``code``; the DRF
exception handler below turns it, validation errors, 401/403/404 and throttling into that shape.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import (
    BadRequest,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.db import DataError
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


# SQLSTATEs of bad input that only the database noticed: a value out of a column's range.
_OUT_OF_RANGE_STATES = {"22003": "number_out_of_range", "22001": "text_too_long"}


def application_error_for(exc: BaseException) -> ApplicationError | None:
    """The client's error behind a Django or database exception, or None when it is ours.

    A body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is 413 with the limit; too many form fields or
    files, and other refused requests, are 400; a number the database cannot hold is 400.
    """
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return PayloadTooLargeError(
            f"The request body is larger than the limit of {limit} bytes.",
            code="too_large",
            details={"limit": limit},
        )
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return ApplicationError(str(exc) or "Too many fields.", code="too_many_fields")
    if isinstance(exc, SuspiciousOperation | BadRequest):
        return ApplicationError("Bad request.", code="bad_request")
    if isinstance(exc, DataError):
        state = getattr(exc.__cause__, "sqlstate", None) or getattr(exc.__cause__, "pgcode", None)
        code = _OUT_OF_RANGE_STATES.get(str(state))
        if code is not None:
            from rest_framework.views import set_rollback

            set_rollback()
            message = str(exc.__cause__ or exc).splitlines()[0]
            return ApplicationError(
                f"A value is out of range: {message}.", code=code, details={"reason": message}
            )
    return None


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    from rest_framework.views import exception_handler  # not at import: DRF imports our auth

    if not isinstance(exc, ApplicationError):
        exc = application_error_for(exc) or exc
    if isinstance(exc, ApplicationError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    body: dict[str, object]
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
        # DRF's Throttled sets .wait (its __init__ argument); the stubs leave the attribute out.
        if isinstance(exc, drf_exceptions.Throttled) and exc.wait is not None:  # type: ignore[attr-defined]
            body["details"] = {"retry_after": int(response.get("Retry-After", "1"))}
    else:  # pragma: no cover - DRF only handles APIException subclasses
        return response
    response.data = body
    return response


_API_PREFIXES = ("/api/", "/civitai/")


def is_api_path(path: str) -> bool:
    """Routes whose every answer, error or not, is JSON (REST API and compatible APIs)."""
    return path.startswith(_API_PREFIXES)


def handler404(request: Any, exception: Exception | None = None) -> Any:
    """No route matched: the JSON error shape under the API prefixes, else the HTML page."""
    if is_api_path(request.path):
        return error_response(NotFoundError("No such route or object.", code="not_found"))
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())


def server_error() -> ApplicationError:
    """What a client is told of an unexpected error: nothing more than this."""
    return ApplicationError("Something went wrong on our side.", code="server_error", status=500)


def handler500(request: Any) -> Any:
    """An unexpected error: the JSON error shape under the API prefixes, else the HTML page."""
    if is_api_path(request.path):
        return error_response(server_error())
    from django.views.defaults import server_error as server_error_page

    return server_error_page(request)
