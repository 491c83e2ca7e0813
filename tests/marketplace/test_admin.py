"""Admin: staff grant credits through the ledger; reconciliation is visible."""

from __future__ import annotations

import pytest

from marketplace.models import CreditGrant
from marketplace.selectors import wallet_balance

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, make_user):  # type: ignore[no-untyped-def]
    staff = make_user("boss", is_staff=True, is_superuser=True)
    client.force_login(staff)
    return client


def test_staff_grant_in_the_admin_credits_the_wallet_through_the_ledger(
    staff_client, make_user
) -> None:
    alice = make_user("alice")
    response = staff_client.post(
        "/admin/marketplace/creditgrant/add/",
        {"user": alice.pk, "amount": 70, "reason": "contest prize"},
    )
    assert response.status_code == 302
    grant = CreditGrant.objects.get()
    assert wallet_balance(user=alice) == 70
    assert grant.ledger_transaction.entries.count() == 2


def test_account_list_shows_reconciliation(staff_client, make_user, fund) -> None:
    fund(make_user("alice"), 5)
    response = staff_client.get("/admin/marketplace/account/")
    assert response.status_code == 200
    assert b"Balance = entries" in response.content


def test_reconcile_action_reports_a_healthy_ledger(staff_client, make_user, fund) -> None:
    fund(make_user("alice"), 5)
    from marketplace.models import Account

    response = staff_client.post(
        "/admin/marketplace/account/",
        {"action": "reconcile", "_selected_action": [Account.objects.first().pk]},
        follow=True,
    )
    assert b"Ledger reconciles" in response.content
