"""Who may see and download what, as far as the registry knows.

The registry decides visibility (public, unlisted, private, removed, drafts). Whether a user
is *entitled* to a paid file is the marketplace's business: it installs a download policy
with :func:`set_download_policy` when its app loads, so the registry never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from registry.models import Dataset, DatasetVersion, Model, ModelVersion, Visibility

User = AbstractBaseUser | AnonymousUser


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


def is_owner_or_staff(user: User, owner_id: int) -> bool:
    return bool(user.is_authenticated and (user.pk == owner_id or user.is_staff))


def can_view_model(user: User, model: Model) -> bool:
    if is_owner_or_staff(user, model.owner_id):
        return True
    return not model.is_removed and model.visibility != Visibility.PRIVATE


def can_view_version(user: User, version: ModelVersion) -> bool:
    if is_owner_or_staff(user, version.model.owner_id):
        return True
    return can_view_model(user, version.model) and version.is_published


def can_view_dataset(user: User, dataset: Dataset) -> bool:
    if is_owner_or_staff(user, dataset.owner_id):
        return True
    return not dataset.is_removed and dataset.visibility != Visibility.PRIVATE


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
