"""Site-wide protections: the Content-Security-Policy, and the login lockout backend.

- :class:`ContentSecurityPolicyMiddleware` sends ``settings.ATELIER_CSP`` on every response,
  with a fresh nonce per request in place of ``{nonce}``; templates give inline scripts
  ``nonce="{{ csp_nonce }}"`` (the :func:`csp_nonce` context processor).
- :class:`LockoutModelBackend` authenticates like Django's ModelBackend, but refuses a
  (username, client address) pair locked out after repeated failures, and counts failures
  (per pair and per username: see ``core.services``). The address is the proxy-aware
  :func:`core.throttles.client_address`, so one stranger's failures never lock the owner out
  of the account from another address.
  Every ``authenticate()`` goes through it: the web login form and the token API alike.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from core.services import login_failure_record, login_failures_clear, login_lockout_remaining
from core.throttles import address_key, client_address


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        nonce = secrets.token_urlsafe(16)
        request.csp_nonce = nonce  # type: ignore[attr-defined]  # read by csp_nonce()
        response = self.get_response(request)
        policy = settings.ATELIER_CSP
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy.replace("{nonce}", nonce)
        return response


def csp_nonce(request: HttpRequest) -> dict[str, str]:
    """Template context: ``{{ csp_nonce }}`` for inline ``<script nonce=...>``."""
    return {"csp_nonce": getattr(request, "csp_nonce", "")}


class LoginLockedOut(PermissionDenied):
    """Raised by the backend; ``authenticate()`` then answers None and stops trying."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"locked out for {retry_after} s")
        self.retry_after = retry_after


def lockout_message(retry_after: int) -> str:
    minutes = max(1, -(-retry_after // 60))
    return (
        "Too many failed logins for this username from your address. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )


class LockoutModelBackend(ModelBackend):
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        if username is None:
            username = kwargs.get("username")
        if username is None or password is None:
            return None
        address = address_key(client_address(request)) if request is not None else "local"
        remaining = login_lockout_remaining(username=username, address=address)
        if remaining:
            if request is not None:
                request.login_lockout = remaining  # type: ignore[attr-defined]
            raise LoginLockedOut(remaining)
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            login_failure_record(username=username, address=address)
            # Stop here: ModelBackend (listed after us for sessions) must not try again.
            raise PermissionDenied("bad credentials")
        login_failures_clear(username=username, address=address)
        return user
