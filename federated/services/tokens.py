"""Bearer secrets the site issues (node, job and progress tokens): shown once, kept hashed."""

from __future__ import annotations

import hashlib
import hmac
import secrets

NODE_TOKEN_PREFIX = "atn_"
JOB_TOKEN_PREFIX = "atj_"
PROGRESS_TOKEN_PREFIX = "atp_"


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_issue(prefix: str) -> tuple[str, str]:
    """A fresh secret with ``prefix`` and the digest to store instead of it."""
    secret = prefix + secrets.token_urlsafe(32)
    return secret, secret_digest(secret)


def secret_matches(digest: str, secret: str) -> bool:
    """Constant-time check of ``secret`` against a stored digest; an empty digest never
    matches."""
    if not digest or not secret:
        return False
    return hmac.compare_digest(digest, secret_digest(secret))
