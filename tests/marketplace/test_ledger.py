"""The double-entry ledger: transfers, invariants, append-only rows, escrow, top-ups."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from core.errors import ApplicationError, ConflictError
from marketplace.models import Account, CreditGrant, LedgerEntry, LedgerTransaction
from marketplace.payments import DecliningProvider, DemoProvider
from marketplace.selectors import ledger_reconcile, wallet_balance
from marketplace.services.ledger import (
    InsufficientFundsError,
    credit_grant_create,
    escrow_hold_create,
    escrow_settle,
    external_account,
    ledger_transfer,
    platform_revenue_account,
    wallet_get_or_create,
    wallet_top_up,
)

pytestmark = pytest.mark.django_db


def test_top_up_with_demo_provider_credits_the_wallet(alice, ledger_is_balanced) -> None:
    # when
    top_up = wallet_top_up(user=alice, amount=500, provider=DemoProvider(), idempotency_key="k1")
    # then
    assert wallet_balance(user=alice) == 500
    assert external_account("demo").balance == -500
    assert top_up.ledger_transaction.entries.count() == 2
    ledger_is_balanced()


def test_top_up_with_the_same_key_credits_once(alice) -> None:
    first = wallet_top_up(user=alice, amount=500, provider=DemoProvider(), idempotency_key="k")
    second = wallet_top_up(user=alice, amount=500, provider=DemoProvider(), idempotency_key="k")
    assert first.pk == second.pk
    assert wallet_balance(user=alice) == 500


def test_top_up_key_reused_for_another_amount_is_a_conflict(alice) -> None:
    wallet_top_up(user=alice, amount=500, provider=DemoProvider(), idempotency_key="k")
    with pytest.raises(ConflictError):
        wallet_top_up(user=alice, amount=7, provider=DemoProvider(), idempotency_key="k")


@pytest.mark.parametrize("amount", [0, -5, 2.5, "10", True, None])
def test_top_up_refuses_amounts_that_are_not_positive_whole_credits(alice, amount) -> None:
    with pytest.raises(ApplicationError) as err:
        wallet_top_up(user=alice, amount=amount, provider=DemoProvider(), idempotency_key="k")
    assert err.value.code == "bad_amount"
    assert LedgerTransaction.objects.count() == 0


def test_declined_payment_moves_nothing(alice) -> None:
    with pytest.raises(ApplicationError) as err:
        wallet_top_up(user=alice, amount=5, provider=DecliningProvider(), idempotency_key="k")
    assert err.value.status_code == 402
    assert LedgerEntry.objects.count() == 0


def test_transfer_moves_credits_and_keeps_balances_on_the_rows(
    alice, bob, fund, ledger_is_balanced
) -> None:
    fund(alice, 100)
    ledger_transfer(
        legs=[(wallet_get_or_create(user=alice), -30), (wallet_get_or_create(user=bob), 30)],
        kind="test",
    )
    assert wallet_balance(user=alice) == 70
    assert wallet_balance(user=bob) == 30
    ledger_is_balanced()


def test_transfer_refuses_a_negative_wallet_balance(alice, bob, fund) -> None:
    fund(alice, 10)
    before = LedgerEntry.objects.count()
    with pytest.raises(InsufficientFundsError) as err:
        ledger_transfer(
            legs=[(wallet_get_or_create(user=alice), -11), (wallet_get_or_create(user=bob), 11)],
            kind="test",
        )
    assert err.value.status_code == 402
    assert err.value.details["balance"] == 10
    assert LedgerEntry.objects.count() == before
    assert wallet_balance(user=alice) == 10


def test_transfer_refuses_legs_that_do_not_sum_to_zero(alice, bob) -> None:
    with pytest.raises(ApplicationError) as err:
        ledger_transfer(
            legs=[(external_account("x"), -5), (wallet_get_or_create(user=bob), 4)], kind="test"
        )
    assert err.value.code == "unbalanced_transfer"


@pytest.mark.parametrize("amount", [0, 1.5, True])
def test_transfer_refuses_zero_and_non_integer_legs(bob, amount) -> None:
    with pytest.raises(ApplicationError):
        ledger_transfer(
            legs=[(external_account("x"), -amount), (wallet_get_or_create(user=bob), amount)],
            kind="test",
        )


def test_transfer_with_a_used_idempotency_key_moves_nothing_twice(bob) -> None:
    legs = [(external_account("x"), -5), (wallet_get_or_create(user=bob), 5)]
    first = ledger_transfer(legs=legs, kind="test", idempotency_key="same")
    second = ledger_transfer(legs=legs, kind="test", idempotency_key="same")
    assert first.pk == second.pk
    assert wallet_balance(user=bob) == 5


def test_database_refuses_updating_a_ledger_entry(bob, fund) -> None:
    fund(bob, 5)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.update(amount=6)


def test_database_refuses_deleting_a_ledger_transaction(bob, fund) -> None:
    fund(bob, 5)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:  # behind Django's PROTECT, straight to the table
            cursor.execute("DELETE FROM marketplace_ledgertransaction")


def test_database_refuses_an_unbalanced_transaction_at_commit(bob) -> None:
    account = wallet_get_or_create(user=bob)
    with pytest.raises(DatabaseError, match="does not sum to zero"), transaction.atomic():
        txn = LedgerTransaction.objects.create(kind="forged")
        LedgerEntry.objects.create(transaction=txn, account=account, amount=5)
        with connection.cursor() as cursor:  # what COMMIT would do
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def test_database_refuses_a_negative_wallet_balance(bob) -> None:
    account = wallet_get_or_create(user=bob)
    with pytest.raises(DatabaseError), transaction.atomic():
        Account.objects.filter(pk=account.pk).update(balance=-1)


def test_reconciliation_reports_a_balance_that_differs_from_its_entries(
    bob, fund, allow_unbalanced_ledger
) -> None:
    fund(bob, 50)
    assert ledger_reconcile() == []
    account = wallet_get_or_create(user=bob)
    Account.objects.filter(pk=account.pk).update(balance=49)  # corruption behind the service
    mismatches = ledger_reconcile()
    assert [(m.code, m.balance, m.entries_sum) for m in mismatches] == [(account.code, 49, 50)]


def test_staff_grant_is_recorded_in_the_ledger(alice, make_user, ledger_is_balanced) -> None:
    staff = make_user("staff", is_staff=True)
    grant = credit_grant_create(staff=staff, user=alice, amount=25, reason="welcome")
    assert wallet_balance(user=alice) == 25
    assert grant.ledger_transaction.kind == "grant"
    assert CreditGrant.objects.count() == 1
    ledger_is_balanced()


def test_non_staff_cannot_grant_credits(alice, bob) -> None:
    with pytest.raises(ApplicationError) as err:
        credit_grant_create(staff=bob, user=alice, amount=25, reason="gift")
    assert err.value.status_code == 403


def test_escrow_settle_pays_parties_fee_and_refunds_the_rest(
    alice, bob, make_user, fund, ledger_is_balanced
) -> None:
    carol = make_user("carol")
    fund(alice, 100)
    hold = escrow_hold_create(payer=alice, amount=90, reference="job-1")
    assert wallet_balance(user=alice) == 10
    escrow_settle(escrow_hold=hold, payouts=[(bob, 40), (carol, 25)], fee=5, refund_to=alice)
    assert (wallet_balance(user=alice), wallet_balance(user=bob), wallet_balance(user=carol)) == (
        30,
        40,
        25,
    )
    assert platform_revenue_account().balance == 5
    hold.account.refresh_from_db()
    assert hold.account.balance == 0
    ledger_is_balanced()


def test_escrow_settle_refuses_paying_more_than_held(alice, bob, fund) -> None:
    fund(alice, 100)
    hold = escrow_hold_create(payer=alice, amount=50, reference="job-2")
    with pytest.raises(ApplicationError) as err:
        escrow_settle(escrow_hold=hold, payouts=[(bob, 50)], fee=1, refund_to=alice)
    assert err.value.code == "escrow_overdrawn"
    assert wallet_balance(user=bob) == 0


def test_escrow_settles_only_once(alice, bob, fund) -> None:
    fund(alice, 100)
    hold = escrow_hold_create(payer=alice, amount=50, reference="job-3")
    escrow_settle(escrow_hold=hold, payouts=[(bob, 10)], fee=0)
    with pytest.raises(ConflictError):
        escrow_settle(escrow_hold=hold, payouts=[(bob, 10)], fee=0)
    assert wallet_balance(user=bob) == 10


def test_escrow_hold_refuses_more_than_the_wallet_holds(alice, fund) -> None:
    fund(alice, 10)
    with pytest.raises(InsufficientFundsError):
        escrow_hold_create(payer=alice, amount=11, reference="job-4")
    assert wallet_balance(user=alice) == 10
