"""Payouts and statements: credits wait in clearing; staff pay or reject; CSV per period."""

from __future__ import annotations

import csv
import datetime
import io

import pytest
from django.utils import timezone

from core.errors import AccessDeniedError, ApplicationError, ConflictError
from marketplace.models import Payout, PayoutStatus
from marketplace.selectors import wallet_balance
from marketplace.services.ledger import payouts_clearing_account
from marketplace.services.payouts import payout_mark_paid, payout_reject, payout_request

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _minimum(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ATELIER_PAYOUT_MINIMUM = 1000


@pytest.fixture
def creator(make_user, earn):  # type: ignore[no-untyped-def]
    user = make_user("creator")
    earn(user, 2500)
    return user


def _clearing() -> int:
    return payouts_clearing_account().balance


def test_request_moves_credits_from_wallet_to_clearing(creator) -> None:
    # when
    payout = payout_request(user=creator, amount=1500)
    # then
    assert payout.status == PayoutStatus.PENDING
    assert wallet_balance(user=creator) == 1000
    assert _clearing() == 1500
    assert payout.request_transaction.reference == f"payout:{payout.pk}"


def test_requested_credits_cannot_be_requested_twice(creator) -> None:
    payout_request(user=creator, amount=1500)
    with pytest.raises(ApplicationError) as err:
        payout_request(user=creator, amount=1500)
    assert err.value.code == "above_balance"
    assert Payout.objects.count() == 1


def test_request_below_minimum_is_refused(creator) -> None:
    with pytest.raises(ApplicationError) as err:
        payout_request(user=creator, amount=999)
    assert err.value.code == "below_minimum"
    assert "1000" in err.value.message
    assert wallet_balance(user=creator) == 2500


def test_minimum_comes_from_the_setting(creator, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ATELIER_PAYOUT_MINIMUM = 3000
    with pytest.raises(ApplicationError) as err:
        payout_request(user=creator, amount=2500)
    assert err.value.code == "below_minimum"


def test_request_above_balance_is_refused(creator) -> None:
    with pytest.raises(ApplicationError) as err:
        payout_request(user=creator, amount=2501)
    assert err.value.code == "above_balance"
    assert _clearing() == 0


def test_staff_marks_paid_and_credits_leave_clearing(creator, staff) -> None:
    payout = payout_request(user=creator, amount=2000)
    # when
    paid = payout_mark_paid(payout=payout, staff=staff, note="wire 42")
    # then
    paid.refresh_from_db()
    assert paid.status == PayoutStatus.PAID
    assert paid.handled_by == staff and paid.handled_at is not None
    assert paid.settle_transaction is not None and paid.settle_transaction.kind == "payout_paid"
    assert _clearing() == 0
    assert wallet_balance(user=creator) == 500


def test_non_staff_cannot_mark_paid(creator, make_user) -> None:
    payout = payout_request(user=creator, amount=2000)
    with pytest.raises(AccessDeniedError):
        payout_mark_paid(payout=payout, staff=make_user("mallory"))
    payout.refresh_from_db()
    assert payout.status == PayoutStatus.PENDING


def test_rejection_returns_the_credits(creator, staff) -> None:
    payout = payout_request(user=creator, amount=2000)
    payout_reject(payout=payout, staff=staff, note="fraud check")
    payout.refresh_from_db()
    assert payout.status == PayoutStatus.REJECTED
    assert wallet_balance(user=creator) == 2500
    assert _clearing() == 0


def test_a_paid_payout_cannot_be_rejected(creator, staff) -> None:
    payout = payout_request(user=creator, amount=2000)
    payout_mark_paid(payout=payout, staff=staff)
    with pytest.raises(ConflictError):
        payout_reject(payout=payout, staff=staff)
    assert wallet_balance(user=creator) == 500


# --- REST --------------------------------------------------------------------------------


def test_api_request_below_minimum_is_400_with_message(api_client, creator) -> None:
    api_client.force_authenticate(creator)
    response = api_client.post("/api/v1/payouts", {"amount": 10}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "below_minimum"
    assert "minimum" in response.json()["message"]


def test_api_request_above_balance_is_400(api_client, creator) -> None:
    api_client.force_authenticate(creator)
    response = api_client.post("/api/v1/payouts", {"amount": 99999}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "above_balance"


def test_api_request_with_text_amount_is_400(api_client, creator) -> None:
    api_client.force_authenticate(creator)
    response = api_client.post("/api/v1/payouts", {"amount": "lots"}, format="json")
    assert response.status_code == 400
    assert response.json()["message"].startswith("amount")


def test_api_request_creates_and_lists_a_payout(api_client, creator) -> None:
    api_client.force_authenticate(creator)
    created = api_client.post("/api/v1/payouts", {"amount": 1200}, format="json")
    listed = api_client.get("/api/v1/payouts")
    assert created.status_code == 201
    assert [p["id"] for p in listed.json()["results"]] == [created.json()["id"]]


def test_api_non_staff_marking_paid_is_403(api_client, creator) -> None:
    payout = payout_request(user=creator, amount=1200)
    api_client.force_authenticate(creator)
    response = api_client.post(f"/api/v1/payouts/{payout.pk}/paid", {}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "staff_only"
    payout.refresh_from_db()
    assert payout.status == PayoutStatus.PENDING


def test_api_staff_marks_paid(api_client, creator, staff) -> None:
    payout = payout_request(user=creator, amount=1200)
    api_client.force_authenticate(staff)
    response = api_client.post(f"/api/v1/payouts/{payout.pk}/paid", {"note": "sent"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "paid"


def test_admin_action_marks_paid_and_records_who(client, creator, staff) -> None:
    payout = payout_request(user=creator, amount=1200)
    client.force_login(staff)
    response = client.post(
        "/admin/marketplace/payout/",
        {"action": "mark_paid", "_selected_action": [payout.pk]},
        follow=True,
    )
    assert b"1 payout(s) marked paid" in response.content
    payout.refresh_from_db()
    assert (payout.status, payout.handled_by_id) == (PayoutStatus.PAID, staff.pk)


def test_admin_refuses_a_non_staff_user(client, creator) -> None:
    payout = payout_request(user=creator, amount=1200)
    client.force_login(creator)
    response = client.post(
        "/admin/marketplace/payout/", {"action": "mark_paid", "_selected_action": [payout.pk]}
    )
    assert response.status_code == 302 and "/login/" in response["Location"]
    payout.refresh_from_db()
    assert payout.status == PayoutStatus.PENDING


# --- statements ------------------------------------------------------------------------


def _rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode())))


def test_statement_lists_entries_with_running_balance(api_client, creator, fund) -> None:
    # given: 2500 earned, 300 bought, then a payout of 1000
    fund(creator, 300)
    payout_request(user=creator, amount=1000)
    today = timezone.localdate().isoformat()
    api_client.force_authenticate(creator)
    # when
    response = api_client.get(f"/api/v1/wallet/statement?from={today}&to={today}")
    # then
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = _rows(response.content)
    assert [r["kind"] for r in rows] == ["escrow_settle", "top_up", "payout_request"]
    assert [int(r["amount"]) for r in rows] == [2500, 300, -1000]
    assert [int(r["balance_after"]) for r in rows] == [2500, 2800, 1800]
    assert rows[2]["reference"].startswith("payout:")


def test_statement_of_an_earlier_period_is_empty_but_has_a_header(api_client, creator) -> None:
    api_client.force_authenticate(creator)
    response = api_client.get("/api/v1/wallet/statement?from=2001-01-01&to=2001-12-31")
    assert response.status_code == 200
    assert response.content.decode().splitlines() == ["date,kind,reference,amount,balance_after"]


def test_statement_opening_balance_counts_earlier_entries(
    api_client, make_user, fund, on_day
) -> None:
    # given: 500 on the 1st, 300 on the 3rd, 200 on the 5th
    user = make_user("dora")
    for day, amount in ((1, 500), (3, 300), (5, 200)):
        with on_day(datetime.date(2026, 3, day)):
            fund(user, amount)
    api_client.force_authenticate(user)
    # when: the statement covers the 2nd to the 4th
    response = api_client.get("/api/v1/wallet/statement?from=2026-03-02&to=2026-03-04")
    # then: only the 300, with the 500 before it in the balance
    rows = _rows(response.content)
    assert [(int(r["amount"]), int(r["balance_after"])) for r in rows] == [(300, 800)]
    assert rows[0]["date"].startswith("2026-03-03")


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-02-01&to=2026-01-01",  # reversed
        "from=2026-13-01&to=2026-12-31",  # no such month
        "from=yesterday&to=2026-01-01",  # not a date
        "to=2026-01-01",  # missing
    ],
)
def test_statement_bad_period_is_400_with_message(api_client, creator, query: str) -> None:
    api_client.force_authenticate(creator)
    response = api_client.get(f"/api/v1/wallet/statement?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "bad_period"
    assert response.json()["message"]


def test_statement_web_link_downloads_csv(client, creator) -> None:
    client.force_login(creator)
    today = timezone.localdate().isoformat()
    response = client.get(f"/wallet/statement.csv?from={today}&to={today}")
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    assert int(_rows(response.content)[-1]["balance_after"]) == 2500


def test_statement_web_bad_range_shows_error_next_to_field(client, creator) -> None:
    client.force_login(creator)
    response = client.get("/wallet/statement.csv?from=2026-02-01&to=2026-01-01")
    assert response.status_code == 400
    assert b"must be on or after" in response.content
    assert b'id="field-to"' in response.content
