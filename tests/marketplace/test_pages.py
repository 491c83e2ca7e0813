"""Marketplace pages with Django's test client against PostgreSQL: buy box and buy flow,
license block, reviews, wallet, payouts, library and earnings."""

from __future__ import annotations

import datetime
import re
from collections import defaultdict

import pytest
from django.utils import timezone

from marketplace.models import AccountKind, LedgerEntry, Purchase, Review
from marketplace.selectors import wallet_balance
from marketplace.services.listings import listing_create
from marketplace.services.purchases import purchase_create
from marketplace.services.reviews import review_create

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(rb'name="idempotency_key" value="([^"]+)"')
POINT_RE = re.compile(r'<circle class="point"[^>]*data-day="([^"]+)" data-amount="(\d+)"')


@pytest.fixture(autouse=True)
def _settings(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ATELIER_PLATFORM_FEE_BPS = 1000
    settings.ATELIER_PAYOUT_MINIMUM = 1000


def page_url(version) -> str:  # type: ignore[no-untyped-def]
    return f"/models/{version.model_id}/{version.model.slug}/?version={version.pk}"


# --- buy box -------------------------------------------------------------------------------


def test_non_owner_gets_the_buy_button(client, buyer, listing, version) -> None:
    client.force_login(buyer)
    response = client.get(page_url(version))
    assert response.status_code == 200
    assert "Buy — 100 credits" in response.content.decode()
    assert f'action="/buy/{listing.pk}/"'.encode() in response.content


def test_owner_does_not_get_the_buy_button(client, seller, listing, version) -> None:
    client.force_login(seller)
    response = client.get(page_url(version))
    assert response.status_code == 200
    assert "Buy —".encode() not in response.content
    assert b"Your listing: 100 credits" in response.content


def test_anonymous_visitor_is_asked_to_log_in_to_buy(client, listing, version) -> None:
    response = client.get(page_url(version))
    assert b"Log in to buy for 100 credits" in response.content
    assert "Buy —".encode() not in response.content


def test_early_access_date_is_shown(client, buyer, seller, make_version) -> None:
    target = make_version(seller)
    until = timezone.now() + datetime.timedelta(days=10)
    listing_create(seller=seller, target=target, price=50, early_access_until=until)
    client.force_login(buyer)
    response = client.get(page_url(target))
    assert f"free after {until.date().isoformat()}".encode() in response.content
    assert "Buy — 50 credits" in response.content.decode()


def test_unlisted_version_shows_free(client, buyer, version) -> None:
    client.force_login(buyer)
    response = client.get(page_url(version))
    assert b'data-state="free"' in response.content
    assert "Buy —".encode() not in response.content


def test_buyer_sees_owned_after_buying(client, buyer, listing, version) -> None:
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k1")
    client.force_login(buyer)
    response = client.get(page_url(version))
    assert b'data-state="owned"' in response.content
    assert "Buy —".encode() not in response.content


# --- buy flow ------------------------------------------------------------------------------


def _confirm_key(client, listing) -> str:  # type: ignore[no-untyped-def]
    response = client.post(f"/buy/{listing.pk}/")
    assert response.status_code == 200
    match = KEY_RE.search(response.content)
    assert match is not None
    return match.group(1).decode()


def test_confirmation_page_shows_price_and_a_fresh_key(client, buyer, listing) -> None:
    client.force_login(buyer)
    first, second = _confirm_key(client, listing), _confirm_key(client, listing)
    response = client.post(f"/buy/{listing.pk}/")
    assert b"Pay 100 credits" in response.content
    assert first != second


def test_buy_flow_charges_once_when_the_confirmation_is_posted_twice(
    client, buyer, listing, version
) -> None:
    # given
    client.force_login(buyer)
    key = _confirm_key(client, listing)
    # when: the confirmation form is submitted twice (double click, resubmit)
    first = client.post(f"/buy/{listing.pk}/confirm/", {"idempotency_key": key})
    second = client.post(f"/buy/{listing.pk}/confirm/", {"idempotency_key": key})
    # then
    assert first.status_code == second.status_code == 302
    assert first["Location"] == page_url(version)
    assert Purchase.objects.filter(buyer=buyer).count() == 1
    assert wallet_balance(user=buyer) == 900
    charges = LedgerEntry.objects.filter(account__owner=buyer, memo="charge")
    assert [e.amount for e in charges] == [-100]


def test_second_submit_of_the_same_form_replays_the_first_purchase(client, buyer, listing) -> None:
    # given: the first submit went through
    client.force_login(buyer)
    key = _confirm_key(client, listing)
    client.post(f"/buy/{listing.pk}/confirm/", {"idempotency_key": key}, follow=True)
    # when: the same form arrives again
    again = client.post(f"/buy/{listing.pk}/confirm/", {"idempotency_key": key}, follow=True)
    # then: it is answered with the first purchase (same key), not as a new attempt
    texts = [str(m) for m in again.context["messages"]]
    assert texts == [f"You own {listing.target} now."]


def test_buy_with_too_few_credits_shows_the_error(client, make_user, listing) -> None:
    poor = make_user("poor")
    client.force_login(poor)
    key = _confirm_key(client, listing)
    response = client.post(f"/buy/{listing.pk}/confirm/", {"idempotency_key": key})
    assert response.status_code == 402
    assert b"Not enough credits" in response.content
    assert b"Top up your wallet" in response.content
    assert Purchase.objects.count() == 0


def test_buy_without_key_asks_to_confirm_again(client, buyer, listing) -> None:
    client.force_login(buyer)
    response = client.post(f"/buy/{listing.pk}/confirm/", {})
    assert response.status_code == 400
    assert b"confirm again" in response.content
    assert Purchase.objects.count() == 0


def test_buy_pages_need_csrf(buyer, listing) -> None:
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(buyer)
    response = strict.post(f"/buy/{listing.pk}/confirm/", {"idempotency_key": "abc"})
    assert response.status_code == 403
    assert Purchase.objects.count() == 0


def test_buy_page_of_unknown_listing_is_404(client, buyer) -> None:
    client.force_login(buyer)
    assert client.post("/buy/999999/").status_code == 404


# --- license block --------------------------------------------------------------------------


def test_license_block_shows_effective_permissions_and_their_source(
    client, seller, make_version
) -> None:
    parent = make_version(seller, license_code="cc-by-nc-4.0")
    child = make_version(seller, license_code="cc-by-nc-4.0", parents=(parent,))
    response = client.get(page_url(child))
    text = response.content.decode()
    assert "Effective permissions" in text
    perm = re.search(r'<li class="perm-commercial">(.*?)</li>', text, re.S)
    assert perm is not None
    assert "<strong>No commercial use</strong>" in perm.group(1)
    assert f"model version {parent.pk}" in perm.group(1)
    assert "own license cc-by-nc-4.0" in perm.group(1)


# --- reviews ----------------------------------------------------------------------------------


def test_reviews_show_the_verified_purchase_badge(
    client, buyer, make_user, seller, version
) -> None:
    # a review written while the model was not on sale, then one by a buyer
    review_create(user=make_user("drive-by"), version=version, rating=2, text="meh")
    listing = listing_create(seller=seller, target=version, price=100)
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k")
    review_create(user=buyer, version=version, rating=5, text="Lovely colours")
    response = client.get(page_url(version))
    text = response.content.decode()
    assert "Lovely colours" in text and "meh" in text
    assert text.count("Verified purchase") == 1


def test_buyer_gets_the_review_form_and_a_non_buyer_does_not(
    client, buyer, make_user, listing, version
) -> None:
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k")
    client.force_login(buyer)
    assert b"Write a review" in client.get(page_url(version)).content
    client.force_login(make_user("window-shopper"))
    assert b"Write a review" not in client.get(page_url(version)).content


def test_review_form_posts_a_verified_review(client, buyer, listing, version) -> None:
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k")
    client.force_login(buyer)
    response = client.post(f"/versions/{version.pk}/reviews/", {"rating": "4", "text": "ok"})
    assert response.status_code == 302
    review = Review.objects.get()
    assert (review.rating, review.verified) == (4, True)


def test_review_with_bad_rating_shows_error_next_to_field(client, buyer, listing, version) -> None:
    client.force_login(buyer)
    response = client.post(f"/versions/{version.pk}/reviews/", {"rating": "9", "text": ""})
    assert response.status_code == 400
    errors = re.search(rb'id="field-rating".*?</div>', response.content, re.S)
    assert errors is not None and b"Select a valid choice" in errors.group(0)
    assert Review.objects.count() == 0


# --- wallet, payouts, library -----------------------------------------------------------


def test_wallet_page_shows_balance_and_transactions(client, buyer, listing) -> None:
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k")
    client.force_login(buyer)
    response = client.get("/wallet/")
    assert response.status_code == 200
    assert b'data-balance="900"' in response.content
    assert b"top_up" in response.content and b"purchase" in response.content
    assert b"Wallet</a>" in response.content  # the nav link


def test_wallet_top_up_form_credits_once_per_key(client, buyer) -> None:
    client.force_login(buyer)
    key = KEY_RE.search(client.get("/wallet/").content).group(1).decode()  # type: ignore[union-attr]
    client.post("/wallet/", {"amount": "250", "idempotency_key": key})
    client.post("/wallet/", {"amount": "250", "idempotency_key": key})
    assert wallet_balance(user=buyer) == 1250


def test_wallet_top_up_with_bad_amount_shows_error_next_to_field(client, buyer) -> None:
    client.force_login(buyer)
    response = client.post("/wallet/", {"amount": "-5", "idempotency_key": "k"})
    assert response.status_code == 400
    field = re.search(rb'id="field-amount".*?</div>', response.content, re.S)
    assert field is not None and b"greater than or equal to 1" in field.group(0)
    assert wallet_balance(user=buyer) == 1000


def test_wallet_page_needs_login(client) -> None:
    response = client.get("/wallet/")
    assert response.status_code == 302 and "login" in response["Location"]


def test_payout_page_requests_a_payout(client, seller, earn) -> None:
    earn(seller, 1500)
    client.force_login(seller)
    response = client.post("/wallet/payouts/", {"amount": "1200"})
    assert response.status_code == 302
    page = client.get("/wallet/payouts/")
    assert b"Pending" in page.content and b"1200" in page.content
    assert wallet_balance(user=seller) == 300


def test_payout_page_below_minimum_shows_error_next_to_field(client, seller, fund) -> None:
    fund(seller, 1500)
    client.force_login(seller)
    response = client.post("/wallet/payouts/", {"amount": "10"})
    assert response.status_code == 400
    field = re.search(rb'id="field-amount".*?</div>', response.content, re.S)
    assert field is not None and b"minimum payout is 1000" in field.group(0)


def test_library_lists_what_i_own_with_download_links(
    client, buyer, listing, version, seller, make_version
) -> None:
    make_version(seller)  # not bought: not in the library
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k")
    client.force_login(buyer)
    response = client.get("/library/")
    assert response.status_code == 200
    links = re.findall(rb'href="(/api/download/models/\d+)"', response.content)
    assert links == [f"/api/download/models/{version.pk}".encode()]


def test_library_lists_the_models_i_made_apart_from_what_i_bought(
    client, seller, make_version, make_user
) -> None:
    mine = make_version(seller)
    draft = make_version(seller, publish=False)
    make_version(make_user("someone-else"))
    client.force_login(seller)
    response = client.get("/library/")
    rows = re.findall(rb'<tr data-model="(\d+)">(.*?)</tr>', response.content, re.S)
    assert sorted(int(pk) for pk, _ in rows) == sorted([mine.model_id, draft.model_id])
    status = {int(pk): row for pk, row in rows}
    assert b"not published" in status[draft.model_id]
    assert b"not published" not in status[mine.model_id]
    assert b"download-link" not in response.content  # nothing bought


# --- earnings --------------------------------------------------------------------------


def test_earnings_chart_has_one_point_per_day_matching_the_ledger(
    client, seller, listing, make_user, fund, on_day
) -> None:
    # given: two sales on March 2nd, none on the 3rd, one on the 4th
    days = [datetime.date(2026, 3, 2), datetime.date(2026, 3, 2), datetime.date(2026, 3, 4)]
    for i, day in enumerate(days):
        buyer = make_user(f"b{i}")
        with on_day(day):
            fund(buyer, 100)
            purchase_create(buyer=buyer, listing=listing, idempotency_key=f"k{i}")
    # when
    client.force_login(seller)
    response = client.get("/earnings/")
    # then
    assert response.status_code == 200
    points = [(d, int(a)) for d, a in POINT_RE.findall(response.content.decode())]
    ledger: dict[str, int] = defaultdict(int)
    for entry in LedgerEntry.objects.filter(
        account__kind=AccountKind.EARNINGS, account__owner=seller, amount__gt=0
    ):
        ledger[timezone.localdate(entry.transaction.created_at).isoformat()] += entry.amount
    assert points == sorted(ledger.items())
    assert points == [("2026-03-02", 180), ("2026-03-04", 90)]
    chart = re.search(rb'<svg class="chart earnings-chart".*?</svg>', response.content, re.S)
    assert chart is not None and b"<script" not in chart.group(0)  # drawn on the server


def test_earnings_table_counts_sales_per_listing(client, seller, listing, make_user, fund) -> None:
    for i in range(3):
        buyer = make_user(f"b{i}")
        fund(buyer, 100)
        purchase_create(buyer=buyer, listing=listing, idempotency_key=f"k{i}")
    client.force_login(seller)
    response = client.get("/earnings/")
    row = re.search(rf'<tr data-listing="{listing.pk}">(.*?)</tr>'.encode(), response.content, re.S)
    assert row is not None
    assert b'<td class="sales-count">3</td>' in row.group(1)
    assert b'<td class="earned">270</td>' in row.group(1)


def test_escrow_payouts_count_as_data_owner_earnings(make_user, fund) -> None:
    from marketplace.selectors import earnings_by_day
    from marketplace.services.ledger import escrow_hold_create, escrow_settle

    payer, data_owner = make_user("payer"), make_user("data-owner")
    fund(payer, 500)
    hold = escrow_hold_create(payer=payer, amount=500, reference="job-1")
    escrow_settle(escrow_hold=hold, payouts=[(data_owner, 300)], fee=50)
    assert [d.amount for d in earnings_by_day(user=data_owner)] == [300]
    assert earnings_by_day(user=payer) == []  # the refund is not an earning


def test_earnings_page_without_sales(client, buyer) -> None:
    client.force_login(buyer)
    response = client.get("/earnings/")
    assert response.status_code == 200
    assert b"No earnings yet." in response.content


def test_library_page_query_count_does_not_grow_with_items(
    client, buyer, seller, make_version, fund, django_assert_max_num_queries
) -> None:
    fund(buyer, 1000)
    for i in range(4):
        target = make_version(seller)
        listing = listing_create(seller=seller, target=target, price=10)
        purchase_create(buyer=buyer, listing=listing, idempotency_key=f"q{i}")
    client.force_login(buyer)
    with django_assert_max_num_queries(6):
        response = client.get("/library/")
    assert response.content.count(b"download-link") == 4


def test_earnings_page_query_count(
    client, seller, listing, make_user, fund, django_assert_max_num_queries
) -> None:
    for i in range(3):
        buyer = make_user(f"b{i}")
        fund(buyer, 100)
        purchase_create(buyer=buyer, listing=listing, idempotency_key=f"k{i}")
    client.force_login(seller)
    with django_assert_max_num_queries(8):
        assert client.get("/earnings/").status_code == 200


# --- datasets ------------------------------------------------------------------------------


def test_a_paid_public_dataset_page_has_the_buy_box_and_buying_it_unlocks_the_download(
    client, seller, buyer
) -> None:
    # Given a hosted dataset sold for 100 credits
    from tests.registry.factories import make_public_dataset

    dataset_version = make_public_dataset(owner=seller)
    listing = listing_create(seller=seller, target=dataset_version, price=100)
    dataset = dataset_version.dataset
    client.force_login(buyer)
    url = f"/datasets/{dataset.pk}/{dataset.slug}/"
    download = f"/api/download/datasets/{dataset_version.pk}"
    assert client.get(download).status_code == 403

    # When the buyer sees the page and confirms the purchase
    page = client.get(url)
    assert "Buy — 100 credits" in page.content.decode()
    assert download.encode() not in page.content  # Buy, not a Download that ends in a 403
    key = _confirm_key(client, listing)
    client.post(f"/buy/{listing.pk}/confirm/", {"idempotency_key": key})

    # Then the page says owned, offers the download, and the download redirects to the file
    owned = client.get(url).content
    assert b"Owned" in owned and f'href="{download}"'.encode() in owned
    assert client.get(download).status_code == 302
