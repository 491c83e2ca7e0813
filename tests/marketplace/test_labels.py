"""What the marketplace's pages say to people (issue #19): the fee as a percentage, earnings
per sale at the price paid, "no license" never read as permission to sell, a confirm step
before pricing a version whose license forbids selling, and one base-model label."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from marketplace.models import LedgerEntry, Listing
from marketplace.services.listings import listing_create, listing_update
from marketplace.services.purchases import purchase_create
from marketplace.templatetags.labels import base_model_label, bps_percent
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ATELIER_PLATFORM_FEE_BPS = 1000
    settings.ATELIER_PAYOUT_MINIMUM = 1000


def page_url(version) -> str:  # type: ignore[no-untyped-def]
    return f"/models/{version.model_id}/{version.model.slug}/?version={version.pk}"


def _row(content: bytes, listing: Listing) -> bytes:
    row = re.search(rf'<tr data-listing="{listing.pk}">(.*?)</tr>'.encode(), content, re.S)
    assert row is not None
    return row.group(1)


# --- the fee as a percentage ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bps", "text"), [(1000, "10%"), (250, "2.5%"), (1, "0.01%"), (0, "0%"), ("x", "")]
)
def test_bps_percent(bps: object, text: str) -> None:
    assert bps_percent(bps) == text


def test_pages_show_the_fee_as_a_percentage(
    client, seller, buyer, listing, version, make_user
) -> None:
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k1")
    pages = [reverse("marketplace:listing-edit", args=[version.pk]), "/earnings/"]
    client.force_login(seller)
    for url in pages:
        text = client.get(url).content.decode()
        assert '<span class="fee-percent">10%</span>' in text, url
        assert "bps" not in text and "basis points" not in text, url
    client.force_login(make_user("fee-reader"))  # the buyer owns it: no purchase page to read
    text = client.post(f"/buy/{listing.pk}/").content.decode()
    assert '<span class="fee-percent">10%</span>' in text
    assert "bps" not in text


def test_listing_form_states_excess_royalties_in_percent(
    client, seller, make_user, make_version
) -> None:
    # given: two ancestors asking 50% each, more than the 90% the 10% fee leaves
    other = make_user("upstream")
    grand = make_version(other)
    listing_create(seller=other, target=grand, price=0, royalty_bps=5000)
    parent = make_version(other, parents=(grand,))
    listing_create(seller=other, target=parent, price=0, royalty_bps=5000)
    child = make_version(seller, parents=(parent,), publish=False)
    client.force_login(seller)
    url = reverse("marketplace:listing-edit", args=[child.pk])
    # when
    response = client.post(url, {"license_code": "", "price": "100"})
    # then
    assert response.status_code == 400
    text = response.content.decode()
    assert "asks 100% of the price in royalties" in text
    assert "at most 90%" in text
    assert "bps" not in text
    assert not Listing.objects.filter(model_version=child).exists()


# --- earnings: sales, not ledger entries; the price paid, not today's -------------------------


def test_earnings_count_sales_not_entries_at_the_price_paid(
    client, seller, make_user, make_version, fund
) -> None:
    # given: the seller holds a 50% share and gets the remainder of a 101-credit sale
    collab = make_user("collab")
    target = make_version(seller)
    listing = listing_create(
        seller=seller, target=target, price=101, shares=[("seller", 50), ("collab", 50)]
    )
    first = make_user("b1")
    fund(first, 101)
    sale = purchase_create(buyer=first, listing=listing, idempotency_key="k1")
    entries = LedgerEntry.objects.filter(
        transaction=sale.ledger_transaction, account__owner=seller, amount__gt=0
    )
    assert entries.count() == 2  # one sale, two ledger entries for the seller
    # and: the price goes up to 300 and someone buys at that price; then it goes to 500
    listing = listing_update(listing=listing, user=seller, price=300)
    second = make_user("b2")
    fund(second, 300)
    purchase_create(buyer=second, listing=listing, idempotency_key="k2")
    listing_update(listing=listing, user=seller, price=500)
    # when
    client.force_login(seller)
    response = client.get("/earnings/")
    # then
    row = _row(response.content, listing)
    assert b'<td class="sales-count">2</td>' in row
    assert b'<td class="sold-at">101\xe2\x80\x93300</td>' in row
    assert b'<td class="price-now">500</td>' in row
    # and the collaborator, with one entry per sale, sees the same count
    client.force_login(collab)
    row = _row(client.get("/earnings/").content, listing)
    assert b'<td class="sales-count">2</td>' in row


def test_earnings_show_one_price_when_every_sale_paid_the_same(
    client, seller, listing, make_user, fund
) -> None:
    for i in range(2):
        b = make_user(f"b{i}")
        fund(b, 100)
        purchase_create(buyer=b, listing=listing, idempotency_key=f"k{i}")
    listing_update(listing=listing, user=seller, price=40)
    client.force_login(seller)
    row = _row(client.get("/earnings/").content, listing)
    assert b'<td class="sold-at">100</td>' in row
    assert b'<td class="price-now">40</td>' in row
    assert b'<td class="earned">180</td>' in row


# --- licenses -------------------------------------------------------------------------------


def test_no_license_never_reads_as_permission_to_sell(client, seller, make_version) -> None:
    version = make_version(seller)  # no license stated, no lineage
    text = client.get(page_url(version)).content.decode()
    assert "No license stated" in text
    perm = re.search(r'<li class="perm-commercial">(.*?)</li>', text, re.S)
    assert perm is not None
    assert "Not stated" in perm.group(1)
    assert "sell" not in perm.group(1).lower()


def test_a_license_that_allows_selling_reads_by_name(client, seller, make_version) -> None:
    version = make_version(seller, license_code="cc-by-4.0")
    perm = re.search(
        r'<li class="perm-commercial">(.*?)</li>', client.get(page_url(version)).content.decode()
    )
    assert perm is not None
    assert "Sell the model or merges" in perm.group(1)


def test_pricing_a_non_commercial_version_asks_to_confirm(client, seller, make_version) -> None:
    version = make_version(seller, publish=False)
    url = reverse("marketplace:listing-edit", args=[version.pk])
    client.force_login(seller)
    # when: a price with a non-commercial license, not confirmed
    response = client.post(url, {"license_code": "cc-by-nc-4.0", "price": "50"})
    # then: nothing saved, a warning on the price and a box to confirm
    assert response.status_code == 400
    text = response.content.decode()
    assert "does not allow selling" in text
    assert re.search(r'<input type="checkbox" name="sell_anyway"', text)
    assert not Listing.objects.filter(model_version=version).exists()
    assert ModelVersion.objects.get(pk=version.pk).license_code == ""
    # when: confirmed
    response = client.post(
        url, {"license_code": "cc-by-nc-4.0", "price": "50", "sell_anyway": "on"}
    )
    # then: saved
    assert response.status_code == 302
    assert Listing.objects.get(model_version=version).price == 50
    assert ModelVersion.objects.get(pk=version.pk).license_code == "cc-by-nc-4.0"


def test_free_non_commercial_and_priced_commercial_save_at_once(
    client, seller, make_version
) -> None:
    client.force_login(seller)
    free = make_version(seller, publish=False)
    url = reverse("marketplace:listing-edit", args=[free.pk])
    assert client.post(url, {"license_code": "cc-by-nc-4.0", "price": "0"}).status_code == 302
    paid = make_version(seller, publish=False)
    url = reverse("marketplace:listing-edit", args=[paid.pk])
    response = client.post(url, {"license_code": "cc-by-4.0", "price": "50"})
    assert response.status_code == 302
    assert Listing.objects.get(model_version=paid).price == 50


# --- base-model label -------------------------------------------------------------------------


def test_base_model_label() -> None:
    assert base_model_label("sd1") == "SD 1.x"
    assert base_model_label("sdxl") == "SDXL"
    assert base_model_label("") == "Unknown"
    assert base_model_label("nonsense") == "Unknown"


def test_card_and_detail_print_the_same_base_model_label(client, seller, make_version) -> None:
    version = make_version(seller)
    ModelVersion.objects.filter(pk=version.pk).update(base_model="sd1")
    card = client.get(f"/?q={version.model.name}").content.decode()
    assert '<span class="badge base">SD 1.x</span>' in card
    assert '<span class="badge base">sd1</span>' not in card
    detail = client.get(page_url(version)).content.decode()
    assert '<dd class="base-model">SD 1.x</dd>' in detail


# --- the 404 page and the favicon ---------------------------------------------------------------


def test_an_unknown_page_gets_the_sites_404_page(client, buyer) -> None:
    client.force_login(buyer)
    for url in ("/no-such-page/", "/buy/987654/"):  # no route; a view's own Http404
        response = client.get(url)
        assert response.status_code == 404, url
        assert response["Content-Type"].startswith("text/html"), url
        text = response.content.decode()
        assert '<header class="topbar">' in text and "Page not found" in text, url
        assert 'href="/library/"' in text, url
    page = client.get("/no-such-<script>/").content.decode()
    assert "<script>" not in page


@pytest.mark.parametrize("url", ["/api/v1/no-such-route/", "/civitai/api/v1/no-such-route"])
def test_api_and_civitai_routes_keep_their_json_404(client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert "Page not found" not in response.content.decode()


def test_every_page_links_the_favicon(client) -> None:
    from django.contrib.staticfiles import finders

    text = client.get("/").content.decode()
    assert re.search(
        r'<link rel="icon" href="/static/favicon[^"]*\.svg" type="image/svg\+xml">', text
    )
    found = finders.find("favicon.svg")
    assert found is not None
    with open(str(found), encoding="utf-8") as svg:
        assert svg.read().lstrip().startswith("<svg")
