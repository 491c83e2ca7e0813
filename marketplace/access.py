"""The download policy the marketplace installs into the registry (see ``apps.py``)."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User

from marketplace.selectors import is_entitled, listing_for, listing_price_now
from registry.access import ALLOW, DownloadDecision
from registry.models import DatasetVersion, ModelVersion


def download_policy(
    user: User | AnonymousUser, target: ModelVersion | DatasetVersion
) -> DownloadDecision:
    """Free, unlisted, past early access, collaborators and buyers may download; else 401/403.

    The registry has already checked visibility and let the owner and staff through.
    """
    listing = listing_for(target)
    if listing is None or listing_price_now(listing) == 0:
        return ALLOW
    if user.is_authenticated and (
        is_entitled(user, target) or listing.shares.filter(user_id=user.pk).exists()
    ):
        return ALLOW
    details = {
        "listing_id": listing.pk,
        "price": listing.price,
        "currency": "credits",
        "early_access_until": (
            listing.early_access_until.isoformat() if listing.early_access_until else None
        ),
        "purchase": {
            "method": "POST",
            "url": "/api/v1/purchases",
            "body": {"listing_id": listing.pk},
        },
    }
    when = (
        f" (free after {listing.early_access_until.date().isoformat()})"
        if listing.early_access_until
        else ""
    )
    if not user.is_authenticated:
        return DownloadDecision(
            False,
            401,
            "authentication_required",
            f"Log in and buy this for {listing.price} credits to download it{when}.",
            details,
        )
    return DownloadDecision(
        False,
        403,
        "purchase_required",
        f"This costs {listing.price} credits{when}; buy it to download.",
        details,
    )
