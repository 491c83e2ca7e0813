"""Every write to accounts and tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core.errors import ApplicationError, NotFoundError
from core.models import ApiToken

TOKEN_PREFIX = "atl_"


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def user_signup(*, username: str, email: str, password: str) -> User:
    user_model = get_user_model()
    if user_model.objects.filter(username__iexact=username).exists():
        raise ApplicationError("That username is taken.", code="username_taken")
    try:
        validate_password(password, user_model(username=username, email=email))
    except ValidationError as exc:
        raise ApplicationError(" ".join(exc.messages), code="weak_password") from exc
    return user_model.objects.create_user(username=username, email=email, password=password)


@transaction.atomic
def token_create(*, user: User, name: str) -> IssuedToken:
    """Create a token; the returned secret is never stored and never shown again."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name[:100] or "token", prefix=secret[:12], digest=token_digest(secret)
    )
    return IssuedToken(token=token, secret=secret)


def token_revoke(*, user: User, token_id: int) -> ApiToken:
    token = ApiToken.objects.filter(user=user, pk=token_id, revoked_at__isnull=True).first()
    if token is None:
        raise NotFoundError("No such active token.")
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    return token


def token_authenticate(*, secret: str) -> User | None:
    """The user a token belongs to, or None when it is unknown or revoked."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=token_digest(secret), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


# --- login lockout -------------------------------------------------------------------------
# Failed logins are counted per (username, client address) in the default cache (Redis in
# production; ``incr`` is atomic there). The key does not depend on whether the username
# exists, so a lockout tells nothing about which accounts there are.
#
# Two counts, so that a stranger can neither guess freely nor lock the owner out:
# - per (username, address): ATELIER_LOGIN_MAX_FAILURES failures lock that pair out for the
#   window. Other addresses are not affected: a stranger cannot lock the owner out.
# - per username, from every address: past ATELIER_LOGIN_ACCOUNT_MAX_FAILURES failures in a
#   window the account is under attack, and each address may fail only
#   ATELIER_LOGIN_MAX_FAILURES_UNDER_ATTACK times before its pair is locked. A correct
#   password from an address that has not failed still logs in; the attack only slows down.


def _account_ident(username: str) -> str:
    return hashlib.sha256(f"{username.strip().lower()}".encode()).hexdigest()


def _lockout_ident(username: str, address: str) -> str:
    return hashlib.sha256(f"{username.strip().lower()}\n{address}".encode()).hexdigest()


def login_lockout_remaining(*, username: str, address: str) -> int:
    """Seconds left in this pair's lockout, or 0 when it may try to log in."""
    until = cache.get(f"login-locked:{_lockout_ident(username, address)}")
    if until is None:
        return 0
    return max(1, int(until - timezone.now().timestamp()))


def _count(key: str, window: int) -> int:
    cache.add(key, 0, timeout=window)
    try:
        return int(cache.incr(key))
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window)
        return 1


def login_account_under_attack(*, username: str) -> bool:
    """Whether this username failed too often, from all addresses together, in the window."""
    failures = cache.get(f"login-account-failures:{_account_ident(username)}") or 0
    return int(failures) >= settings.ATELIER_LOGIN_ACCOUNT_MAX_FAILURES


def login_failure_record(*, username: str, address: str) -> int:
    """Count one failed login; the N-th in a window locks the pair out for the window.

    N is ``ATELIER_LOGIN_MAX_FAILURES``, or ``ATELIER_LOGIN_MAX_FAILURES_UNDER_ATTACK`` while
    the username is under attack (see above). Returns the failures counted in the current
    window for the pair.
    """
    window = settings.ATELIER_LOGIN_LOCKOUT_SECONDS
    ident = _lockout_ident(username, address)
    counter = f"login-failures:{ident}"
    _count(f"login-account-failures:{_account_ident(username)}", window)
    count = _count(counter, window)
    limit = settings.ATELIER_LOGIN_MAX_FAILURES
    if login_account_under_attack(username=username):
        limit = min(limit, settings.ATELIER_LOGIN_MAX_FAILURES_UNDER_ATTACK)
    if count >= limit:
        cache.set(f"login-locked:{ident}", timezone.now().timestamp() + window, timeout=window)
        cache.delete(counter)
    return count


def login_failures_clear(*, username: str, address: str) -> None:
    """After a successful login: the pair starts again from zero (the account's count stays:
    a stranger's failures elsewhere are not forgiven by the owner's login)."""
    cache.delete(f"login-failures:{_lockout_ident(username, address)}")
