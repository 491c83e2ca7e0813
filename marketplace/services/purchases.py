"""Buying a listing: charge, revenue split and entitlement in one database transaction."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from core.errors import ApplicationError, ConflictError, NotFoundError
from marketplace.models import Account, Entitlement, Listing, Purchase
from marketplace.revenue_split import revenue_split
from marketplace.selectors import is_entitled, listing_price_now, upstream_royalties
from marketplace.services.ledger import (
    Leg,
    accounts_lock,
    earnings_get_or_create,
    ledger_transfer,
    platform_revenue_account,
    spending_legs,
    wallet_get_or_create,
)
from registry.access import can_view_dataset, can_view_version
from registry.models import ModelVersion


def platform_fee_bps() -> int:
    return int(settings.ATELIER_PLATFORM_FEE_BPS)


def _same_purchase(existing: Purchase, listing: Listing) -> Purchase:
    if existing.listing_id != listing.pk:
        raise ConflictError(
            "That Idempotency-Key was used for a purchase of another listing.",
            code="idempotency_key_reused",
            details={"purchase_id": existing.pk, "listing_id": existing.listing_id},
        )
    return existing


def purchase_create(*, buyer: User, listing: Listing, idempotency_key: str) -> Purchase:
    """Buy ``listing`` for ``buyer``. The same key and listing return the first purchase.

    Locks, in this order: every ledger account involved, ascending pk (the buyer's wallet and
    earnings among them), which serialises all purchases by one buyer; the price is taken from
    the buyer's bought credits first, then earned ones; then checks the key and the
    entitlement again under the lock, moves the credits and grants the entitlement.
    """
    key = (idempotency_key or "").strip()
    if not key or len(key) > 200:
        raise ApplicationError(
            "An Idempotency-Key (1-200 characters) is required.", code="idempotency_key_required"
        )
    _accounts_ensure(buyer=buyer, listing=listing)
    try:
        return _purchase_create(buyer=buyer, listing_id=listing.pk, key=key)
    except IntegrityError:
        # A concurrent request with the same key won the race; answer with its purchase.
        existing = Purchase.objects.filter(buyer_id=buyer.pk, idempotency_key=key).first()
        if existing is None:
            raise
        return _same_purchase(existing, listing)


def _accounts_ensure(*, buyer: User, listing: Listing) -> None:
    """Create, each in its own committed transaction, the ledger accounts a purchase of
    ``listing`` credits or debits. Created inside the purchase's transaction, a first sale's
    new account row would hold its unique-key lock until commit while that transaction waits
    for other accounts' row locks: concurrent first sales then deadlock on PostgreSQL."""
    wallet_get_or_create(user=buyer)
    earnings_get_or_create(user=buyer)
    platform_revenue_account(buyer.pk)
    recipients = {listing.seller_id, *(s.user_id for s in listing.shares.all())}
    recipients.update(owner for owner, _, _ in upstream_royalties(listing.target))
    for user_id in recipients - {buyer.pk}:
        _earnings_for_id(user_id)


@transaction.atomic
def _purchase_create(*, buyer: User, listing_id: int, key: str) -> Purchase:
    existing = Purchase.objects.filter(buyer_id=buyer.pk, idempotency_key=key).first()
    listing = (
        Listing.objects.select_related("model_version__model", "dataset_version__dataset")
        .filter(pk=listing_id)
        .first()
    )
    if listing is None:
        raise NotFoundError("No such listing.")
    if existing is not None:
        return _same_purchase(existing, listing)
    target = listing.target
    visible = (
        can_view_version(buyer, target)
        if isinstance(target, ModelVersion)
        else can_view_dataset(buyer, target.dataset)
    )
    if not listing.is_active or not visible:
        raise NotFoundError("No such listing.")
    if listing.seller_id == buyer.pk:
        raise ApplicationError("You cannot buy your own listing.", code="own_listing")

    price = listing_price_now(listing)
    shares = [(s.user_id, s.percent) for s in listing.shares.all()]
    royalties = [(owner, bps) for owner, bps, _ in upstream_royalties(target)]
    parts = revenue_split(
        price=price,
        fee_bps=platform_fee_bps(),
        seller=listing.seller_id,
        royalties=royalties,
        shares=shares,
    )

    buyer_wallet = wallet_get_or_create(user=buyer)
    buyer_earnings = earnings_get_or_create(user=buyer)
    accounts: dict[object, Account] = {"platform": platform_revenue_account(buyer.pk)}
    for part in parts:
        if part.recipient not in accounts:
            assert isinstance(part.recipient, int)
            # Earned credits, except what the buyer pays back to themselves (a royalty of
            # their own base, their collaborator share): that stays bought.
            accounts[part.recipient] = (
                buyer_wallet if part.recipient == buyer.pk else _earnings_for_id(part.recipient)
            )
    locked = accounts_lock([buyer_wallet.pk, buyer_earnings.pk, *(a.pk for a in accounts.values())])

    # Under the buyer's wallet lock: no other purchase by this buyer is in flight.
    existing = Purchase.objects.filter(buyer_id=buyer.pk, idempotency_key=key).first()
    if existing is not None:
        return _same_purchase(existing, listing)
    if is_entitled(buyer, target):
        raise ConflictError("You already own this.", code="already_owned")

    purchase = Purchase.objects.create(
        buyer_id=buyer.pk, listing=listing, price=price, idempotency_key=key
    )
    if price > 0:
        legs: list[Leg] = spending_legs(
            wallet=locked[buyer_wallet.pk], earnings=locked[buyer_earnings.pk], amount=price
        )
        memos = ["charge"] * len(legs)
        for part in parts:
            legs.append((accounts[part.recipient], part.amount))
            memos.append(part.role)
        purchase.ledger_transaction = ledger_transfer(
            legs=legs,
            kind="purchase",
            reference=f"purchase:{purchase.pk}",
            idempotency_key=f"purchase:{purchase.pk}",
            memos=memos,
        )
        purchase.save(update_fields=["ledger_transaction"])
    field = "model_version" if isinstance(target, ModelVersion) else "dataset_version"
    Entitlement.objects.create(user_id=buyer.pk, purchase=purchase, **{field: target})
    return purchase


def _earnings_for_id(user_id: int) -> Account:
    from django.contrib.auth import get_user_model

    return earnings_get_or_create(user=get_user_model()(pk=user_id))
