"""Downloads: the Civitai-shaped redirect, signed URLs, Range, ETag, access and counts."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.test import Client

from registry.models import Model, ModelVersion, Visibility
from registry.services.downloads import signed_file_url
from tests.registry.factories import lora_bytes, make_model

pytestmark = pytest.mark.django_db

DATA = lora_bytes(seed=11)


@pytest.fixture
def version(alice) -> ModelVersion:
    from tests.registry.factories import complete_upload

    upload = complete_upload(user=alice, data=DATA, filename="ink-style.safetensors")
    return make_model(owner=alice, name="Ink", upload=upload)


def signed_location(client: Client, version: ModelVersion) -> str:
    response = client.get(f"/api/download/models/{version.pk}")
    assert response.status_code == 302, response.content
    return response["Location"]


def body(response) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


def test_redirect_carries_response_content_disposition(version: ModelVersion) -> None:
    location = signed_location(Client(), version)

    query = parse_qs(urlsplit(location).query)
    assert urlsplit(location).path.endswith("/ink-style.safetensors")
    assert 'filename="ink-style.safetensors"' in query["response-content-disposition"][0]
    assert {"uid", "expires", "signature"} <= set(query)


def test_following_the_redirect_serves_the_bytes_with_etag_and_filename(
    version: ModelVersion,
) -> None:
    client = Client()

    response = client.get(signed_location(client, version))

    assert response.status_code == 200
    assert body(response) == DATA
    sha = version.files.get().blob_id
    assert response["ETag"] == f'"{sha}"'
    assert 'filename="ink-style.safetensors"' in response["Content-Disposition"]
    assert response["Content-Length"] == str(len(DATA))
    assert response["Accept-Ranges"] == "bytes"


def test_a_range_is_206_with_exactly_those_bytes(version: ModelVersion) -> None:
    client = Client()

    response = client.get(signed_location(client, version), HTTP_RANGE="bytes=10-19")

    assert response.status_code == 206
    assert body(response) == DATA[10:20]
    assert response["Content-Range"] == f"bytes 10-19/{len(DATA)}"
    assert response["Content-Length"] == "10"


def test_a_suffix_range_is_the_last_bytes(version: ModelVersion) -> None:
    client = Client()

    response = client.get(signed_location(client, version), HTTP_RANGE="bytes=-5")

    assert response.status_code == 206
    assert body(response) == DATA[-5:]
    assert response["Content-Range"] == f"bytes {len(DATA) - 5}-{len(DATA) - 1}/{len(DATA)}"


def test_a_range_past_the_end_is_416_json(version: ModelVersion) -> None:
    client = Client()

    response = client.get(signed_location(client, version), HTTP_RANGE=f"bytes={len(DATA)}-")

    assert response.status_code == 416
    assert response.json()["code"] == "range_not_satisfiable"


def test_if_none_match_with_the_etag_is_304(version: ModelVersion) -> None:
    client = Client()
    location = signed_location(client, version)
    etag = client.get(location)["ETag"]

    response = client.get(location, HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == 304
    assert body(response) == b""


def test_a_tampered_signature_is_403(version: ModelVersion) -> None:
    client = Client()
    location = signed_location(client, version)
    signature = parse_qs(urlsplit(location).query)["signature"][0]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]

    response = client.get(location.replace(signature, flipped))

    assert response.status_code == 403
    assert response.json()["code"] == "bad_signature"


def test_a_link_signed_for_another_file_name_is_403(version: ModelVersion) -> None:
    client = Client()
    location = signed_location(client, version)

    response = client.get(location.replace("/ink-style.safetensors", "/other.safetensors"))

    assert response.status_code == 403


def test_an_expired_link_is_403(version: ModelVersion) -> None:
    blob = version.files.get().blob
    url = signed_file_url(blob=blob, filename="ink-style.safetensors", user_id=0, ttl=-1)

    response = Client().get(url)

    assert response.status_code == 403
    assert response.json()["code"] == "expired"


def test_a_private_models_version_is_404_for_others(alice, make_user) -> None:
    hidden = make_model(owner=alice, name="Secret", visibility=Visibility.PRIVATE)
    other = Client()
    other.force_login(make_user("bob"))
    owner = Client()
    owner.force_login(alice)

    assert Client().get(f"/api/download/models/{hidden.pk}").status_code == 404
    assert other.get(f"/api/download/models/{hidden.pk}").status_code == 404
    assert owner.get(f"/api/download/models/{hidden.pk}").status_code == 302


def test_a_signed_link_stops_working_once_the_model_turns_private(version: ModelVersion) -> None:
    client = Client()
    location = signed_location(client, version)
    Model.objects.filter(pk=version.model_id).update(visibility=Visibility.PRIVATE)

    response = client.get(location)

    assert response.status_code == 403


def test_each_download_counts_on_the_version_and_the_model(version: ModelVersion) -> None:
    client = Client()

    signed_location(client, version)
    signed_location(client, version)

    assert ModelVersion.objects.get(pk=version.pk).download_count == 2
    assert Model.objects.get(pk=version.model_id).download_count == 2


def test_a_bad_token_on_the_download_route_is_401(version: ModelVersion) -> None:
    response = Client().get(
        f"/api/download/models/{version.pk}", HTTP_AUTHORIZATION="Bearer atl_nope"
    )

    assert response.status_code == 401
    assert ModelVersion.objects.get(pk=version.pk).download_count == 0


@pytest.mark.django_db(transaction=True)
def test_range_download_over_real_http(live_server, alice) -> None:
    # Given a published model served by a real HTTP server
    from tests.registry.factories import complete_upload

    upload = complete_upload(user=alice, data=DATA, filename="ink.safetensors")
    version = make_model(owner=alice, name="Ink", upload=upload)

    # When a client follows the redirect and asks for a range, as download managers do
    with requests.Session() as http:
        redirect = http.get(
            f"{live_server.url}/api/download/models/{version.pk}", allow_redirects=False
        )
        whole = http.get(redirect.headers["Location"], timeout=10)
        part = http.get(redirect.headers["Location"], headers={"Range": "bytes=100-"}, timeout=10)

    # Then the bytes, ETag and Content-Range arrive intact over the wire
    assert redirect.status_code == 302
    assert whole.content == DATA
    assert whole.headers["ETag"] == f'"{upload.blob_id}"'
    assert part.status_code == 206
    assert part.content == DATA[100:]
    assert part.headers["Content-Range"] == f"bytes 100-{len(DATA) - 1}/{len(DATA)}"
