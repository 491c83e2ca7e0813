"""Bearer-token authentication shared by DRF and the plain-Django compatible routes."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core.services import token_authenticate


def bearer_secret(request: HttpRequest) -> str | None:
    """The token in ``Authorization: Bearer|Token <t>``, or in ``?token=`` (Civitai tools)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    token = request.GET.get("token")
    return token or None


def request_user(request: HttpRequest) -> AbstractBaseUser | AnonymousUser:
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

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, None] | None:
        secret = bearer_secret(request._request)
        if not secret:
            return None
        user = token_authenticate(secret=secret)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        return (user, None)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
