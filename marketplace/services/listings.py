"""Listings: price, early access, upstream royalty and collaborator shares."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction

from core.errors import AccessDeniedError, ApplicationError, ConflictError
from marketplace.models import Listing, ListingShare
from marketplace.revenue_split import BPS
from marketplace.selectors import upstream_royalties
from marketplace.services.licenses import license_check
from marketplace.services.purchases import platform_fee_bps
from registry.models import DatasetKind, DatasetVersion, ModelVersion
from registry.services.catalog import version_license_set

_UNSET = object()


def _price(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ApplicationError(
            "price must be a whole number of credits, 0 (free) or more.",
            code="bad_price",
            details={"price": repr(value)},
        )
    return value


def _royalty(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 5000:
        raise ApplicationError(
            "royalty_bps must be a whole number of basis points from 0 to 5000.",
            code="bad_royalty",
            details={"royalty_bps": repr(value)},
        )
    return value


def _shares(shares: Sequence[tuple[str, object]]) -> list[tuple[User, int]]:
    out: list[tuple[User, int]] = []
    seen: set[str] = set()
    for username, percent in shares:
        if not isinstance(percent, int) or isinstance(percent, bool) or not 1 <= percent <= 100:
            raise ApplicationError(
                "Each share is a whole percent from 1 to 100.",
                code="bad_shares",
                details={"username": username, "percent": repr(percent)},
            )
        if username in seen:
            raise ApplicationError(f"{username} appears twice in the shares.", code="bad_shares")
        seen.add(username)
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise ApplicationError(f"No user named {username!r}.", code="bad_shares")
        out.append((user, percent))
    if out and sum(p for _, p in out) != 100:
        raise ApplicationError(
            f"Shares must sum to 100 percent (they sum to {sum(p for _, p in out)}).",
            code="bad_shares",
        )
    return out


def _owner_id(target: ModelVersion | DatasetVersion) -> int:
    if isinstance(target, ModelVersion):
        return target.model.owner_id
    return target.dataset.owner_id


def _check_sale(listing: Listing) -> None:
    if listing.model_version is not None:
        license_check(version=listing.model_version, for_sale=listing.price > 0)
        if listing.price > 0 and listing.is_active:
            _check_royalties(listing.model_version, listing.price)


def _check_royalties(version: ModelVersion, price: int) -> None:
    """Refuse a price whose lineage's royalties cannot all be paid.

    Royalties are shares of the full price, paid after the platform fee, so together they may
    ask at most ``10000 - fee`` bps; a lineage asking more is refused, with the numbers.
    """
    royalties = upstream_royalties(version)
    total = sum(bps for _, bps, _ in royalties)
    fee_bps = platform_fee_bps()
    room = BPS - fee_bps
    if total <= room:
        return
    fee = price * fee_bps // BPS
    asked = ", ".join(f"{label} {bps}" for _, bps, label in royalties)
    raise ApplicationError(
        f"The lineage of this version asks {total} bps in royalties ({asked}). Royalties are "
        f"taken from the full price after the {fee_bps} bps platform fee, so they may total at "
        f"most {room} bps: a price of {price} leaves {price - fee} credits after the fee of "
        f"{fee}, less than the {price * total // BPS} the royalties ask.",
        code="royalties_exceed_price",
        details={
            "royalty_bps_total": total,
            "royalty_bps_max": room,
            "price": price,
            "fee": fee,
            "ancestors": [{"ancestor": label, "royalty_bps": bps} for _, bps, label in royalties],
        },
    )


@transaction.atomic
def listing_create(
    *,
    seller: User,
    target: ModelVersion | DatasetVersion,
    price: object = 0,
    early_access_until: datetime.datetime | None = None,
    royalty_bps: object = 0,
    shares: Sequence[tuple[str, object]] = (),
) -> Listing:
    """List a model version or a public dataset version (its owner only)."""
    if _owner_id(target) != seller.pk:
        raise AccessDeniedError("Only the owner can list this.", code="not_owner")
    if isinstance(target, DatasetVersion) and (
        target.dataset.kind != DatasetKind.PUBLIC or target.blob_id is None
    ):
        raise ApplicationError(
            "Only public, hosted dataset versions can be listed.", code="not_listable"
        )
    field = "model_version" if isinstance(target, ModelVersion) else "dataset_version"
    if Listing.objects.filter(**{field: target}).exists():
        raise ConflictError(
            "This version is already listed; update the listing.", code="already_listed"
        )
    cleaned_price = _price(price)
    if early_access_until is not None and cleaned_price == 0:
        raise ApplicationError("Early access needs a price.", code="bad_early_access")
    listing = Listing(
        seller=seller,
        price=cleaned_price,
        early_access_until=early_access_until,
        royalty_bps=_royalty(royalty_bps),
        **{field: target},
    )
    cleaned_shares = _shares(shares)
    _check_sale(listing)
    listing.save()
    ListingShare.objects.bulk_create(
        ListingShare(listing=listing, user=user, percent=p) for user, p in cleaned_shares
    )
    return listing


@transaction.atomic
def listing_update(
    *,
    listing: Listing,
    user: User,
    price: object = _UNSET,
    early_access_until: object = _UNSET,
    royalty_bps: object = _UNSET,
    shares: object = _UNSET,
    is_active: object = _UNSET,
) -> Listing:
    listing = Listing.objects.select_for_update().get(pk=listing.pk)
    if listing.seller_id != user.pk:
        raise AccessDeniedError("Only the seller can change this listing.", code="not_owner")
    if price is not _UNSET:
        listing.price = _price(price)
    if early_access_until is not _UNSET:
        listing.early_access_until = early_access_until  # type: ignore[assignment]
    if royalty_bps is not _UNSET:
        listing.royalty_bps = _royalty(royalty_bps)
    if is_active is not _UNSET:
        listing.is_active = bool(is_active)
    if listing.early_access_until is not None and listing.price == 0:
        raise ApplicationError("Early access needs a price.", code="bad_early_access")
    _check_sale(listing)
    listing.save()
    if shares is not _UNSET:
        cleaned = _shares(shares)  # type: ignore[arg-type]
        listing.shares.all().delete()
        ListingShare.objects.bulk_create(
            ListingShare(listing=listing, user=u, percent=p) for u, p in cleaned
        )
    return listing


@transaction.atomic
def listing_terms_set(
    *, seller: User, version: ModelVersion, license_code: str, price: object
) -> Listing | None:
    """The owner's "license and price" page: both in one step, all or nothing.

    The license may change only until the version is first published (the registry's rule);
    a price of 0 on a version that was never listed leaves it unlisted, that is free.
    """
    if version.model.owner_id != seller.pk:
        raise AccessDeniedError("Only the owner can sell this.", code="not_owner")
    if license_code != version.license_code:
        version = version_license_set(version=version, user=seller, license_code=license_code)
    listing = Listing.objects.filter(model_version=version).first()
    if listing is not None:
        return listing_update(listing=listing, user=seller, price=price, is_active=True)
    if _price(price) == 0:
        license_check(version=version, for_sale=False)
        return None
    return listing_create(seller=seller, target=version, price=price)
