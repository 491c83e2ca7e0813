"""Payouts: creators and data owners cash out wallet credits; staff pay or reject them.

Requesting moves the credits wallet -> payouts clearing in the ledger, so they cannot be spent
while the request waits. Paid moves them clearing -> ``external:payouts`` (they left the
platform); rejected moves them back to the wallet. Each step is one ledger transaction.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.errors import AccessDeniedError, ApplicationError, ConflictError
from marketplace.models import Payout, PayoutStatus
from marketplace.services.ledger import (
    external_account,
    ledger_transfer,
    payouts_clearing_account,
    positive_credits,
    wallet_get_or_create,
)


def payout_minimum() -> int:
    return int(getattr(settings, "ATELIER_PAYOUT_MINIMUM", 1000))


@transaction.atomic
def payout_request(*, user: AbstractBaseUser, amount: object) -> Payout:
    """Set ``amount`` credits aside for a payout (at least the minimum, at most the balance).

    Locks the user's wallet and the clearing account (inside ``ledger_transfer``).
    """
    credits = positive_credits(amount)
    minimum = payout_minimum()
    if credits < minimum:
        raise ApplicationError(
            f"The minimum payout is {minimum} credits.", code="below_minimum",
            details={"amount": credits, "minimum": minimum},
        )
    wallet = wallet_get_or_create(user=user)
    wallet.refresh_from_db(fields=["balance"])
    if credits > wallet.balance:
        raise ApplicationError(
            f"You asked for {credits} credits but your balance is {wallet.balance}.",
            code="above_balance", details={"amount": credits, "balance": wallet.balance},
        )
    payout = Payout.objects.create(user_id=user.pk, amount=credits)
    payout.request_transaction = ledger_transfer(  # re-checks the balance under the lock
        legs=[(wallet, -credits), (payouts_clearing_account(), credits)],
        kind="payout_request", reference=f"payout:{payout.pk}",
        idempotency_key=f"payout_request:{payout.pk}",
        memos=["payout requested", "payout pending"],
    )
    payout.save(update_fields=["request_transaction"])
    return payout


def _require_staff(staff: AbstractBaseUser) -> None:
    if not getattr(staff, "is_staff", False):
        raise AccessDeniedError("Only staff can settle payouts.", code="staff_only")


def _lock_pending(payout: Payout) -> Payout:
    locked = Payout.objects.select_for_update().get(pk=payout.pk)
    if locked.status != PayoutStatus.PENDING:
        raise ConflictError(f"This payout is already {locked.status}.", code="payout_settled")
    return locked


@transaction.atomic
def payout_mark_paid(*, payout: Payout, staff: AbstractBaseUser, note: str = "") -> Payout:
    """Record that the money was sent: pending -> paid. Locks the payout row, then accounts."""
    _require_staff(staff)
    locked = _lock_pending(payout)
    locked.settle_transaction = ledger_transfer(
        legs=[(payouts_clearing_account(), -locked.amount), (external_account("payouts"),
                                                              locked.amount)],
        kind="payout_paid", reference=f"payout:{locked.pk}",
        idempotency_key=f"payout_settle:{locked.pk}", memos=["payout paid", "paid out"],
    )
    return _handled(locked, staff, PayoutStatus.PAID, note)


@transaction.atomic
def payout_reject(*, payout: Payout, staff: AbstractBaseUser, note: str = "") -> Payout:
    """Refuse the payout: the credits go back to the wallet. Locks the payout, then accounts."""
    _require_staff(staff)
    locked = _lock_pending(payout)
    locked.settle_transaction = ledger_transfer(
        legs=[(payouts_clearing_account(), -locked.amount),
              (wallet_get_or_create(user=locked.user), locked.amount)],
        kind="payout_rejected", reference=f"payout:{locked.pk}",
        idempotency_key=f"payout_settle:{locked.pk}", memos=["payout rejected", "returned"],
    )
    return _handled(locked, staff, PayoutStatus.REJECTED, note)


def _handled(payout: Payout, staff: AbstractBaseUser, status: str, note: str) -> Payout:
    payout.status = status
    payout.handled_by_id = staff.pk
    payout.handled_at = timezone.now()
    payout.note = note.strip()[:300]
    payout.save(update_fields=["status", "settle_transaction", "handled_by", "handled_at",
                               "note"])
    return payout
