"""Reviews: one per user per version, a verified badge for buyers; a paid model only by buyers."""

from __future__ import annotations

import pytest
import requests

from marketplace.models import Review
from marketplace.services.listings import listing_create
from marketplace.services.purchases import purchase_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(make_user, make_version, fund):  # type: ignore[no-untyped-def]
    seller, buyer, passer = make_user("seller"), make_user("buyer"), make_user("passer")
    fund(buyer, 100)
    listing = listing_create(seller=seller, target=make_version(seller), price=10)
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k")
    return seller, buyer, passer, listing.model_version


def _post(api_client, token_for, user, body):  # type: ignore[no-untyped-def]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return api_client.post("/api/v1/reviews", body, format="json")


def _post_over_http(live_server, token, body):  # type: ignore[no-untyped-def]
    return requests.post(
        f"{live_server.url}/api/v1/reviews",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_buyer_review_is_verified(api_client, token_for, setup) -> None:
    _, buyer, _, version = setup
    response = _post(
        api_client, token_for, buyer, {"model_version_id": version.pk, "rating": 5, "text": "great"}
    )
    assert response.status_code == 201
    assert response.json()["verified"] is True
    version.model.refresh_from_db()
    assert (version.model.rating_avg, version.model.rating_count) == (5.0, 1)


def test_non_buyer_review_of_a_free_model_is_not_verified(
    api_client, token_for, make_user, make_version
) -> None:
    # Given a model that is not on sale
    version = make_version(make_user("maker"))
    # When someone who holds no entitlement reviews it
    response = _post(
        api_client, token_for, make_user("passer"), {"model_version_id": version.pk, "rating": 2}
    )
    # Then the review is taken, without the badge
    assert response.status_code == 201
    assert response.json()["verified"] is False


def test_non_buyer_cannot_review_a_paid_model_over_http(live_server, token_for, setup) -> None:
    # Given a model on sale for 10 credits and a user who did not buy it
    _, _, passer, version = setup
    # When they post a review through the API
    response = _post_over_http(
        live_server, token_for(passer), {"model_version_id": version.pk, "rating": 1}
    )
    # Then it is refused with a message that says why, and nothing is written
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "purchase_required"
    assert "buy it to review it" in body["message"]
    assert not Review.objects.filter(model_version=version).exists()
    version.model.refresh_from_db()
    assert version.model.rating_count == 0


def test_buyer_can_review_a_paid_model_over_http(live_server, token_for, setup) -> None:
    # Given a buyer of a paid model
    _, buyer, _, version = setup
    # When they post a review through the API
    response = _post_over_http(
        live_server, token_for(buyer), {"model_version_id": version.pk, "rating": 4}
    )
    # Then it is taken and marked verified
    assert response.status_code == 201
    assert response.json()["verified"] is True


def test_second_review_of_the_same_version_is_409(api_client, token_for, setup) -> None:
    _, buyer, _, version = setup
    _post(api_client, token_for, buyer, {"model_version_id": version.pk, "rating": 4})
    response = _post(api_client, token_for, buyer, {"model_version_id": version.pk, "rating": 3})
    assert response.status_code == 409


@pytest.mark.parametrize("rating", [0, 6, 4.5, "5", None])
def test_bad_rating_is_400(api_client, token_for, setup, rating) -> None:
    _, buyer, _, version = setup
    response = _post(
        api_client, token_for, buyer, {"model_version_id": version.pk, "rating": rating}
    )
    assert response.status_code == 400


def test_seller_cannot_review_their_own_model(api_client, token_for, setup) -> None:
    seller, _, _, version = setup
    response = _post(api_client, token_for, seller, {"model_version_id": version.pk, "rating": 5})
    assert response.status_code == 400
    assert response.json()["code"] == "own_model"


def test_reviews_are_listed_by_version(api_client, token_for, setup) -> None:
    _, buyer, _, version = setup
    _post(api_client, token_for, buyer, {"model_version_id": version.pk, "rating": 4})
    api_client.credentials()
    rows = api_client.get(f"/api/v1/reviews?model_version_id={version.pk}").json()["results"]
    assert [(r["user"], r["rating"], r["verified"]) for r in rows] == [("buyer", 4, True)]


def test_review_list_without_a_version_is_400(api_client) -> None:
    assert api_client.get("/api/v1/reviews?model_version_id=abc").status_code == 400


def test_review_list_pages_by_page_size(api_client, token_for, make_user, make_version) -> None:
    # Given a free model with three reviews
    version = make_version(make_user("maker"))
    for name in ("r1", "r2", "r3"):
        assert (
            _post(
                api_client,
                token_for,
                make_user(name),
                {"model_version_id": version.pk, "rating": 3},
            ).status_code
            == 201
        )
    api_client.credentials()
    # When the list is asked for pages of two
    url = f"/api/v1/reviews?model_version_id={version.pk}&page_size=2"
    body = api_client.get(url).json()
    # Then the page holds two of the three
    assert (body["count"], len(body["results"])) == (3, 2)
