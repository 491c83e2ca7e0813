"""The Civitai API v1 subset, over real HTTP with ``requests``.

The catalogue is published once per module on a shared live server (``civitai_site``).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from tests.registry.compat_fixtures import CivitaiCatalogue, SharedSite, publish_file

pytest_plugins = ["tests.registry.compat_fixtures"]

BASE = "/civitai/api/v1"
HASH_TYPES = ("SHA256", "AutoV1", "AutoV2", "AutoV3", "CRC32", "BLAKE3")


def _get(site: SharedSite, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{site.url}{path}", params=params, timeout=30)


def _names(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


def _catalogue(site: SharedSite) -> CivitaiCatalogue:
    return site.data["catalogue"]


# List -----------------------------------------------------------------------------------------


def test_list_shows_listed_models_in_civitais_shape(civitai_site):
    # given three listed models, a private one, a draft-only one and an unlisted one
    # when the list is fetched
    body = _get(civitai_site, f"{BASE}/models").json()
    # then only the listed ones come, shaped as on Civitai
    assert {item["name"] for item in body["items"]} == {"Photo Checkpoint", "Ink Style", "XL Glow"}
    ink = next(item for item in body["items"] if item["name"] == "Ink Style")
    assert (ink["type"], ink["nsfw"]) == ("LORA", False)
    assert ink["creator"] == {"username": "bob", "image": None}
    assert set(ink["tags"]) == {"ink", "style"}
    assert ink["stats"]["downloadCount"] == 3
    version = ink["modelVersions"][0]
    assert (version["baseModel"], version["trainedWords"]) == ("SD 1.5", ["inkstyle"])
    file = version["files"][0]
    assert (file["type"], file["primary"], file["metadata"]["format"]) == (
        "Model",
        True,
        "SafeTensor",
    )
    assert body["metadata"] == {"totalItems": 3, "currentPage": 1, "pageSize": 100, "totalPages": 1}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"types": "Checkpoint"}, ["Photo Checkpoint"]),
        ({"types": "LORA"}, ["Ink Style", "XL Glow"]),
        ({"types": ["Checkpoint", "LORA"]}, ["Ink Style", "Photo Checkpoint", "XL Glow"]),
        ({"types": "Checkpoint,LORA"}, ["Ink Style", "Photo Checkpoint", "XL Glow"]),
        ({"types": "Hypernetwork"}, []),
        ({"username": "bob"}, ["Ink Style", "XL Glow"]),
        ({"tag": "ink"}, ["Ink Style"]),
        ({"query": "glow"}, ["XL Glow"]),
        ({"baseModels": "SDXL 1.0"}, ["XL Glow"]),
        ({"baseModels": "SD 1.5"}, ["Ink Style", "Photo Checkpoint"]),
        ({"nsfw": "false"}, ["Ink Style", "Photo Checkpoint"]),
        ({"nsfw": "true"}, ["Ink Style", "Photo Checkpoint", "XL Glow"]),
    ],
)
def test_list_filters(civitai_site, params, expected):
    assert sorted(_names(_get(civitai_site, f"{BASE}/models", **params))) == expected


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("Most Downloaded", ["Ink Style", "Photo Checkpoint", "XL Glow"]),
        ("Newest", ["XL Glow", "Ink Style", "Photo Checkpoint"]),
    ],
)
def test_list_sorts(civitai_site, sort, expected):
    assert _names(_get(civitai_site, f"{BASE}/models", sort=sort)) == expected


def test_pages_link_to_the_next_one(civitai_site):
    # given three listed models
    # when the first page of two is fetched, then the page its nextPage names
    first = _get(civitai_site, f"{BASE}/models", limit=2, sort="Newest").json()
    second = requests.get(first["metadata"]["nextPage"], timeout=30).json()
    # then the pages hold two and one models, and the last one has no next page
    assert first["metadata"]["totalPages"] == 2
    assert [i["name"] for i in second["items"]] == ["Photo Checkpoint"]
    assert "nextPage" not in second["metadata"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "abc"},
        {"limit": "201"},
        {"page": "0"},
        {"types": "Spaceship"},
        {"sort": "Best"},
        {"nsfw": "maybe"},
    ],
)
def test_bad_list_parameters_are_400_with_an_error(civitai_site, params):
    response = _get(civitai_site, f"{BASE}/models", **params)
    assert response.status_code == 400
    assert response.json()["error"]


@pytest.mark.django_db
def test_list_query_count_does_not_grow_with_models(
    client, civitai_catalogue, civitai_files, django_assert_num_queries
):
    # (in-process, since queries are counted on the test's own database connection)
    # given the catalogue, and the number of queries its list takes
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as before:
        assert len(client.get(f"{BASE}/models").json()["items"]) == 3
    # when two more models are published
    bob = civitai_catalogue.lora.owner
    for n in range(2):
        publish_file(owner=bob, name=f"More {n}", kind="lora", file=civitai_files["ink"])
    # then the list of five takes as many queries as the list of three
    with django_assert_num_queries(len(before.captured_queries)):
        assert len(client.get(f"{BASE}/models").json()["items"]) == 5


# Details --------------------------------------------------------------------------------------


def test_model_detail(civitai_site):
    catalogue = _catalogue(civitai_site)
    body = _get(civitai_site, f"{BASE}/models/{catalogue.checkpoint.pk}").json()
    assert (body["id"], body["name"], body["type"]) == (
        catalogue.checkpoint.pk,
        "Photo Checkpoint",
        "Checkpoint",
    )
    assert [v["id"] for v in body["modelVersions"]] == [catalogue.checkpoint_version.pk]


@pytest.mark.parametrize("prefix", [BASE, "/api/v1"])
def test_version_detail_at_both_mounts(civitai_site, prefix):
    version = _catalogue(civitai_site).lora_version
    body = _get(civitai_site, f"{prefix}/model-versions/{version.pk}").json()
    assert (body["id"], body["modelId"], body["name"]) == (version.pk, version.model_id, "v1.0")
    assert body["model"] == {"name": "Ink Style", "type": "LORA", "nsfw": False, "poi": False}
    assert body["downloadUrl"] == f"{civitai_site.url}/api/download/models/{version.pk}"


def test_draft_version_is_not_found(civitai_site):
    draft = _catalogue(civitai_site).draft_only.versions.get()
    assert _get(civitai_site, f"{BASE}/model-versions/{draft.pk}").status_code == 404


def test_private_model_is_not_found_for_others(civitai_site):
    response = _get(civitai_site, f"{BASE}/models/{_catalogue(civitai_site).private.pk}")
    assert response.status_code == 404
    assert response.json()["error"]


def test_private_model_is_shown_to_its_owner(civitai_site):
    response = requests.get(
        f"{civitai_site.url}{BASE}/models/{_catalogue(civitai_site).private.pk}",
        headers={"Authorization": f"Bearer {civitai_site.tokens['carol']}"},
        timeout=30,
    )
    assert response.json()["name"] == "Secret Checkpoint"


@pytest.mark.parametrize(
    "path",
    [f"{BASE}/models/999999", f"{BASE}/model-versions/999999", "/api/v1/model-versions/999999"],
)
def test_unknown_ids_are_404_with_an_error(civitai_site, path):
    response = _get(civitai_site, path)
    assert response.status_code == 404
    assert re.fullmatch(r"No model( version)? with id 999999", response.json()["error"])


@pytest.mark.parametrize(
    "path", [f"{BASE}/models/abc", f"{BASE}/model-versions/-1", f"{BASE}/models/%C2%B2"]
)
def test_malformed_ids_are_400(civitai_site, path):
    response = _get(civitai_site, path)
    assert response.status_code == 400
    assert response.json()["error"]


def test_invalid_token_is_401(civitai_site):
    response = _get(civitai_site, f"{BASE}/models", token="atl_nope")
    assert response.status_code == 401
    assert response.json()["error"]


def test_other_methods_are_405_with_an_error(civitai_site):
    response = requests.post(f"{civitai_site.url}{BASE}/models", timeout=30)
    assert response.status_code == 405
    assert response.json()["error"]


# By hash --------------------------------------------------------------------------------------


def _file_hashes(site: SharedSite, version_id: int) -> dict[str, str]:
    return _get(site, f"{BASE}/model-versions/{version_id}").json()["files"][0]["hashes"]


@pytest.mark.parametrize("hash_type", HASH_TYPES)
def test_by_hash_finds_the_version_by_each_hash_in_any_case(civitai_site, hash_type):
    # given the checkpoint file's hashes as the API shows them (uppercase)
    version = _catalogue(civitai_site).checkpoint_version
    value = _file_hashes(civitai_site, version.pk)[hash_type]
    assert value == value.upper()
    # when the version is looked up by that hash, in upper and in lower case
    found = [
        _get(civitai_site, f"{BASE}/model-versions/by-hash/{v}").json()["id"]
        for v in (value, value.lower())
    ]
    # then both find the checkpoint's version
    assert found == [version.pk, version.pk]


def test_hashes_are_the_stored_ones(civitai_site):
    version = _catalogue(civitai_site).checkpoint_version
    blob = version.files.get(is_primary=True).blob
    hashes = _file_hashes(civitai_site, version.pk)
    assert hashes == {
        "SHA256": blob.sha256.upper(),
        "AutoV1": blob.autov1.upper(),
        "AutoV2": blob.sha256[:10].upper(),
        "AutoV3": blob.autov3[:12].upper(),
        "CRC32": blob.crc32.upper(),
        "BLAKE3": blob.blake3.upper(),
    }


def test_by_hash_at_civitais_own_path(civitai_site):
    version = _catalogue(civitai_site).lora_version
    sha256 = _file_hashes(civitai_site, version.pk)["SHA256"]
    assert _get(civitai_site, f"/api/v1/model-versions/by-hash/{sha256}").json()["id"] == version.pk


def test_by_hash_does_not_find_private_files(civitai_site):
    sha256 = _catalogue(civitai_site).private.versions.get().files.get().blob_id
    assert _get(civitai_site, f"{BASE}/model-versions/by-hash/{sha256}").status_code == 404


def test_unknown_hash_is_404_with_an_error(civitai_site):
    response = _get(civitai_site, f"{BASE}/model-versions/by-hash/{'ab' * 32}")
    assert response.status_code == 404
    assert response.json()["error"] == "Model not found"


def test_malformed_hash_is_400(civitai_site):
    response = _get(civitai_site, f"{BASE}/model-versions/by-hash/not-a-hash")
    assert response.status_code == 400
    assert response.json()["error"]


# Download -------------------------------------------------------------------------------------


def test_download_url_serves_the_file_with_its_name(civitai_site, civitai_files):
    # given the checkpoint's version as the API describes it
    version = _catalogue(civitai_site).checkpoint_version
    body = _get(civitai_site, f"{BASE}/model-versions/{version.pk}").json()
    # when its downloadUrl is followed
    response = requests.get(body["downloadUrl"], timeout=30)
    # then the redirect ends at the file's bytes, named as on Civitai
    assert [r.status_code for r in response.history] == [302]
    assert response.content == civitai_files["photo"].read_bytes()
    assert 'filename="photoCheckpoint_v10.safetensors"' in response.headers["Content-Disposition"]


def test_download_url_of_a_folders_file_serves_that_file(civitai_site, civitai_files):
    # given an (unlisted) two-file version, as the API describes it
    version = _catalogue(civitai_site).folder_version
    body = _get(civitai_site, f"{BASE}/model-versions/{version.pk}").json()
    config = next(f for f in body["files"] if f.get("path") == "unet/config.json")
    # when the config file's downloadUrl is followed
    response = requests.get(config["downloadUrl"], timeout=30)
    # then it is that file
    assert (config["type"], config["primary"]) == ("Config", False)
    assert response.content == civitai_files["config"].read_bytes()
