"""Entitlements gate downloads through the registry's real routes."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from marketplace.services.listings import listing_create, listing_update
from marketplace.services.purchases import purchase_create
from tests.marketplace.conftest import safetensors_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def paid(seller, make_version):  # type: ignore[no-untyped-def]
    version = make_version(seller)
    return listing_create(seller=seller, target=version, price=100)


def _url(listing) -> str:  # type: ignore[no-untyped-def]
    return f"/api/download/models/{listing.model_version_id}"


def test_anonymous_download_of_a_paid_version_is_401_with_the_price(client, paid) -> None:
    response = client.get(_url(paid))
    assert response.status_code == 401
    assert response.json()["details"]["price"] == 100


def test_non_buyer_gets_403_naming_the_price(client, paid, make_user, token_for) -> None:
    stranger = make_user("stranger")
    response = client.get(_url(paid), HTTP_AUTHORIZATION=f"Bearer {token_for(stranger)}")
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "purchase_required"
    assert body["details"]["price"] == 100
    assert "100 credits" in body["message"]


def test_early_access_date_is_named_in_the_refusal(
    client, seller, make_version, make_user, token_for
) -> None:
    until = timezone.now() + datetime.timedelta(days=3)
    listing = listing_create(
        seller=seller, target=make_version(seller), price=7, early_access_until=until
    )
    response = client.get(_url(listing), HTTP_AUTHORIZATION=f"Bearer {token_for(make_user('x'))}")
    assert response.status_code == 403
    assert response.json()["details"]["early_access_until"] == until.isoformat()


def test_buyer_is_redirected_and_gets_the_bytes(
    client, paid, make_user, fund, token_for, seller
) -> None:
    buyer = make_user("buyer")
    fund(buyer, 100)
    purchase_create(buyer=buyer, listing=paid, idempotency_key="k")
    response = client.get(_url(paid), HTTP_AUTHORIZATION=f"Bearer {token_for(buyer)}")
    assert response.status_code == 302
    file_response = client.get(response["Location"])
    assert file_response.status_code == 200
    assert b"".join(file_response.streaming_content) == safetensors_bytes(seller.pk)


def test_signed_url_for_a_non_buyer_serves_nothing(
    client, paid, make_user, fund, token_for
) -> None:
    from registry.services.downloads import signed_file_url

    stranger = make_user("stranger")
    blob = paid.model_version.files.first().blob
    url = signed_file_url(blob=blob, filename="x.safetensors", user_id=stranger.pk)
    assert client.get(url).status_code == 403


def test_free_listing_downloads_for_anyone(client, seller, make_version) -> None:
    listing = listing_create(seller=seller, target=make_version(seller), price=0)
    assert client.get(_url(listing)).status_code == 302


def test_unlisted_content_downloads_for_anyone(client, seller, make_version) -> None:
    version = make_version(seller)
    assert client.get(f"/api/download/models/{version.pk}").status_code == 302


def test_early_access_past_its_date_downloads_for_anyone(client, seller, make_version) -> None:
    listing = listing_create(
        seller=seller,
        target=make_version(seller),
        price=9,
        early_access_until=timezone.now() + datetime.timedelta(days=1),
    )
    listing_update(
        listing=listing,
        user=seller,
        early_access_until=timezone.now() - datetime.timedelta(seconds=1),
    )
    assert client.get(_url(listing)).status_code == 302


def test_seller_downloads_their_own_paid_version(client, paid, seller, token_for) -> None:
    response = client.get(_url(paid), HTTP_AUTHORIZATION=f"Bearer {token_for(seller)}")
    assert response.status_code == 302


def test_paid_public_dataset_is_gated_on_the_dataset_route(
    client, seller, make_user, fund, token_for
) -> None:
    import io
    import zipfile

    from registry.models import Dataset, DatasetVersion
    from registry.services.uploads import upload_whole_file

    # given: a hosted dataset version (its archive stored as a blob) listed for 40 credits
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "a caption")
    content = buffer.getvalue()
    upload = upload_whole_file(
        user=seller, filename="d.zip", stream=io.BytesIO(content), size=len(content)
    )
    dataset = Dataset.objects.create(owner=seller, name="d", slug="d", kind="public")
    dv = DatasetVersion.objects.create(
        dataset=dataset, name="v1", blob_id=upload.blob_id, filename="d.zip"
    )
    listing = listing_create(seller=seller, target=dv, price=40)
    buyer, stranger = make_user("buyer"), make_user("stranger")
    fund(buyer, 40)
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k")
    url = f"/api/download/datasets/{dv.pk}"
    # when / then
    refused = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token_for(stranger)}")
    assert refused.status_code == 403
    assert refused.json()["details"]["price"] == 40
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {token_for(buyer)}").status_code == 302
