"""The double-entry ledger: accounts, transfers, escrow, top-ups and grants.

Each user has two accounts. The ``wallet`` holds credits they bought (top-ups, staff grants,
refunds): spendable, never withdrawable. ``earnings`` holds credits they earned (their part of
a sale: seller, collaborator share, upstream royalty; a data owner's pay from a federated job's
escrow): spendable, and the only credits a payout may take. Spending (a purchase, an escrow
hold) takes bought credits first, then earned ones, so a user keeps as much withdrawable as
possible. A refund from escrow gives back earned credits up to what the hold took from
earnings (the part spent counts as bought first), the rest as bought credits. On PostgreSQL a
trigger refuses a payout request that debits anything but an earnings account, and a credit to
an earnings account from any transfer but an earning one (migration 0008).

Amounts are integer credits. A transfer is a list of legs ``(account, amount)`` that sum to
zero; it locks every account it touches with ``SELECT ... FOR UPDATE`` in ascending primary-key
order (the one lock order used everywhere, so concurrent transfers cannot deadlock), writes one
``LedgerTransaction`` and its ``LedgerEntry`` rows, and updates each account's balance in the
same database transaction. Rows are never updated or deleted.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from core.errors import ApplicationError, ConflictError, NotFoundError
from marketplace.models import (
    Account,
    AccountKind,
    CreditGrant,
    EscrowHold,
    EscrowStatus,
    LedgerEntry,
    LedgerTransaction,
    TopUp,
)
from marketplace.payments import PaymentProvider

PLATFORM_REVENUE = "platform:revenue"
PAYOUTS_CLEARING = "platform:payouts-clearing"
GRANTS = "external:grants"

Leg = tuple[Account, int]


class InsufficientFundsError(ApplicationError):
    status_code = 402
    code = "insufficient_funds"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_credits(value: object, field: str = "amount") -> int:
    """``value`` as a positive whole number of credits, or a 400 naming the field."""
    if not _is_int(value) or int(value) <= 0:  # type: ignore[call-overload]
        raise ApplicationError(
            f"{field} must be a positive whole number of credits.",
            code=f"bad_{field}",
            details={field: repr(value)},
        )
    return int(value)  # type: ignore[call-overload]


def _system_account(code: str, kind: str) -> Account:
    account = Account.objects.filter(code=code).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return Account.objects.create(code=code, kind=kind)
    except IntegrityError:
        return Account.objects.get(code=code)


PLATFORM_REVENUE_SHARDS = 16


def platform_revenue_account(shard: int = 0) -> Account:
    """One of several platform revenue accounts (their sum is the revenue).

    Every purchase credits the platform; with one account, that row's lock would serialise all
    purchases on the site. Purchases pick a shard by buyer, so unrelated purchases run in
    parallel.
    """
    shard %= PLATFORM_REVENUE_SHARDS
    code = PLATFORM_REVENUE if shard == 0 else f"{PLATFORM_REVENUE}:{shard}"
    return _system_account(code, AccountKind.PLATFORM_REVENUE)


def payouts_clearing_account() -> Account:
    return _system_account(PAYOUTS_CLEARING, AccountKind.PAYOUTS_CLEARING)


def external_account(source: str) -> Account:
    """Where credits come from outside the platform (a payment provider, staff grants)."""
    return _system_account(f"external:{source}", AccountKind.EXTERNAL)


def _user_account(user_id: int, kind: str) -> Account:
    account = Account.objects.filter(kind=kind, owner_id=user_id).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return Account.objects.create(kind=kind, owner_id=user_id, code=f"{kind}:{user_id}")
    except IntegrityError:
        return Account.objects.get(kind=kind, owner_id=user_id)


def wallet_get_or_create(*, user: User) -> Account:
    """The user's bought credits: spendable, not withdrawable."""
    return _user_account(user.pk, AccountKind.WALLET)


def earnings_get_or_create(*, user: User) -> Account:
    """The user's earned credits: spendable and withdrawable (payouts take only these)."""
    return _user_account(user.pk, AccountKind.EARNINGS)


def spending_legs(*, wallet: Account, earnings: Account, amount: int) -> list[Leg]:
    """The debit legs that take ``amount`` from a user: bought credits (``wallet``) first,
    then earned ones; 402 when both together fall short.

    The caller holds the locks of both accounts (``accounts_lock``, with every other account
    of the transfer, in one call) and passes the locked rows, whose balances are current.
    """
    total = wallet.balance + earnings.balance
    if amount > total:
        raise InsufficientFundsError(
            f"Not enough credits: balance {total} ({wallet.balance} bought, "
            f"{earnings.balance} earned), needs {amount}.",
            details={
                "balance": total,
                "bought": wallet.balance,
                "earned": earnings.balance,
                "required": amount,
            },
        )
    from_bought = min(wallet.balance, amount)
    legs: list[Leg] = []
    if from_bought:
        legs.append((wallet, -from_bought))
    if amount - from_bought:
        legs.append((earnings, -(amount - from_bought)))
    return legs


def accounts_lock(account_ids: Iterable[int]) -> dict[int, Account]:
    """Lock the accounts, in ascending pk order; the caller must be inside ``atomic``."""
    ids = sorted(set(account_ids))
    locked = list(Account.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
    if len(locked) != len(ids):
        raise NotFoundError("A ledger account does not exist.", code="account_not_found")
    return {a.pk: a for a in locked}


def _validate_legs(legs: Sequence[Leg]) -> None:
    if len(legs) < 2:
        raise ApplicationError("A transfer needs at least two legs.", code="bad_transfer")
    for account, amount in legs:
        if not _is_int(amount):
            raise ApplicationError(
                "Ledger amounts are whole credits.",
                code="bad_amount",
                details={"account": account.code, "amount": repr(amount)},
            )
        if amount == 0:
            raise ApplicationError("A ledger leg cannot be zero.", code="bad_amount")
    total = sum(amount for _, amount in legs)
    if total != 0:
        raise ApplicationError(
            f"The legs of a transfer must sum to zero (they sum to {total}).",
            code="unbalanced_transfer",
        )


def _existing(idempotency_key: str, kind: str) -> LedgerTransaction:
    txn = LedgerTransaction.objects.get(idempotency_key=idempotency_key)
    if txn.kind != kind:
        raise ConflictError(
            "That idempotency key was used for another kind of transfer.", code="key_reused"
        )
    return txn


@transaction.atomic
def ledger_transfer(
    *,
    legs: Sequence[Leg],
    kind: str,
    reference: str = "",
    idempotency_key: str | None = None,
    memos: Sequence[str] | None = None,
) -> LedgerTransaction:
    """Move credits between accounts atomically; returns the (possibly earlier) transaction.

    Locks every account in the legs (ascending pk). Refuses with 402 when a non-external
    account would go below zero. With an ``idempotency_key`` already used, returns the
    transaction recorded then and moves nothing.
    """
    _validate_legs(legs)
    if memos is not None and len(memos) != len(legs):
        raise ApplicationError("One memo per leg.", code="bad_transfer")
    if (
        idempotency_key
        and LedgerTransaction.objects.filter(idempotency_key=idempotency_key).exists()
    ):
        return _existing(idempotency_key, kind)
    locked = accounts_lock(account.pk for account, _ in legs)
    if (
        idempotency_key
        and LedgerTransaction.objects.filter(idempotency_key=idempotency_key).exists()
    ):
        return _existing(idempotency_key, kind)
    delta: dict[int, int] = defaultdict(int)
    for account, amount in legs:
        delta[account.pk] += amount
    for pk, change in delta.items():
        account = locked[pk]
        if account.kind != AccountKind.EXTERNAL and account.balance + change < 0:
            raise InsufficientFundsError(
                f"Not enough credits in {account.code}: balance {account.balance}, "
                f"needs {-change}.",
                details={"account": account.code, "balance": account.balance, "required": -change},
            )
    try:
        with transaction.atomic():
            txn = LedgerTransaction.objects.create(
                kind=kind, reference=reference[:200], idempotency_key=idempotency_key or None
            )
    except IntegrityError:  # a concurrent transfer with the same key committed first
        return _existing(idempotency_key or "", kind)
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            transaction=txn,
            account_id=account.pk,
            amount=amount,
            memo=(memos[i] if memos else "")[:120],
        )
        for i, (account, amount) in enumerate(legs)
    )
    for pk, change in delta.items():
        if change:
            account = locked[pk]
            account.balance += change
            Account.objects.filter(pk=pk).update(balance=account.balance)
    return txn


# --- top-ups and grants ------------------------------------------------------------------


@transaction.atomic
def wallet_top_up(
    *, user: User, amount: object, provider: PaymentProvider, idempotency_key: str
) -> TopUp:
    """Charge ``provider`` and credit the wallet. The same key returns the same top-up."""
    credits = positive_credits(amount)
    key = (idempotency_key or "").strip()
    if not key:
        raise ApplicationError("A top-up needs an idempotency key.", code="key_required")
    existing = TopUp.objects.filter(user_id=user.pk, idempotency_key=key).first()
    if existing is not None:
        if existing.amount != credits:
            raise ConflictError(
                "That idempotency key was used for a different top-up.", code="key_reused"
            )
        return existing
    result = provider.charge(user_id=user.pk, amount=credits, reference=key)
    if not result.approved:
        raise ApplicationError(
            result.message or "The payment was declined.", code="payment_declined", status=402
        )
    wallet = wallet_get_or_create(user=user)
    source = external_account(provider.name)
    txn = ledger_transfer(
        legs=[(source, -credits), (wallet, credits)],
        kind="top_up",
        reference=f"{provider.name}:{result.provider_reference}",
        idempotency_key=f"top_up:{user.pk}:{key}",
    )
    return TopUp.objects.create(
        user_id=user.pk,
        amount=credits,
        provider=provider.name,
        provider_reference=result.provider_reference,
        idempotency_key=key,
        ledger_transaction=txn,
    )


@transaction.atomic
def credit_grant_create(*, staff: User, user: User, amount: object, reason: str) -> CreditGrant:
    if not getattr(staff, "is_staff", False):
        raise ApplicationError("Only staff can grant credits.", code="forbidden", status=403)
    credits = positive_credits(amount)
    if not reason.strip():
        raise ApplicationError("A grant needs a reason.", code="reason_required")
    txn = ledger_transfer(
        legs=[(external_account("grants"), -credits), (wallet_get_or_create(user=user), credits)],
        kind="grant",
        reference=f"grant by {staff.pk}: {reason.strip()}",
    )
    return CreditGrant.objects.create(
        user_id=user.pk,
        amount=credits,
        reason=reason.strip()[:300],
        granted_by_id=staff.pk,
        ledger_transaction=txn,
    )


# --- escrow --------------------------------------------------------------------------------


@transaction.atomic
def escrow_hold_create(*, payer: User, amount: object, reference: str) -> EscrowHold:
    """Move ``amount`` from the payer's credits (bought first, then earned) into a new escrow
    account (402 if short). Locks the payer's two accounts and the escrow's, ascending pk."""
    credits = positive_credits(amount)
    reference = reference.strip()
    if not reference:
        raise ApplicationError("An escrow hold needs a reference.", code="reference_required")
    existing = EscrowHold.objects.filter(reference=reference).first()
    if existing is not None:
        if existing.payer_id != payer.pk or existing.amount != credits:
            raise ConflictError("That escrow reference is taken.", code="key_reused")
        return existing
    account = Account.objects.create(kind=AccountKind.ESCROW, code=f"escrow:{uuid.uuid4().hex}")
    wallet, earnings = wallet_get_or_create(user=payer), earnings_get_or_create(user=payer)
    locked = accounts_lock([wallet.pk, earnings.pk, account.pk])
    legs = spending_legs(wallet=locked[wallet.pk], earnings=locked[earnings.pk], amount=credits)
    ledger_transfer(
        legs=[*legs, (account, credits)],
        kind="escrow_hold",
        reference=reference,
        idempotency_key=f"escrow_hold:{reference}",
    )
    return EscrowHold.objects.create(
        account=account, payer_id=payer.pk, amount=credits, reference=reference
    )


@transaction.atomic
def escrow_settle(
    *,
    escrow_hold: EscrowHold,
    payouts: Sequence[tuple[User, int]],
    fee: int,
    refund_to: User | None = None,
) -> LedgerTransaction | None:
    """Pay these parties these amounts from this escrow, the platform ``fee``, and refund
    the rest to ``refund_to`` (the payer by default). Settles once; a second call is refused.

    Locks the escrow hold row, then (inside ``ledger_transfer``) the accounts by pk.
    """
    hold = EscrowHold.objects.select_for_update().get(pk=escrow_hold.pk)
    if hold.status != EscrowStatus.HELD:
        raise ConflictError("This escrow is already settled.", code="escrow_settled")
    if not _is_int(fee) or fee < 0:
        raise ApplicationError("The fee is a whole number of credits, 0 or more.", code="bad_fee")
    for _, amount in payouts:
        if not _is_int(amount) or amount < 0:
            raise ApplicationError(
                "Payouts are whole numbers of credits, 0 or more.", code="bad_amount"
            )
    account = Account.objects.get(pk=hold.account_id)
    paid = sum(amount for _, amount in payouts) + fee
    refund = account.balance - paid
    if refund < 0:
        raise ApplicationError(
            f"The escrow holds {account.balance} credits; payouts and fee need {paid}.",
            code="escrow_overdrawn",
            details={"held": account.balance, "requested": paid},
        )
    legs: list[Leg] = []
    memos: list[str] = []
    for user, amount in payouts:
        if amount:  # earned: a data owner's pay (what the payer pays themselves stays bought)
            own = user.pk == hold.payer_id
            legs.append(
                (
                    wallet_get_or_create(user=user) if own else earnings_get_or_create(user=user),
                    amount,
                )
            )
            memos.append("payout")
    if fee:
        legs.append((platform_revenue_account(), fee))
        memos.append("fee")
    if refund:
        refund_user = refund_to if refund_to is not None else hold.payer
        # Earned credits go back as earned, up to what the hold took from earnings (spending
        # counts bought credits first); the rest, and any refund to someone else, as bought.
        earned_back = (
            min(refund, _earned_into_escrow(hold)) if refund_user.pk == hold.payer_id else 0
        )
        if refund - earned_back:
            legs.append((wallet_get_or_create(user=refund_user), refund - earned_back))
            memos.append("refund")
        if earned_back:
            legs.append((earnings_get_or_create(user=refund_user), earned_back))
            memos.append("refund")
    txn = None
    if account.balance:
        legs.append((account, -account.balance))
        memos.append("escrow release")
        txn = ledger_transfer(
            legs=legs,
            kind="escrow_settle",
            reference=hold.reference,
            idempotency_key=f"escrow_settle:{hold.pk}",
            memos=memos,
        )
    hold.status = EscrowStatus.SETTLED
    hold.settled_at = timezone.now()
    hold.save(update_fields=["status", "settled_at"])
    return txn


def _earned_into_escrow(hold: EscrowHold) -> int:
    """How many earned credits the hold took from its payer's earnings account."""
    taken = LedgerEntry.objects.filter(
        transaction__idempotency_key=f"escrow_hold:{hold.reference}",
        account__kind=AccountKind.EARNINGS,
        account__owner_id=hold.payer_id,
        amount__lt=0,
    ).aggregate(t=Sum("amount"))["t"]
    return -int(taken or 0)
