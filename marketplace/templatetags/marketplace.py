"""Template tags that put marketplace data on registry pages (buy box, license, reviews)."""

from __future__ import annotations

from typing import Any

from django import template
from django.contrib.auth.models import User

from marketplace import selectors
from marketplace.forms import ReviewForm
from marketplace.models import CommercialUse, License
from registry.models import DatasetVersion, ModelVersion

register = template.Library()


@register.simple_tag(takes_context=True)
def buy_box(context: template.Context, version: ModelVersion | DatasetVersion) -> dict[str, Any]:
    """What the buy box shows for this user and model or dataset version
    (:func:`marketplace.selectors.buy_state`): ``state`` is one of "free", "owner", "owned",
    "buy", "login"; ``can_download`` says whether a Download button may be offered."""
    buy = selectors.buy_state(context.get("user"), version)
    return {
        "listing": buy.listing,
        "price_now": buy.price_now,
        "state": buy.state,
        "can_download": buy.can_download,
        "is_model": isinstance(version, ModelVersion),
    }


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
