"""Rate limits: DRF scoped throttles, and the same limits for plain Django views.

Scopes and their rates live in ``settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (set from
the environment, see ``config/settings.py``):

- ``api``: every REST call, per user (or per client address when anonymous);
- ``login``: attempts to log in (the web form and the token API), per client address;
- ``downloads``: download redirects and signed-file reads, per user or address;
- ``generation``: reserved for the image-generation (studio) views.

Counters live in the default cache: Redis in tests and production (``REDIS_CACHE_URL``), a
local-memory cache in the demo. A refused request gets 429, a ``Retry-After`` header and the
JSON error shape ``{"code": "throttled", "message", "details": {"retry_after", "scope"}}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle

from core.auth import request_user

if TYPE_CHECKING:  # rest_framework.views reads the settings that name this module
    from rest_framework.request import Request
    from rest_framework.views import APIView


def client_address(request: HttpRequest) -> str:
    """The peer address. ``X-Forwarded-For`` is trusted only via DRF's ``NUM_PROXIES``."""
    return str(request.META.get("REMOTE_ADDR") or "unknown")


class _SettingsRate(SimpleRateThrottle):
    """Reads its rate from the settings at each request (DRF reads them once, at import)."""

    def get_rate(self) -> str | None:
        from rest_framework.settings import api_settings

        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope or "")


class _UserOrAddressThrottle(_SettingsRate):
    """Counts per authenticated user, else per client address, in the class's ``scope``."""

    def get_cache_key(self, request: Request, view: APIView | None) -> str | None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            ident = f"user:{user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class ApiThrottle(_UserOrAddressThrottle):
    """The default for every DRF view (``DEFAULT_THROTTLE_CLASSES``)."""

    scope = "api"


class LoginThrottle(_SettingsRate):
    """Log-in attempts per client address, whoever they claim to be."""

    scope = "login"

    def get_cache_key(self, request: Request, view: APIView | None) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class DownloadThrottle(_UserOrAddressThrottle):
    scope = "downloads"


class GenerationThrottle(_UserOrAddressThrottle):
    """For the studio's generation views: ``throttle_classes = [GenerationThrottle]``."""

    scope = "generation"


class ViewScopedThrottle(ScopedRateThrottle):
    """DRF's ``throttle_scope`` attribute, available to any view that sets it."""

    def get_rate(self) -> str | None:
        from rest_framework.settings import api_settings

        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope or "")


def retry_after_seconds(throttle: SimpleRateThrottle) -> int:
    wait = throttle.wait()
    return max(1, math.ceil(wait if wait is not None else 1))


def throttled_response(scope: str, retry_after: int) -> JsonResponse:
    """The 429 body and headers, the same as DRF's handler gives (see core.errors)."""
    response = JsonResponse(
        {
            "code": "throttled",
            "message": f"Too many requests; try again in {retry_after} seconds.",
            "details": {"retry_after": retry_after, "scope": scope},
        },
        status=429,
    )
    response["Retry-After"] = str(retry_after)
    return response


class _DjangoRequestShim:
    """What SimpleRateThrottle reads from a request, for non-DRF views."""

    def __init__(self, request: HttpRequest, user: Any) -> None:
        self._request = request
        self.META = request.META
        self.headers = request.headers
        self.user = user


def check_throttle(
    request: HttpRequest, throttle_class: type[SimpleRateThrottle]
) -> JsonResponse | None:
    """None when the request may go on, else the 429 response (for plain Django views)."""
    throttle = throttle_class()
    shim = _DjangoRequestShim(request, request_user(request))
    if throttle.allow_request(shim, None):  # type: ignore[arg-type]  # duck-typed request
        return None
    return throttled_response(throttle.scope or "", retry_after_seconds(throttle))


def throttle_view(
    throttle_class: type[SimpleRateThrottle],
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate a plain Django view with one of the throttles above."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            refused = check_throttle(request, throttle_class)
            if refused is not None:
                return refused
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
