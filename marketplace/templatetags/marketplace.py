"""Template tags that put marketplace data on registry pages (buy box, license, reviews)."""

from __future__ import annotations

from typing import Any

from django import template
from django.contrib.auth.models import User

from marketplace import selectors
from marketplace.forms import ReviewForm
from marketplace.models import CommercialUse, License, ListingShare
from registry.models import DatasetVersion, ModelVersion

register = template.Library()


@register.simple_tag(takes_context=True)
def buy_box(context: template.Context, version: ModelVersion | DatasetVersion) -> dict[str, Any]:
    """What the buy box shows for this user and model or dataset version.

    ``state`` is one of: "free", "owner", "owned", "buy", "login".
    """
    user = context.get("user")
    member = user if isinstance(user, User) and user.is_authenticated else None
    listing = selectors.listing_for(version)
    price_now = selectors.listing_price_now(listing) if listing is not None else 0
    owner_id = (
        version.model.owner_id if isinstance(version, ModelVersion) else version.dataset.owner_id
    )
    if member is not None and owner_id == member.pk:
        state = "owner"
    elif listing is None or price_now == 0:
        state = "free"
    elif member is not None and (
        selectors.is_entitled(member, version)
        or ListingShare.objects.filter(listing=listing, user_id=member.pk).exists()
    ):
        state = "owned"
    elif member is not None:
        state = "buy"
    else:
        state = "login"
    is_model = isinstance(version, ModelVersion)
    return {"listing": listing, "price_now": price_now, "state": state, "is_model": is_model}


@register.simple_tag
def license_for(version: ModelVersion) -> dict[str, Any]:
    """The version's own license and the effective permissions along its lineage.

    ``commercial_label`` is what the page prints for commercial use: the level's name, or
    "Not stated" when neither the version nor its lineage states one (no license is not
    permission to sell).
    """
    perms = selectors.effective_permissions(version)
    commercial = perms.commercial_use
    if not version.license_code and not commercial.sources:
        label = "Not stated: no license, ask the creator"
    else:
        label = str(CommercialUse(str(commercial.value)).label)
    return {
        "license": License.objects.filter(code=version.license_code).first()
        if version.license_code
        else None,
        "perms": perms,
        "commercial_label": label,
    }


@register.simple_tag(takes_context=True)
def reviews_for(context: template.Context, version: ModelVersion) -> dict[str, Any]:
    user = context.get("user")
    member = user if isinstance(user, User) and user.is_authenticated else None
    reviews = list(selectors.reviews_for_version(version))
    mine = member is not None and any(r.user_id == member.pk for r in reviews)
    can_review = (
        member is not None and not mine and selectors.review_allowed(user=member, version=version)
    )
    return {
        "reviews": reviews,
        "can_review": can_review,
        "form": ReviewForm() if can_review else None,
        "reviewed": mine,
    }
