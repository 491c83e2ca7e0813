"""What the registry's selectors share: the viewer type, the newest-first orders, the
``invalid_filter`` error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser

from core.errors import ApplicationError

User = AuthUser | AnonymousUser

NEWEST = ("-created_at", "-pk")
NEWEST_PUBLISHED = ("-published_at", "-pk")


def invalid_filters(errors: Mapping[str, Any]) -> ApplicationError:
    """A query string that does not validate: 400 ``invalid_filter``, naming each field."""
    details = {field: [str(message) for message in messages] for field, messages in errors.items()}
    field, messages = next(iter(details.items()))
    return ApplicationError(f"{field}: {messages[0]}", code="invalid_filter", details=details)
