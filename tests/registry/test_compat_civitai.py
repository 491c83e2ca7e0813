"""The Civitai API v1 subset, over real HTTP with ``requests`` against the live server."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from tests.registry.compat_fixtures import CivitaiCatalogue, publish_file

pytest_plugins = ["tests.registry.compat_fixtures"]

# Live-server tests run in flushed transactions; serialized_rollback restores migration data.
live_db = pytest.mark.django_db(transaction=True, serialized_rollback=True)

BASE = "/civitai/api/v1"
HASH_TYPES = ("SHA256", "AutoV1", "AutoV2", "AutoV3", "CRC32", "BLAKE3")


def _get(live_server: Any, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{live_server.url}{path}", params=params, timeout=30)


def _names(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


# List -----------------------------------------------------------------------------------------


@live_db
def test_list_shows_listed_models_in_civitais_shape(live_server, civitai_catalogue):
    # given three listed models, a private one and one with only a draft
    # when the list is fetched
    body = _get(live_server, f"{BASE}/models").json()
    # then only the listed ones come, shaped as on Civitai
    assert {item["name"] for item in body["items"]} == {"Photo Checkpoint", "Ink Style", "XL Glow"}
    ink = next(item for item in body["items"] if item["name"] == "Ink Style")
    assert ink["type"] == "LORA"
    assert ink["creator"] == {"username": "bob", "image": None}
    assert set(ink["tags"]) == {"ink", "style"}
    assert ink["stats"]["downloadCount"] == 7
    version = ink["modelVersions"][0]
    assert (version["baseModel"], version["trainedWords"]) == ("SD 1.5", ["inkstyle"])
    assert version["files"][0]["metadata"]["format"] == "SafeTensor"
    assert body["metadata"] == {
        "totalItems": 3, "currentPage": 1, "pageSize": 100, "totalPages": 1
    }


@live_db
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"types": "Checkpoint"}, ["Photo Checkpoint"]),
        ({"types": "LORA"}, ["Ink Style", "XL Glow"]),
        ({"types": ["Checkpoint", "LORA"]}, ["Ink Style", "Photo Checkpoint", "XL Glow"]),
        ({"types": "Hypernetwork"}, []),
        ({"username": "bob"}, ["Ink Style", "XL Glow"]),
        ({"tag": "ink"}, ["Ink Style"]),
        ({"query": "glow"}, ["XL Glow"]),
        ({"baseModels": "SDXL 1.0"}, ["XL Glow"]),
        ({"baseModels": "SD 1.5"}, ["Ink Style", "Photo Checkpoint"]),
        ({"nsfw": "false"}, ["Ink Style", "Photo Checkpoint"]),
    ],
)
def test_list_filters(live_server, civitai_catalogue, params, expected):
    assert sorted(_names(_get(live_server, f"{BASE}/models", **params))) == expected


@live_db
def test_most_downloaded_sorts_by_downloads(live_server, civitai_catalogue):
    names = _names(_get(live_server, f"{BASE}/models", sort="Most Downloaded"))
    assert names == ["Ink Style", "Photo Checkpoint", "XL Glow"]


@live_db
def test_newest_sorts_by_creation(live_server, civitai_catalogue):
    names = _names(_get(live_server, f"{BASE}/models", sort="Newest"))
    assert names == ["XL Glow", "Ink Style", "Photo Checkpoint"]


@live_db
def test_pages_link_to_the_next_one(live_server, civitai_catalogue):
    # given three listed models
    # when the first page of two is fetched, then the page its nextPage names
    first = _get(live_server, f"{BASE}/models", limit=2, sort="Newest").json()
    second = requests.get(first["metadata"]["nextPage"], timeout=30).json()
    # then the pages hold two and one models, and the last has no next page
    assert first["metadata"]["totalPages"] == 2
    assert [i["name"] for i in second["items"]] == ["Photo Checkpoint"]
    assert "nextPage" not in second["metadata"]


@live_db
@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "abc"}, {"page": "0"}, {"types": "Spaceship"}, {"sort": "Best"}],
)
def test_bad_list_parameters_are_400_with_an_error(live_server, params):
    response = _get(live_server, f"{BASE}/models", **params)
    assert response.status_code == 400
    assert response.json()["error"]


@pytest.mark.django_db
def test_list_query_count_does_not_grow_with_models(
    client, civitai_catalogue, civitai_files, django_assert_num_queries
):
    # (in-process: queries are only counted on the test's own connection)
    # given the catalogue, and the number of queries its list takes
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as before:
        assert client.get(f"{BASE}/models").status_code == 200
    # when two more models are published
    bob = civitai_catalogue.users["bob"]
    for n in range(2):
        publish_file(
            owner=bob, name=f"More {n}", kind="lora", file=civitai_files["ink"], tags=("more",)
        )
    # then the list of five takes as many queries as the list of three
    with django_assert_num_queries(len(before.captured_queries)):
        assert len(client.get(f"{BASE}/models").json()["items"]) == 5


# Details --------------------------------------------------------------------------------------


@live_db
def test_model_detail(live_server, civitai_catalogue: CivitaiCatalogue):
    body = _get(live_server, f"{BASE}/models/{civitai_catalogue.checkpoint.pk}").json()
    assert (body["id"], body["name"], body["type"]) == (
        civitai_catalogue.checkpoint.pk, "Photo Checkpoint", "Checkpoint"
    )
    assert body["modelVersions"][0]["id"] == civitai_catalogue.checkpoint_version.pk


@live_db
@pytest.mark.parametrize("prefix", [BASE, "/api/v1"])
def test_version_detail_at_both_mounts(live_server, civitai_catalogue, prefix):
    version = civitai_catalogue.lora_version
    body = _get(live_server, f"{prefix}/model-versions/{version.pk}").json()
    assert (body["id"], body["modelId"], body["name"]) == (version.pk, version.model_id, "v1.0")
    assert body["model"] == {"name": "Ink Style", "type": "LORA", "nsfw": False, "poi": False}
    assert body["downloadUrl"] == f"{live_server.url}/api/download/models/{version.pk}"
    assert body["files"][0]["primary"] is True


@live_db
def test_private_model_is_not_found_for_others(live_server, civitai_catalogue):
    response = _get(live_server, f"{BASE}/models/{civitai_catalogue.private.pk}")
    assert response.status_code == 404
    assert response.json()["error"]


@live_db
def test_private_model_is_shown_to_its_owner(live_server, civitai_catalogue, token_for):
    token = token_for(civitai_catalogue.users["carol"])
    response = requests.get(
        f"{live_server.url}{BASE}/models/{civitai_catalogue.private.pk}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.json()["name"] == "Secret Checkpoint"


@live_db
@pytest.mark.parametrize(
    "path",
    [f"{BASE}/models/999999", f"{BASE}/model-versions/999999", "/api/v1/model-versions/999999"],
)
def test_unknown_ids_are_404_with_an_error(live_server, path):
    response = _get(live_server, path)
    assert response.status_code == 404
    assert re.match(r"No model( version)? with id 999999", response.json()["error"])


@live_db
@pytest.mark.parametrize("path", [f"{BASE}/models/abc", f"{BASE}/model-versions/-1"])
def test_malformed_ids_are_400(live_server, path):
    response = _get(live_server, path)
    assert response.status_code == 400
    assert response.json()["error"]


@live_db
def test_invalid_token_is_401(live_server):
    response = _get(live_server, f"{BASE}/models", token="atl_nope")
    assert response.status_code == 401
    assert response.json()["error"]


# By hash --------------------------------------------------------------------------------------


def _file_hashes(live_server: Any, version_id: int) -> dict[str, str]:
    body = _get(live_server, f"{BASE}/model-versions/{version_id}").json()
    return body["files"][0]["hashes"]


@live_db
@pytest.mark.parametrize("hash_type", HASH_TYPES)
def test_by_hash_finds_the_version_by_each_hash_in_any_case(
    live_server, civitai_catalogue, hash_type
):
    # given the checkpoint's file hashes as the API shows them (uppercase)
    version = civitai_catalogue.checkpoint_version
    value = _file_hashes(live_server, version.pk)[hash_type]
    assert value == value.upper()
    # when the version is looked up by that hash, upper and lower case
    found = [
        _get(live_server, f"{BASE}/model-versions/by-hash/{v}").json()["id"]
        for v in (value, value.lower())
    ]
    # then both find the checkpoint's version
    assert found == [version.pk, version.pk]


@live_db
def test_by_hash_at_civitais_own_path(live_server, civitai_catalogue):
    version = civitai_catalogue.lora_version
    sha256 = _file_hashes(live_server, version.pk)["SHA256"]
    body = _get(live_server, f"/api/v1/model-versions/by-hash/{sha256}").json()
    assert body["id"] == version.pk


@live_db
def test_by_hash_does_not_find_private_files(live_server, civitai_catalogue):
    sha256 = civitai_catalogue.private.versions.get().files.get().blob_id
    response = _get(live_server, f"{BASE}/model-versions/by-hash/{sha256}")
    assert response.status_code == 404


@live_db
def test_unknown_hash_is_404_with_an_error(live_server, civitai_catalogue):
    response = _get(live_server, f"{BASE}/model-versions/by-hash/{'ab' * 32}")
    assert response.status_code == 404
    assert response.json()["error"] == "Model not found"


@live_db
def test_malformed_hash_is_400(live_server):
    response = _get(live_server, f"{BASE}/model-versions/by-hash/not-a-hash")
    assert response.status_code == 400
    assert response.json()["error"]


# Download -------------------------------------------------------------------------------------


@live_db
def test_download_url_serves_the_file_with_its_name(live_server, civitai_catalogue, civitai_files):
    # given the checkpoint's version as the API describes it
    version = civitai_catalogue.checkpoint_version
    body = _get(live_server, f"{BASE}/model-versions/{version.pk}").json()
    # when its downloadUrl is followed
    response = requests.get(body["downloadUrl"], timeout=30)
    # then the redirect ends at the file's bytes, named as on Civitai
    assert response.history and response.history[0].status_code == 302
    assert response.content == civitai_files["photo"].read_bytes()
    assert 'filename="photoCheckpoint_v10.safetensors"' in response.headers["Content-Disposition"]


@live_db
def test_download_url_of_a_diffusers_file_serves_that_file(live_server, published_tiny):
    # given the tiny model's diffusers version, whose files all have download URLs
    version = published_tiny.diffusers
    body = _get(live_server, f"{BASE}/model-versions/{version.pk}").json()
    unet = next(f for f in body["files"] if f.get("path") == "unet/config.json")
    # when the unet config's downloadUrl is followed
    response = requests.get(unet["downloadUrl"], timeout=30)
    # then it is that file
    expected = published_tiny.paths.diffusers_dir / "unet" / "config.json"
    assert response.content == expected.read_bytes()
