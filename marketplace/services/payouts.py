"""Payouts: creators and data owners cash out earned credits; staff pay or reject them.

Only earned credits (the user's ``earnings`` account: sales, royalties, shares, dataset
earnings) can be paid out; bought credits (the ``wallet``: top-ups, grants) are spendable only.
Requesting moves the credits earnings -> payouts clearing in the ledger, so they cannot be
spent while the request waits. Paid moves them clearing -> ``external:payouts`` (they left the
platform); rejected moves them back to earnings. Each step is one ledger transaction.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from core.errors import AccessDeniedError, ApplicationError, ConflictError
from marketplace.models import Payout, PayoutStatus
from marketplace.services.ledger import (
    earnings_get_or_create,
    external_account,
    ledger_transfer,
    payouts_clearing_account,
    positive_credits,
)


def payout_minimum() -> int:
    return int(settings.ATELIER_PAYOUT_MINIMUM)


@transaction.atomic
def payout_request(*, user: User, amount: object) -> Payout:
    """Set ``amount`` earned credits aside for a payout (at least the minimum, at most the
    earned balance: bought credits are never withdrawable).

    Locks the user's earnings account and the clearing account (inside ``ledger_transfer``,
    whose balance check under the lock is the final word).
    """
    credits = positive_credits(amount)
    minimum = payout_minimum()
    if credits < minimum:
        raise ApplicationError(
            f"The minimum payout is {minimum} credits.",
            code="below_minimum",
            details={"amount": credits, "minimum": minimum},
        )
    earnings = earnings_get_or_create(user=user)
    earnings.refresh_from_db(fields=["balance"])
    if credits > earnings.balance:
        raise ApplicationError(
            f"You asked for {credits} credits but you have {earnings.balance} earned credits "
            "to withdraw; bought credits can be spent, not paid out.",
            code="above_balance",
            details={"amount": credits, "withdrawable": earnings.balance},
        )
    payout = Payout.objects.create(user_id=user.pk, amount=credits)
    payout.request_transaction = ledger_transfer(  # re-checks the balance under the lock
        legs=[(earnings, -credits), (payouts_clearing_account(), credits)],
        kind="payout_request",
        reference=f"payout:{payout.pk}",
        idempotency_key=f"payout_request:{payout.pk}",
        memos=["payout requested", "payout pending"],
    )
    payout.save(update_fields=["request_transaction"])
    return payout


def _require_staff(staff: User) -> None:
    if not getattr(staff, "is_staff", False):
        raise AccessDeniedError("Only staff can settle payouts.", code="staff_only")


def _lock_pending(payout: Payout) -> Payout:
    locked = Payout.objects.select_for_update().get(pk=payout.pk)
    if locked.status != PayoutStatus.PENDING:
        raise ConflictError(f"This payout is already {locked.status}.", code="payout_settled")
    return locked


@transaction.atomic
def payout_mark_paid(*, payout: Payout, staff: User, note: str = "") -> Payout:
    """Record that the money was sent: pending -> paid. Locks the payout row, then accounts."""
    _require_staff(staff)
    locked = _lock_pending(payout)
    locked.settle_transaction = ledger_transfer(
        legs=[
            (payouts_clearing_account(), -locked.amount),
            (external_account("payouts"), locked.amount),
        ],
        kind="payout_paid",
        reference=f"payout:{locked.pk}",
        idempotency_key=f"payout_settle:{locked.pk}",
        memos=["payout paid", "paid out"],
    )
    return _handled(locked, staff, PayoutStatus.PAID, note)


@transaction.atomic
def payout_reject(*, payout: Payout, staff: User, note: str = "") -> Payout:
    """Refuse the payout: the credits go back to earnings. Locks the payout, then accounts."""
    _require_staff(staff)
    locked = _lock_pending(payout)
    locked.settle_transaction = ledger_transfer(
        legs=[
            (payouts_clearing_account(), -locked.amount),
            (earnings_get_or_create(user=locked.user), locked.amount),
        ],
        kind="payout_rejected",
        reference=f"payout:{locked.pk}",
        idempotency_key=f"payout_settle:{locked.pk}",
        memos=["payout rejected", "returned"],
    )
    return _handled(locked, staff, PayoutStatus.REJECTED, note)


def _handled(payout: Payout, staff: User, status: str, note: str) -> Payout:
    payout.status = status
    payout.handled_by_id = staff.pk
    payout.handled_at = timezone.now()
    payout.note = note.strip()[:300]
    payout.save(update_fields=["status", "settle_transaction", "handled_by", "handled_at", "note"])
    return payout
