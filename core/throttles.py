"""Rate limits: DRF scoped throttles, and the same limits for plain Django views.

Scopes and their rates live in ``settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (set from
the environment, see ``config/settings.py``):

- ``api``: every REST call, per user (or per client address when anonymous);
- ``login``: attempts to log in (the web form and the token API), per client address;
- ``downloads``: download redirects and signed-file reads, per user or address;
- ``generation``: reserved for the image-generation (studio) views.

The client address is :func:`client_address`: the peer (``REMOTE_ADDR``), or, when the peer is
one of ``settings.ATELIER_TRUSTED_PROXIES``, the right-most address of ``X-Forwarded-For``
that is not a trusted proxy (what a client writes into the header itself is never believed).
Counters key an IPv6 client by its /64 network (:func:`address_key`): one subscriber holds a
whole /64, and rotating addresses inside it must not reset the count.

Counters live in the default cache: Redis in tests and production (``REDIS_CACHE_URL``), a
local-memory cache in the demo. A refused request gets 429, a ``Retry-After`` header and the
JSON error shape ``{"code": "throttled", "message", "details": {"retry_after", "scope"}}``.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from functools import lru_cache, wraps
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle

from core.auth import request_user

if TYPE_CHECKING:  # rest_framework.views reads the settings that name this module
    from rest_framework.request import Request
    from rest_framework.views import APIView


AddressNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[AddressNetwork, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def trusted_proxies() -> tuple[AddressNetwork, ...]:
    """``settings.ATELIER_TRUSTED_PROXIES`` (addresses or CIDR networks), parsed once."""
    return _networks(tuple(settings.ATELIER_TRUSTED_PROXIES or ()))


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(address.version == net.version and address in net for net in trusted_proxies())


class _HasMeta(Protocol):
    @property
    def META(self) -> Mapping[str, Any]: ...


def client_address(request: _HasMeta) -> str:
    """The address of the client that sent ``request``.

    ``X-Forwarded-For`` counts only when the peer is a trusted proxy; then the chain is read
    from the right (each proxy appends the address it saw) and the first hop that is not a
    trusted proxy is the client. Hops to its left were written by the client and are ignored.
    """
    peer = _ip(str(request.META.get("REMOTE_ADDR") or ""))
    if peer is None:
        return str(request.META.get("REMOTE_ADDR") or "unknown")
    if not _trusted(peer):
        return str(peer)
    hops = str(request.META.get("HTTP_X_FORWARDED_FOR") or "").split(",")
    client = peer
    for hop in reversed([h for h in hops if h.strip()]):
        address = _ip(hop)
        if address is None:  # garbage where a trusted proxy wrote: stop at the last good hop
            break
        client = address
        if not _trusted(address):
            break
    return str(client)


def address_key(address: str) -> str:
    """What counters key a client address by: IPv4 as is, IPv6 by its /64 network."""
    parsed = _ip(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed) if parsed is not None else address[:64]


class _SettingsRate(SimpleRateThrottle):
    """Reads its rate from the settings at each request (DRF reads them once, at import)."""

    def get_rate(self) -> str | None:
        from rest_framework.settings import api_settings

        # The stubs type the rates as numbers; DRF's rates are strings ("100/min").
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope or "")  # type: ignore[return-value]

    def get_ident(self, request: Request) -> str:
        """The client address (see :func:`client_address`), never DRF's raw header read."""
        return address_key(client_address(request))


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

        # The stubs type the rates as numbers; DRF's rates are strings ("100/min").
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope or "")  # type: ignore[return-value]

    def get_ident(self, request: Request) -> str:
        return address_key(client_address(request))


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
) -> Callable[[Callable[..., HttpResponseBase]], Callable[..., HttpResponseBase]]:
    """Decorate a plain Django view with one of the throttles above."""

    def decorate(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            refused = check_throttle(request, throttle_class)
            if refused is not None:
                return refused
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
