"""API routes answer every error in the JSON error shape, also under DEBUG.

DRF's exception handler (:func:`core.errors.api_exception_handler`) covers what DRF views
raise and knows. :class:`ApiErrorMiddleware` covers the rest under the API prefixes
(:func:`core.errors.is_api_path`):

- an exception no handler took, in any view (DRF or plain Django): a client's error
  (:func:`core.errors.application_error_for`: body too large, a number the database cannot
  hold, ...) gets its 4xx; anything else is logged with its traceback on ``django.request``
  (as Django logs it) and answers 500 ``{"code": "server_error", ...}``: no traceback, no
  debug page, whatever ``DEBUG`` says;
- any other error response that is not JSON (Django's HTML pages for 400, 403, 404, 405 or
  a middleware's error) is replaced by the JSON shape with the same status and headers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus

from django.conf import settings
from django.core import signals
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.utils.log import log_response

from core.errors import (
    AccessDeniedError,
    ApplicationError,
    NotFoundError,
    application_error_for,
    error_response,
    is_api_path,
    server_error,
)

logger = logging.getLogger("django.request")

_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")
_MESSAGES = {
    400: ("bad_request", "Bad request."),
    403: ("forbidden", "You may not do this."),
    404: ("not_found", "No such route or object."),
    405: ("method_not_allowed", "This method is not allowed here."),
    413: ("too_large", "The request body is too large."),
    500: ("server_error", "Something went wrong on our side."),
}


def _with_headers(replaced: JsonResponse, original: HttpResponseBase) -> JsonResponse:
    for header in _KEPT_HEADERS:
        if header in original:
            replaced[header] = original[header]
    return replaced


def _json_error_for_status(response: HttpResponseBase) -> JsonResponse:
    status = response.status_code
    data = getattr(response, "data", None)  # a DRF Response rendered as HTML (browsable API)
    if isinstance(data, dict) and {"code", "message", "details"} <= set(data):
        return _with_headers(JsonResponse(data, status=status), response)
    code, message = _MESSAGES.get(status, ("", ""))
    if not code:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        code = "server_error" if status >= 500 else "error"
        message = f"{phrase or 'Error'}."
    return _with_headers(
        error_response(ApplicationError(message, code=code, status=status)), response
    )


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and is_api_path(request.path)
            and not response.streaming
            and "json" not in response.get("Content-Type", "")
        ):
            return _json_error_for_status(response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api_path(request.path) or settings.DEBUG_PROPAGATE_EXCEPTIONS:
            return None
        if isinstance(exception, ApplicationError):
            return error_response(exception)
        if isinstance(exception, Http404):
            return error_response(NotFoundError("No such route or object."))
        if isinstance(exception, PermissionDenied):
            return error_response(AccessDeniedError("You may not do this."))
        known = application_error_for(exception)
        if known is not None:
            return error_response(known)
        # Ours: the traceback goes to the log (and to test clients), never to the client.
        signals.got_request_exception.send(sender=None, request=request)
        response = error_response(server_error())
        log_response(
            "%s: %s",
            "Internal Server Error",
            request.path,
            response=response,
            request=request,
            exception=exception,
        )
        return response
