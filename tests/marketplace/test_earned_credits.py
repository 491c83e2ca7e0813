"""Bought credits (the wallet) are spendable; earned credits (earnings) are also withdrawable.

The rule lives in the ledger: two accounts per user, the services that credit each, the order
spending takes them in, and (PostgreSQL) a trigger behind the services.
"""

from __future__ import annotations

import importlib

import pytest
from django.db import DatabaseError, connection, transaction

from core.errors import ApplicationError
from marketplace.models import Account, AccountKind
from marketplace.selectors import wallet_balance, withdrawable_balance
from marketplace.services.ledger import (
    credit_grant_create,
    earnings_get_or_create,
    escrow_hold_create,
    escrow_settle,
    external_account,
    ledger_transfer,
    payouts_clearing_account,
    wallet_get_or_create,
)
from marketplace.services.listings import listing_create
from marketplace.services.payouts import payout_reject, payout_request
from marketplace.services.purchases import purchase_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _minimum(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ATELIER_PAYOUT_MINIMUM = 10
    settings.ATELIER_PLATFORM_FEE_BPS = 1000


def _balances(user) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(bought, earned)."""
    return (wallet_get_or_create(user=user).balance, earnings_get_or_create(user=user).balance)


def test_top_ups_and_grants_are_spendable_but_not_withdrawable(make_user, fund) -> None:
    # given: 300 bought, 200 granted by staff
    alice, boss = make_user("alice"), make_user("boss", is_staff=True)
    fund(alice, 300)
    credit_grant_create(staff=boss, user=alice, amount=200, reason="welcome")
    # when she asks for a payout
    with pytest.raises(ApplicationError) as err:
        payout_request(user=alice, amount=50)
    # then: refused, nothing moved
    assert err.value.code == "above_balance"
    assert err.value.details == {"amount": 50, "withdrawable": 0}
    assert (wallet_balance(user=alice), withdrawable_balance(user=alice)) == (500, 0)
    assert payouts_clearing_account().balance == 0


def test_sale_royalty_and_share_are_earned(
    make_user, make_version, fund, ledger_is_balanced
) -> None:
    # given: a base with a 1000 bps royalty; a derivative sold by seller with a collaborator
    base_owner, seller, collab, buyer = (
        make_user(n) for n in ("base", "seller", "collab", "buyer")
    )
    base = make_version(base_owner, license_code="mit")
    listing_create(seller=base_owner, target=base, price=0, royalty_bps=1000)
    derived = make_version(seller, license_code="mit", parents=(base,))
    listing = listing_create(
        seller=seller, target=derived, price=100, shares=[("seller", 50), ("collab", 50)]
    )
    fund(buyer, 100)
    # when
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k")
    # then: fee 10, royalty 10, 80 shared 40/40; every part earned, the buyer's 100 spent
    assert _balances(base_owner) == (0, 10)
    assert _balances(seller) == (0, 40)
    assert _balances(collab) == (0, 40)
    assert _balances(buyer) == (0, 0)
    ledger_is_balanced()


def test_dataset_earnings_from_escrow_are_earned(make_user, fund) -> None:
    # given: a trainer's escrow paying a data owner, as a federated job's settlement does
    trainer, owner = make_user("trainer"), make_user("owner")
    fund(trainer, 100)
    hold = escrow_hold_create(payer=trainer, amount=100, reference="job-1")
    # when
    escrow_settle(escrow_hold=hold, payouts=[(owner, 60)], fee=6)
    # then: the owner's 60 are withdrawable; the trainer's refund of 34 stays bought
    assert _balances(owner) == (0, 60)
    assert _balances(trainer) == (34, 0)
    payout_request(user=owner, amount=60)
    assert withdrawable_balance(user=owner) == 0


def test_spending_takes_bought_credits_first_then_earned(
    make_user, make_version, fund, earn
) -> None:
    # given: 100 bought and 200 earned
    alice, seller = make_user("alice"), make_user("seller")
    fund(alice, 100)
    earn(alice, 200)
    listing = listing_create(
        seller=seller, target=make_version(seller, license_code="mit"), price=150
    )
    # when she buys for 150
    purchase = purchase_create(buyer=alice, listing=listing, idempotency_key="k")
    # then: the 100 bought go first, then 50 earned
    assert _balances(alice) == (0, 150)
    charges = sorted(
        (e.account.kind, e.amount)
        for e in purchase.ledger_transaction.entries.filter(memo="charge")
    )
    assert charges == [(AccountKind.EARNINGS, -50), (AccountKind.WALLET, -100)]


def test_short_of_both_together_is_402_and_moves_nothing(
    make_user, make_version, fund, earn
) -> None:
    alice, seller = make_user("alice"), make_user("seller")
    fund(alice, 10)
    earn(alice, 20)
    listing = listing_create(
        seller=seller, target=make_version(seller, license_code="mit"), price=31
    )
    with pytest.raises(ApplicationError) as err:
        purchase_create(buyer=alice, listing=listing, idempotency_key="k")
    assert (err.value.status_code, err.value.code) == (402, "insufficient_funds")
    assert err.value.details["balance"] == 30
    assert _balances(alice) == (10, 20)


def test_escrow_refund_gives_earned_credits_back_as_earned_bought_spent_first(
    make_user, fund, earn
) -> None:
    # given: a hold of 100 that took 40 bought and 60 earned
    trainer, owner = make_user("trainer"), make_user("owner")
    fund(trainer, 40)
    earn(trainer, 60)
    hold = escrow_hold_create(payer=trainer, amount=100, reference="job-2")
    assert _balances(trainer) == (0, 0)
    # when 50 are spent (paid to an owner) and 50 refunded
    escrow_settle(escrow_hold=hold, payouts=[(owner, 50)], fee=0)
    # then: the 50 spent count as the 40 bought and 10 earned; 50 earned come back
    assert _balances(trainer) == (0, 50)


def test_what_a_user_pays_themselves_stays_bought(make_user, make_version, fund) -> None:
    # given: a trainer whose job trains on their own dataset, and a buyer who owns the base
    # (5000 bps royalty) of what they buy
    trainer = make_user("trainer")
    fund(trainer, 100)
    hold = escrow_hold_create(payer=trainer, amount=100, reference="job-3")
    escrow_settle(escrow_hold=hold, payouts=[(trainer, 70)], fee=0)
    assert _balances(trainer) == (100, 0)
    buyer, seller = make_user("buyer"), make_user("seller")
    base = make_version(buyer, license_code="mit")
    listing_create(seller=buyer, target=base, price=0, royalty_bps=5000)
    listing = listing_create(
        seller=seller, target=make_version(seller, license_code="mit", parents=(base,)), price=100
    )
    fund(buyer, 100)
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k")
    # then: the royalty the buyer paid themselves is bought again, not earned
    assert _balances(buyer) == (50, 0)
    assert _balances(seller) == (0, 40)


def test_rejected_payout_returns_to_earnings(make_user, earn) -> None:
    alice, boss = make_user("alice"), make_user("boss", is_staff=True)
    earn(alice, 100)
    payout = payout_request(user=alice, amount=80)
    assert _balances(alice) == (0, 20)
    payout_reject(payout=payout, staff=boss)
    assert _balances(alice) == (0, 100)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL triggers")
def test_database_refuses_a_payout_from_bought_credits(make_user, fund) -> None:
    # given: a transfer written behind the services' back
    alice = make_user("alice")
    fund(alice, 100)
    wallet = wallet_get_or_create(user=alice)
    # then: the trigger refuses it
    with pytest.raises(DatabaseError, match="only earned credits"), transaction.atomic():
        ledger_transfer(
            legs=[(wallet, -50), (payouts_clearing_account(), 50)], kind="payout_request"
        )
    assert _balances(alice) == (100, 0)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL triggers")
def test_database_refuses_minting_earned_credits(make_user) -> None:
    alice = make_user("alice")
    earnings = earnings_get_or_create(user=alice)
    with pytest.raises(DatabaseError, match="cannot credit earned credits"), transaction.atomic():
        ledger_transfer(legs=[(external_account("demo"), -50), (earnings, 50)], kind="top_up")
    assert _balances(alice) == (0, 0)


def test_earnings_opening_migration_splits_wallets_and_is_reversible(make_user, fund) -> None:
    from django.apps import apps as global_apps

    # given: a wallet from before the split: 500 earned from a sale, 300 bought, 100 spent
    alice = make_user("alice")
    fund(alice, 300)
    wallet = wallet_get_or_create(user=alice)
    ledger_transfer(
        legs=[(external_account("legacy"), -500), (wallet, 500)],
        kind="purchase",
        memos=["charge", "seller"],
    )
    ledger_transfer(
        legs=[(wallet, -100), (external_account("legacy"), 100)],
        kind="purchase",
        memos=["charge", "fee"],
    )
    module = importlib.import_module("marketplace.migrations.0007_earnings_opening")
    with connection.schema_editor() as editor:
        # when the migration runs: the 500 earned move to earnings (spending took bought first)
        module.forward(global_apps, editor)
        assert _balances(alice) == (200, 500)
        # and backwards: every credit back in the wallet
        module.backward(global_apps, editor)
        assert _balances(alice) == (700, 0)
        # and forwards again: the same split
        module.forward(global_apps, editor)
        assert _balances(alice) == (200, 500)
    assert Account.objects.filter(kind=AccountKind.EARNINGS, owner=alice).count() == 1
