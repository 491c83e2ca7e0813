"""Bearer-token authentication shared by DRF and the plain-Django compatible routes.

A token travels in the ``Authorization`` header. ``?token=`` is accepted only on the routes in
:data:`QUERY_TOKEN_ROUTES`: the model download link, where Civitai clients (and a plain
``wget``/``curl`` of Civitai's ``/api/download/models/<id>?token=...``) put it. Anywhere else a
query token is refused with 401, so that it does not become a habit that leaks secrets into
access logs, proxies' logs and browser histories; the access logs redact it anyway
(:mod:`core.redaction`).
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core.services import token_authenticate

# URL names (namespace:name) of the routes that take ``?token=``: Civitai's download path.
QUERY_TOKEN_ROUTES = frozenset(
    {"registry:download-model-version", "registry:civitai-download-model-version"}
)
QUERY_TOKEN_REFUSED = (
    "Send the API token in the Authorization header (Bearer); ?token= is accepted only on "
    "download links (/api/download/models/<id>)."
)


def query_token_allowed(request: HttpRequest) -> bool:
    match = getattr(request, "resolver_match", None)
    return match is not None and match.view_name in QUERY_TOKEN_ROUTES


def query_token_refused(request: HttpRequest) -> bool:
    """A ``?token=`` on a route that does not take it (and no Authorization header)."""
    return (
        "token" in request.GET
        and not request.META.get("HTTP_AUTHORIZATION")
        and not query_token_allowed(request)
    )


def bearer_secret(request: HttpRequest) -> str | None:
    """The token in ``Authorization: Bearer|Token <t>``, or in ``?token=`` on a download link."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    if not query_token_allowed(request):
        return None
    token = request.GET.get("token")
    return token or None


class AuthenticatedHttpRequest(HttpRequest):
    """The request of a view behind ``login_required`` (or the admin): its user is signed in."""

    user: User


def signed_in(request: Request) -> User:
    """The caller of a DRF view, who must be signed in (views check this with a permission)."""
    user = request.user
    if not user.is_authenticated:
        raise exceptions.NotAuthenticated()
    return user


def request_user(request: HttpRequest) -> User | AnonymousUser:
    """The session user, else the token's user, else anonymous (for non-DRF views).

    A token that is present but unknown yields anonymous; callers answer 401.
    """
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user
    secret = bearer_secret(request)
    if secret:
        token_user = token_authenticate(secret=secret)
        if token_user is not None:
            return token_user
    return AnonymousUser()


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, None] | None:
        secret = bearer_secret(request._request)
        if not secret:
            if query_token_refused(request._request):
                raise exceptions.AuthenticationFailed(QUERY_TOKEN_REFUSED, code="token_in_query")
            return None
        user = token_authenticate(secret=secret)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        return (user, None)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
