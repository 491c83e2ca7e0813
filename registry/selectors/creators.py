"""A creator's profile: their listed models and datasets (everything not removed, for
themselves) and counts, for the API and the page alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User as AuthUser
from django.db.models import Count, Sum

from registry.models import Dataset, Model, ModelVersion, VersionStatus
from registry.selectors.common import NEWEST, User
from registry.selectors.datasets import listed_datasets, own_datasets, with_dataset_data
from registry.selectors.models import listed_models, own_models, with_listing_data, with_price

PROFILE_LIST_LIMIT = 50


@dataclass
class CreatorProfile:
    user: AuthUser
    models: list[Model] = field(default_factory=list)
    datasets: list[Dataset] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    is_self: bool = False


def creator_profile(*, username: str, user: User) -> CreatorProfile | None:
    """A creator's public page: their listed models and datasets, the 50 newest of each (for
    themselves, every one not removed, drafts and private ones included), and counts.
    ``None`` when no active user has that name (any case)."""
    creator = get_user_model().objects.filter(username__iexact=username, is_active=True).first()
    if creator is None:
        return None
    is_self = bool(user.is_authenticated and user.pk == creator.pk)
    if is_self:
        models = own_models(user).filter(is_removed=False)
        datasets = own_datasets(user).filter(is_removed=False)
    else:
        models = listed_models().filter(owner=creator)
        datasets = listed_datasets().filter(owner=creator)
    totals = models.aggregate(count=Count("pk"), downloads=Sum("download_count"))
    published_versions = ModelVersion.objects.filter(
        model__in=models.values("pk"), status=VersionStatus.PUBLISHED
    ).count()
    priced = with_price(models, user=user, published_only=not is_self)
    newest_models = with_listing_data(priced.order_by(*NEWEST), published_only=not is_self)
    return CreatorProfile(
        user=creator,
        models=list(newest_models[:PROFILE_LIST_LIMIT]),
        datasets=list(with_dataset_data(datasets.order_by(*NEWEST))[:PROFILE_LIST_LIMIT]),
        counts={
            "models": totals["count"] or 0,
            "datasets": datasets.count(),
            "published_versions": published_versions,
            "downloads": totals["downloads"] or 0,
        },
        is_self=is_self,
    )
