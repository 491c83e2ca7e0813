"""The marketplace REST API over real HTTP-shaped requests (DRF's APIClient)."""

from __future__ import annotations

import pytest

from marketplace.models import Purchase
from marketplace.selectors import wallet_balance
from marketplace.services.listings import listing_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def buyer_funds() -> int:
    """The amounts below count from 300 credits."""
    return 300


def _as(api_client, token_for, user):  # type: ignore[no-untyped-def]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return api_client


def test_wallet_shows_the_balance(api_client, token_for, buyer) -> None:
    response = _as(api_client, token_for, buyer).get("/api/v1/wallet")
    assert response.status_code == 200
    assert response.json() == {"balance": 300, "withdrawable": 0, "currency": "credits"}


def test_wallet_needs_a_login(api_client) -> None:
    assert api_client.get("/api/v1/wallet").status_code in (401, 403)


def test_top_up_credits_the_wallet_once_per_key(api_client, token_for, buyer) -> None:
    client = _as(api_client, token_for, buyer)
    first = client.post(
        "/api/v1/wallet/top-ups", {"amount": 50}, format="json", HTTP_IDEMPOTENCY_KEY="t1"
    )
    again = client.post(
        "/api/v1/wallet/top-ups", {"amount": 50}, format="json", HTTP_IDEMPOTENCY_KEY="t1"
    )
    assert first.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert wallet_balance(user=buyer) == 350


@pytest.mark.parametrize("amount", [-5, 0, 2.5, "10", None, True])
def test_top_up_refuses_bad_amounts_with_400(api_client, token_for, buyer, amount) -> None:
    response = _as(api_client, token_for, buyer).post(
        "/api/v1/wallet/top-ups", {"amount": amount}, format="json", HTTP_IDEMPOTENCY_KEY="t"
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("amount")


def test_top_up_without_idempotency_key_is_400(api_client, token_for, buyer) -> None:
    response = _as(api_client, token_for, buyer).post(
        "/api/v1/wallet/top-ups", {"amount": 5}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_required"


def test_transactions_list_the_wallet_entries(api_client, token_for, buyer) -> None:
    response = _as(api_client, token_for, buyer).get("/api/v1/wallet/transactions")
    assert response.status_code == 200
    assert [(r["kind"], r["amount"]) for r in response.json()["results"]] == [("top_up", 300)]


def test_owner_creates_a_listing(api_client, token_for, seller, make_version, make_user) -> None:
    make_user("collab")
    version = make_version(seller)
    response = _as(api_client, token_for, seller).post(
        "/api/v1/listings",
        {
            "model_version_id": version.pk,
            "price": 120,
            "royalty_bps": 250,
            "shares": [
                {"username": "seller", "percent": 70},
                {"username": "collab", "percent": 30},
            ],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["price"] == 120
    assert len(response.json()["shares"]) == 2


@pytest.mark.parametrize("price", [-1, 1.5, "12", None])
def test_listing_with_a_bad_price_is_400(
    api_client, token_for, seller, make_version, price
) -> None:
    version = make_version(seller)
    response = _as(api_client, token_for, seller).post(
        "/api/v1/listings", {"model_version_id": version.pk, "price": price}, format="json"
    )
    assert response.status_code == 400
    assert "price" in response.json()["message"]


def test_listing_with_shares_not_summing_to_100_is_400(
    api_client, token_for, seller, make_version
) -> None:
    version = make_version(seller)
    response = _as(api_client, token_for, seller).post(
        "/api/v1/listings",
        {
            "model_version_id": version.pk,
            "price": 5,
            "shares": [{"username": "seller", "percent": 90}],
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "bad_shares"


def test_someone_else_cannot_list_or_update(
    api_client, token_for, seller, buyer, make_version
) -> None:
    version = make_version(seller)
    listing = listing_create(seller=seller, target=version, price=5)
    client = _as(api_client, token_for, buyer)
    other = make_version(seller)
    assert (
        client.post(
            "/api/v1/listings", {"model_version_id": other.pk, "price": 5}, format="json"
        ).status_code
        == 403
    )
    assert (
        client.patch(f"/api/v1/listings/{listing.pk}", {"price": 1}, format="json").status_code
        == 403
    )


def test_owner_updates_the_price(api_client, token_for, seller, make_version) -> None:
    listing = listing_create(seller=seller, target=make_version(seller), price=5)
    response = _as(api_client, token_for, seller).patch(
        f"/api/v1/listings/{listing.pk}", {"price": 9}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["price"] == 9


def test_anyone_reads_listings(api_client, seller, make_version) -> None:
    listing = listing_create(seller=seller, target=make_version(seller), price=5)
    assert api_client.get(f"/api/v1/listings/{listing.pk}").json()["price"] == 5
    assert api_client.get("/api/v1/listings").json()["count"] == 1


def test_purchase_is_idempotent_by_header(
    api_client, token_for, seller, buyer, make_version
) -> None:
    listing = listing_create(seller=seller, target=make_version(seller), price=100)
    client = _as(api_client, token_for, buyer)
    first = client.post(
        "/api/v1/purchases", {"listing_id": listing.pk}, format="json", HTTP_IDEMPOTENCY_KEY="p1"
    )
    again = client.post(
        "/api/v1/purchases", {"listing_id": listing.pk}, format="json", HTTP_IDEMPOTENCY_KEY="p1"
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert wallet_balance(user=buyer) == 200


def test_purchase_key_reused_for_another_listing_is_409(
    api_client, token_for, seller, buyer, make_version
) -> None:
    a = listing_create(seller=seller, target=make_version(seller), price=10)
    b = listing_create(seller=seller, target=make_version(seller), price=10)
    client = _as(api_client, token_for, buyer)
    client.post("/api/v1/purchases", {"listing_id": a.pk}, format="json", HTTP_IDEMPOTENCY_KEY="p1")
    response = client.post(
        "/api/v1/purchases", {"listing_id": b.pk}, format="json", HTTP_IDEMPOTENCY_KEY="p1"
    )
    assert response.status_code == 409
    assert Purchase.objects.count() == 1


def test_purchase_with_too_few_credits_is_402_with_a_message(
    api_client, token_for, seller, buyer, make_version
) -> None:
    listing = listing_create(seller=seller, target=make_version(seller), price=301)
    response = _as(api_client, token_for, buyer).post(
        "/api/v1/purchases", {"listing_id": listing.pk}, format="json", HTTP_IDEMPOTENCY_KEY="p"
    )
    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_funds"
    assert "balance 300" in response.json()["message"]


def test_purchase_of_an_unknown_listing_is_404(api_client, token_for, buyer) -> None:
    response = _as(api_client, token_for, buyer).post(
        "/api/v1/purchases", {"listing_id": 999999}, format="json", HTTP_IDEMPOTENCY_KEY="p"
    )
    assert response.status_code == 404


def test_purchase_of_your_own_listing_is_400(
    api_client, token_for, seller, make_version, fund
) -> None:
    fund(seller, 50)
    listing = listing_create(seller=seller, target=make_version(seller), price=10)
    response = _as(api_client, token_for, seller).post(
        "/api/v1/purchases", {"listing_id": listing.pk}, format="json", HTTP_IDEMPOTENCY_KEY="p"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "own_listing"


def test_library_lists_what_was_bought(api_client, token_for, seller, buyer, make_version) -> None:
    listing = listing_create(seller=seller, target=make_version(seller), price=10)
    client = _as(api_client, token_for, buyer)
    client.post(
        "/api/v1/purchases", {"listing_id": listing.pk}, format="json", HTTP_IDEMPOTENCY_KEY="p"
    )
    rows = client.get("/api/v1/library").json()["results"]
    assert [r["model_version_id"] for r in rows] == [listing.model_version_id]
    assert rows[0]["download_url"] == f"/api/download/models/{listing.model_version_id}"


def test_licenses_are_listed(api_client) -> None:
    codes = [row["code"] for row in api_client.get("/api/v1/licenses").json()]
    assert "creativeml-openrail-m" in codes


def test_every_marketplace_route_is_in_the_openapi_schema(api_client) -> None:
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for route in (
        "/api/v1/wallet",
        "/api/v1/wallet/transactions",
        "/api/v1/wallet/top-ups",
        "/api/v1/listings",
        "/api/v1/listings/{listing_id}",
        "/api/v1/purchases",
        "/api/v1/library",
        "/api/v1/licenses",
        "/api/v1/reviews",
    ):
        assert route in paths
    params = paths["/api/v1/purchases"]["post"]["parameters"]
    assert any(p["name"] == "Idempotency-Key" for p in params)


def test_listing_list_query_count_does_not_grow_with_the_page(
    api_client, seller, make_version, make_user, django_assert_max_num_queries
) -> None:
    make_user("collab")
    for _ in range(6):
        listing_create(
            seller=seller,
            target=make_version(seller),
            price=5,
            shares=[("seller", 50), ("collab", 50)],
        )
    with django_assert_max_num_queries(4):  # count, page, shares (prefetch) + session/auth
        response = api_client.get("/api/v1/listings")
    assert response.json()["count"] == 6
