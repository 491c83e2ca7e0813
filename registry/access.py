"""Who may see and download what, as far as the registry knows.

The registry decides visibility (public, unlisted, private, removed, drafts). Whether a user
is *entitled* to a paid file is the marketplace's business: it installs a download policy
with :func:`set_download_policy` when its app loads, so the registry never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser

from registry.models import (
    Dataset,
    DatasetVersion,
    Model,
    ModelVersion,
    is_owner_or_staff,
    is_visible_to,
)

User = AuthUser | AnonymousUser


@dataclass(frozen=True)
class DownloadDecision:
    allowed: bool
    status: int = 200
    code: str = ""
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


ALLOW = DownloadDecision(allowed=True)

DownloadPolicy = Callable[[User, ModelVersion | DatasetVersion], DownloadDecision]


def _allow_all(user: User, target: ModelVersion | DatasetVersion) -> DownloadDecision:
    return ALLOW


_download_policy: DownloadPolicy = _allow_all


def set_download_policy(policy: DownloadPolicy) -> None:
    global _download_policy
    _download_policy = policy


def can_view_model(user: User, model: Model) -> bool:
    return is_visible_to(
        user, owner_id=model.owner_id, visibility=model.visibility, is_removed=model.is_removed
    )


def can_view_version(user: User, version: ModelVersion) -> bool:
    model = version.model
    return is_visible_to(
        user,
        owner_id=model.owner_id,
        visibility=model.visibility,
        is_removed=model.is_removed,
        published=version.is_published,
    )


def can_view_dataset(user: User, dataset: Dataset) -> bool:
    return is_visible_to(
        user,
        owner_id=dataset.owner_id,
        visibility=dataset.visibility,
        is_removed=dataset.is_removed,
    )


def download_decision(user: User, target: ModelVersion | DatasetVersion) -> DownloadDecision:
    """Visibility first (404 for what the user may not see), then the installed policy."""
    if isinstance(target, ModelVersion):
        visible = can_view_version(user, target)
        owner_id = target.model.owner_id
    else:
        visible = can_view_dataset(user, target.dataset)
        owner_id = target.dataset.owner_id
    if not visible:
        return DownloadDecision(False, 404, "not_found", "No such file.")
    if is_owner_or_staff(user, owner_id):
        return ALLOW
    return _download_policy(user, target)
