"""Buying as a Civitai user expects it (issue #19), through Django's test client against
PostgreSQL: price, Free and Owned on the cards, the Free/Paid filter and the price sort on the
browse page and in the API, Buy before Download, Try it on a paid LoRA, the purchase page of
something already owned, wallet references that link, and the upload form's terms."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from marketplace.models import Listing
from marketplace.services.ledger import escrow_hold_create
from marketplace.services.listings import listing_create
from marketplace.services.purchases import purchase_create
from registry.models import ModelVersion
from tests.registry.factories import lora_bytes

pytestmark = pytest.mark.django_db

CARD_RE = re.compile(r'<article class="card model-card"(.*?)</article>', re.S)
CARD_TITLE_RE = re.compile(r'<h3 class="card-title">([^<]*)</h3>')


def page_url(version: Any) -> str:
    return f"/models/{version.model_id}/{version.model.slug}/?version={version.pk}"


def download_url(version: Any) -> str:
    return reverse("registry:download-model-version", args=[version.pk])


def cards(html: str) -> dict[str, str]:
    """Each model card of a page by its title."""
    out = {}
    for card in CARD_RE.findall(html):
        title = CARD_TITLE_RE.search(card)
        assert title is not None
        out[title.group(1)] = card
    return out


def titles(html: str) -> list[str]:
    return CARD_TITLE_RE.findall(html)


@pytest.fixture
def shop(seller: Any, make_version: Any) -> dict[str, Any]:
    """Three published models of ``seller``'s: free, 100 credits and 250 credits."""
    free = make_version(seller)
    cheap = make_version(seller)
    dear = make_version(seller)
    listing_create(seller=seller, target=cheap, price=100)
    listing_create(seller=seller, target=dear, price=250)
    return {"free": free, "cheap": cheap, "dear": dear}


# --- model cards -----------------------------------------------------------------------------


def test_cards_show_the_price_or_free_kind_and_base_model_label(client, shop) -> None:
    # given one of the versions is an SD 1.x model
    ModelVersion.objects.filter(pk=shop["cheap"].pk).update(base_model="sd1")
    # when the browse page is opened
    html = client.get(reverse("registry:browse")).content.decode()
    # then each card says what it costs, its kind and its base model by name
    by_title = cards(html)
    assert '<span class="chip price free">Free</span>' in by_title[shop["free"].model.name]
    cheap = by_title[shop["cheap"].model.name]
    assert '<span class="chip price paid">100 credits</span>' in cheap
    assert '<span class="badge base">SD 1.x</span>' in cheap and ">sd1<" not in cheap
    assert '<span class="badge kind">Checkpoint</span>' in cheap
    assert "250 credits" in by_title[shop["dear"].model.name]


def test_card_says_owned_only_to_the_buyer(client, buyer, make_user, shop) -> None:
    purchase_create(buyer=buyer, listing=shop["cheap"].listing, idempotency_key="own")
    client.force_login(buyer)
    mine = cards(client.get(reverse("registry:browse")).content.decode())
    assert 'class="chip owned"' in mine[shop["cheap"].model.name]
    assert 'class="chip owned"' not in mine[shop["dear"].model.name]
    client.force_login(make_user("stranger"))
    theirs = cards(client.get(reverse("registry:browse")).content.decode())
    assert 'class="chip owned"' not in theirs[shop["cheap"].model.name]


def test_creator_page_cards_show_the_price(client, seller, shop) -> None:
    html = client.get(reverse("registry:creator", args=[seller.username])).content.decode()
    assert "250 credits" in cards(html)[shop["dear"].model.name]


def test_early_access_over_reads_free_on_the_card(client, seller, make_version) -> None:
    import datetime

    from django.utils import timezone

    version = make_version(seller)
    listing = listing_create(
        seller=seller,
        target=version,
        price=80,
        early_access_until=timezone.now() + datetime.timedelta(days=1),
    )
    Listing.objects.filter(pk=listing.pk).update(
        early_access_until=timezone.now() - datetime.timedelta(minutes=1)
    )
    html = client.get(reverse("registry:browse")).content.decode()
    assert "chip price free" in cards(html)[version.model.name]


# --- Free/Paid filter and price sort: the page and the API read the same filters -------------


@pytest.mark.parametrize(
    ("price", "expected"), [("free", {"free"}), ("paid", {"cheap", "dear"}), ("", None)]
)
def test_browse_page_filters_free_and_paid(client, shop, price, expected) -> None:
    html = client.get(reverse("registry:browse"), {"price": price}).content.decode()
    names = {key for key, v in shop.items() if v.model.name in titles(html)}
    assert names == (expected or {"free", "cheap", "dear"})


def test_browse_page_sorts_by_price_both_ways(client, shop) -> None:
    low = titles(client.get(reverse("registry:browse"), {"sort": "price_low"}).content.decode())
    high = titles(client.get(reverse("registry:browse"), {"sort": "price_high"}).content.decode())
    order = [shop[k].model.name for k in ("free", "cheap", "dear")]
    assert low == order
    assert high == order[::-1]


def test_browse_page_offers_the_price_filter_and_sorts(client, shop) -> None:
    html = client.get(reverse("registry:browse")).content.decode()
    assert '<select name="price"' in html and '<option value="paid">Paid</option>' in html
    assert '<option value="price_low">Price: low to high</option>' in html


def test_api_filters_free_and_paid_and_sorts_by_price(client, shop) -> None:
    paid = client.get("/api/v1/models", {"price": "paid", "sort": "price_high"}).json()
    assert [m["id"] for m in paid["results"]] == [shop["dear"].model_id, shop["cheap"].model_id]
    free = client.get("/api/v1/models", {"price": "free"}).json()
    assert [m["id"] for m in free["results"]] == [shop["free"].model_id]
    low = client.get("/api/v1/models", {"sort": "price_low"}).json()
    assert [m["id"] for m in low["results"]] == [
        shop[k].model_id for k in ("free", "cheap", "dear")
    ]


def test_api_refuses_an_unknown_price_filter(client, shop) -> None:
    response = client.get("/api/v1/models", {"price": "cheap"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_filter"


def test_browse_page_ignores_an_unknown_price_filter(client, shop) -> None:
    response = client.get(reverse("registry:browse"), {"price": "cheap"})
    assert response.status_code == 200
    assert len(titles(response.content.decode())) == 3


def test_browse_page_query_count_does_not_grow_with_paid_cards(
    client, buyer, seller, make_version, django_assert_max_num_queries
) -> None:
    for _ in range(6):
        listing_create(seller=seller, target=make_version(seller), price=10)
    client.force_login(buyer)
    with django_assert_max_num_queries(12):
        response = client.get(reverse("registry:browse"), {"sort": "price_low"})
    assert len(titles(response.content.decode())) == 6


# --- Buy before Download ---------------------------------------------------------------------


def test_paid_unowned_version_shows_buy_and_no_download_link(client, buyer, listing, version):
    client.force_login(buyer)
    html = client.get(page_url(version)).content.decode()
    assert '<button type="submit" class="buy">Buy — 100 credits</button>' in html
    assert download_url(version) not in html
    assert 'class="button download"' not in html


def test_anonymous_visitor_of_a_paid_version_gets_no_download_link(client, listing, version):
    html = client.get(page_url(version)).content.decode()
    assert "Log in to buy for 100 credits" in html
    assert download_url(version) not in html


@pytest.mark.parametrize("who", ["owner", "buyer_after_buying", "free"])
def test_those_who_may_download_see_the_download_button(
    client, who, seller, buyer, make_version
) -> None:
    version = make_version(seller)
    user = seller if who == "owner" else buyer
    if who != "free":
        listing = listing_create(seller=seller, target=version, price=100)
    if who == "buyer_after_buying":
        purchase_create(buyer=buyer, listing=listing, idempotency_key="dl")
    client.force_login(user)
    html = client.get(page_url(version)).content.decode()
    assert f'<a class="button download" href="{download_url(version)}">' in html
    assert client.get(download_url(version)).status_code in (200, 302)


def test_paid_lora_try_it_offers_the_free_preview_not_the_studio(
    client, buyer, seller, make_version
) -> None:
    lora = make_version(seller, kind="lora")
    listing = listing_create(seller=seller, target=lora, price=40)
    client.force_login(buyer)
    html = client.get(page_url(lora)).content.decode()
    assert 'id="try-it"' in html and 'class="card try-offer"' in html
    assert "buy it for 40 credits, or look at the free preview" in html
    assert reverse("studio:generate") + f"?version={lora.pk}" not in html
    # and once bought, Try it goes to the studio
    purchase_create(buyer=buyer, listing=listing, idempotency_key="try")
    html = client.get(page_url(lora)).content.decode()
    assert reverse("studio:generate") + f"?version={lora.pk}" in html
    assert "try-offer" not in html


# --- the purchase page does not ask to pay for what you own ---------------------------------


def test_purchase_page_of_an_owned_version_shows_you_own_this_and_download(
    client, buyer, listing, version
) -> None:
    purchase_create(buyer=buyer, listing=listing, idempotency_key="p")
    client.force_login(buyer)
    html = client.post(f"/buy/{listing.pk}/").content.decode()
    assert "You own this" in html
    assert f'href="{download_url(version)}"' in html
    assert "Pay 100 credits" not in html and "confirm-buy" not in html


def test_purchase_page_of_your_own_listing_does_not_offer_to_pay(client, seller, listing):
    client.force_login(seller)
    html = client.post(f"/buy/{listing.pk}/").content.decode()
    assert "is your own listing" in html and "Pay 100 credits" not in html


def test_purchase_page_of_an_unowned_version_asks_to_pay(client, buyer, listing) -> None:
    client.force_login(buyer)
    html = client.post(f"/buy/{listing.pk}/").content.decode()
    assert "Pay 100 credits" in html and "You own this" not in html


# --- wallet references link to what they paid -----------------------------------------------


def test_wallet_rows_link_to_the_version_bought_and_the_training_job(
    client, buyer, listing, version
) -> None:
    purchase_create(buyer=buyer, listing=listing, idempotency_key="w")
    escrow_hold_create(payer=buyer, amount=30, reference="federated-job:77")
    client.force_login(buyer)
    html = client.get("/wallet/").content.decode()
    assert f'<a href="{page_url(version)}" class="reference-link">{version}</a>' in html
    job_url = reverse("training:job-detail", args=[77])
    assert f'<a href="{job_url}" class="reference-link">Training job 77</a>' in html


def test_seller_wallet_row_links_to_the_version_sold(client, buyer, seller, listing, version):
    purchase_create(buyer=buyer, listing=listing, idempotency_key="s")
    client.force_login(seller)
    html = client.get("/wallet/").content.decode()
    assert f'href="{page_url(version)}" class="reference-link"' in html


# --- license at the point of choice: the upload form asks the terms ---------------------------


def upload_form(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "Ink wash",
        "kind": "lora",
        "visibility": "public",
        "version_name": "v1",
        "file": SimpleUploadedFile("ink.safetensors", lora_bytes(seed=5)),
    }
    data.update(overrides)
    return data


def test_upload_form_asks_base_model_license_price_and_images(client, seller) -> None:
    client.force_login(seller)
    html = client.get("/upload/").content.decode()
    for name in ("base_model", "license_code", "price", "images"):
        assert f'name="{name}"' in html, name
    assert '<option value="sd1">SD 1.x</option>' in html
    assert '<option value="" selected>No license stated</option>' in html


def test_upload_with_license_price_and_base_model_lists_the_draft(client, seller) -> None:
    client.force_login(seller)
    response = client.post(
        "/upload/",
        upload_form(base_model="sdxl", license_code="creativeml-openrail-m", price="120"),
    )
    assert response.status_code == 302
    version = ModelVersion.objects.get(model__name="Ink wash")
    assert version.base_model == "sdxl"
    assert version.license_code == "creativeml-openrail-m"
    assert Listing.objects.get(model_version=version).price == 120


def test_upload_with_a_non_commercial_license_and_a_price_asks_to_confirm(client, seller):
    client.force_login(seller)
    response = client.post("/upload/", upload_form(license_code="cc-by-nc-4.0", price="50"))
    html = response.content.decode()
    assert response.status_code == 400
    assert "Sell anyway" in html and 'type="checkbox" name="sell_anyway"' in html
    assert not ModelVersion.objects.filter(model__name="Ink wash").exists()
    response = client.post(
        "/upload/", upload_form(license_code="cc-by-nc-4.0", price="50", sell_anyway="on")
    )
    assert response.status_code == 302
    assert Listing.objects.get(model_version__model__name="Ink wash").price == 50


def test_upload_without_terms_stays_free_and_unlisted(client, seller) -> None:
    client.force_login(seller)
    assert client.post("/upload/", upload_form()).status_code == 302
    version = ModelVersion.objects.get(model__name="Ink wash")
    assert version.license_code == ""
    assert not Listing.objects.filter(model_version=version).exists()


def test_upload_with_a_negative_price_is_a_field_error(client, seller) -> None:
    client.force_login(seller)
    response = client.post("/upload/", upload_form(price="-3"))
    assert response.status_code == 400
    assert 'class="field has-error" id="field-price"' in response.content.decode()
    assert not ModelVersion.objects.filter(model__name="Ink wash").exists()


# --- no license stated never reads as permission to sell ------------------------------------


def test_no_license_stated_does_not_read_commercial_use_sell(client, buyer, version) -> None:
    client.force_login(buyer)
    html = client.get(page_url(version)).content.decode()
    assert "No license stated." in html
    perm = re.search(r'<li class="perm-commercial">(.*?)</li>', html, re.S)
    assert perm is not None
    assert "Not stated" in perm.group(1) and "sell" not in perm.group(1).lower()


# --- the API's model list says what the cards say --------------------------------------------


def _api_models(client: Any, **params: str) -> dict[int, dict[str, Any]]:
    response = client.get("/api/v1/models", params)
    assert response.status_code == 200
    return {item["id"]: item for item in response.json()["results"]}


def test_api_model_list_carries_price_and_owned_as_the_cards(
    client, buyer, make_user, shop
) -> None:
    # Given the buyer owns the 100-credit model
    purchase_create(buyer=buyer, listing=shop["cheap"].listing, idempotency_key="api-own")
    free, cheap, dear = (shop[k].model_id for k in ("free", "cheap", "dear"))
    # When an anonymous caller lists the models, each has its price and none is owned
    anonymous = _api_models(client)
    assert {m: anonymous[m]["price"] for m in (free, cheap, dear)} == {
        free: 0,
        cheap: 100,
        dear: 250,
    }
    assert not any(item["owned"] for item in anonymous.values())
    # When the buyer lists them (signed in on the site), only the bought one is owned
    client.force_login(buyer)
    mine = _api_models(client)
    assert [m for m, item in mine.items() if item["owned"]] == [cheap]
    assert mine[cheap]["price"] == 100
    # and the model's detail says the same
    detail = client.get(f"/api/v1/models/{cheap}").json()
    assert (detail["price"], detail["owned"]) == (100, True)
    # When someone else lists them, nothing is owned
    client.force_login(make_user("stranger"))
    assert not any(item["owned"] for item in _api_models(client).values())


def test_api_model_list_price_sort_and_filter_agree_with_the_price_field(client, shop) -> None:
    prices = [item["price"] for item in _api_models(client, sort="price_high").values()]
    assert prices == [250, 100, 0]
    paid = _api_models(client, price="paid").values()
    assert sorted(item["price"] for item in paid) == [100, 250]
    assert client.get("/api/v1/models", {"sort": "pricey"}).status_code == 400
