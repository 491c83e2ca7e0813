"""The Civitai API v1 subset, over real HTTP with ``requests``.

The catalogue is published once per module on a shared live server (``civitai_site``).
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from typing import Any
from urllib.parse import parse_qs, urlparse

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
    # and one page holds them all, so there is no next cursor (Civitai's current metadata)
    assert body["metadata"] == {}


def test_list_with_page_answers_page_metadata(civitai_site):
    body = _get(civitai_site, f"{BASE}/models", page=1).json()
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
    first = _get(civitai_site, f"{BASE}/models", limit=2, page=1, sort="Newest").json()
    second = requests.get(first["metadata"]["nextPage"], timeout=30).json()
    # then the pages hold two and one models, and the last one has no next page
    assert first["metadata"]["totalPages"] == 2
    assert [i["name"] for i in second["items"]] == ["Photo Checkpoint"]
    assert "nextPage" not in second["metadata"]


@pytest.mark.parametrize("sort", ["Highest Rated", "Most Downloaded", "Newest"])
def test_cursor_pages_walk_the_whole_list_once(civitai_site, sort):
    # given the full list in one page, in that sort
    everything = _names(_get(civitai_site, f"{BASE}/models", sort=sort))
    # when it is walked one model at a time, following metadata.nextPage as clients do
    seen: list[str] = []
    body = _get(civitai_site, f"{BASE}/models", limit=1, sort=sort).json()
    while True:
        seen += [item["name"] for item in body["items"]]
        metadata = body["metadata"]
        if "nextCursor" not in metadata:
            break
        # then nextPage is this list with cursor=nextCursor
        assert parse_qs(urlparse(metadata["nextPage"]).query)["cursor"] == [metadata["nextCursor"]]
        body = requests.get(metadata["nextPage"], timeout=30).json()
    # then every model comes once, in the same order, and the last page has no nextPage
    assert seen == everything
    assert "nextPage" not in body["metadata"]


def test_cursor_parameter_is_honoured(civitai_site):
    # given the first page of one model and its nextCursor
    first = _get(civitai_site, f"{BASE}/models", limit=1, sort="Newest").json()
    # when the cursor is passed by hand, with another limit
    rest = _get(
        civitai_site,
        f"{BASE}/models",
        limit=5,
        sort="Newest",
        cursor=first["metadata"]["nextCursor"],
    )
    # then the list continues after the first model
    assert [i["name"] for i in first["items"]] == ["XL Glow"]
    assert _names(rest) == ["Ink Style", "Photo Checkpoint"]


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "abc"},
        {"cursor": "1|2"},
        {"cursor": "nan|0|0|1"},
        {"cursor": "1.0|0|0|99999999999999999999999"},
        {"cursor": "2020-01-01T00:00:00|5", "sort": "Newest"},
        {"cursor": "1|2", "page": "1", "sort": "Newest"},
    ],
)
def test_bad_cursor_is_400_with_an_error(civitai_site, params):
    response = _get(civitai_site, f"{BASE}/models", **params)
    assert response.status_code == 400
    assert set(response.json()) >= {"error"} and response.json()["error"]


def test_lists_show_published_versions_only_even_to_the_owner(civitai_site):
    # given alice's checkpoint, which has a published version and a draft
    catalogue = _catalogue(civitai_site)
    auth = {"Authorization": f"Bearer {civitai_site.tokens['alice']}"}
    # when alice (the owner) and anonymous fetch the list and the model
    for headers in ({}, auth):
        for path, pick in (
            (
                f"{BASE}/models",
                lambda b: next(i for i in b["items"] if i["name"] == "Photo Checkpoint"),
            ),
            (f"{BASE}/models/{catalogue.checkpoint.pk}", lambda b: b),
        ):
            body = requests.get(f"{civitai_site.url}{path}", headers=headers, timeout=30).json()
            versions = pick(body)["modelVersions"]
            # then only the published version is there, with a publishedAt
            assert [v["id"] for v in versions] == [catalogue.checkpoint_version.pk], path
            assert all(v["publishedAt"] and v["status"] == "Published" for v in versions)


def test_no_list_shows_a_version_without_publishedAt(civitai_site):
    auth = {"Authorization": f"Bearer {civitai_site.tokens['alice']}"}
    body = requests.get(f"{civitai_site.url}{BASE}/models", headers=auth, timeout=30).json()
    assert all(v["publishedAt"] for item in body["items"] for v in item["modelVersions"])


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
    # then the redirect ends at the file's bytes, and both the signed URL's
    # response-content-disposition and the file's Content-Disposition read as Civitai's do
    assert [r.status_code for r in response.history] == [302]
    assert response.content == civitai_files["photo"].read_bytes()
    expected = 'attachment; filename="photoCheckpoint_v10.safetensors"'
    signed = parse_qs(urlparse(response.history[0].headers["Location"]).query)
    assert signed["response-content-disposition"] == [expected]
    assert response.headers["Content-Disposition"] == expected
    # and the way Civitai clients read it (split on filename=, strip quotes) gives the name
    assert expected.split("filename=")[1].strip('"') == body["files"][0]["name"]


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("photo.safetensors", 'attachment; filename="photo.safetensors"'),
        (
            "café ü.safetensors",
            "attachment; filename*=UTF-8''caf%C3%A9%20%C3%BC.safetensors; "
            'filename="cafe u.safetensors"',
        ),
        ('a"b.zip', "attachment; filename*=UTF-8''a%22b.zip; filename=\"a_b.zip\""),
        (
            "日本.zip",
            "attachment; filename*=UTF-8''%E6%97%A5%E6%9C%AC.zip; filename=\"download.zip\"",
        ),
    ],
)
def test_content_disposition_puts_filename_star_first_and_only_when_needed(name, header):
    from registry.services.downloads import content_disposition

    assert content_disposition(name) == header
    # a client that splits on filename= keeps a clean (ASCII) name, never a second parameter
    kept = header.split("filename=")[1].strip('"')
    assert ";" not in kept and "filename" not in kept


# Version keys clients read ----------------------------------------------------------------------


def test_version_has_vae_id_and_images_cover_first(civitai_site):
    # given bob's LoRA with two sample images
    version = _catalogue(civitai_site).lora_version
    images = list(version.images.all())
    # when the version is fetched alone and in the list
    alone = _get(civitai_site, f"{BASE}/model-versions/{version.pk}").json()
    listed = next(
        i for i in _get(civitai_site, f"{BASE}/models").json()["items"] if i["name"] == "Ink Style"
    )["modelVersions"][0]
    # then both carry vaeId null and the images in order, the cover (first) first, fetchable
    for body in (alone, listed):
        assert body["vaeId"] is None
        assert [i["id"] for i in body["images"]] == [image.pk for image in images]
        assert body["images"][0]["meta"]["prompt"] == "ink cat"
    cover = requests.get(alone["images"][0]["url"], timeout=30)
    assert cover.status_code == 200 and cover.content[:4] == b"\x89PNG"


def test_version_without_images_has_an_empty_list(civitai_site):
    version = _catalogue(civitai_site).checkpoint_version
    body = _get(civitai_site, f"{BASE}/model-versions/{version.pk}").json()
    assert (body["images"], body["vaeId"]) == ([], None)


# Errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/civitai/api/v1/nope",
        "/civitai/api/v2/models",
        "/civitai/",
        "/civitai/api/v1/models/1/extra",
        "/api/v1/model-versions/1/files",
        "/api/v1/model-versions/mini/",
    ],
)
def test_unknown_civitai_routes_are_json_404(civitai_site, path):
    for method in ("get", "post"):
        response = getattr(requests, method)(f"{civitai_site.url}{path}", timeout=30)
        assert response.status_code == 404, (method, path)
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"]


def test_download_route_errors_are_civitai_shaped(civitai_site):
    draft = _catalogue(civitai_site).draft_only.versions.get()
    for path, status in (
        ("/api/download/models/999999", 404),
        (f"/api/download/models/{draft.pk}", 404),
    ):
        response = _get(civitai_site, path)
        assert response.status_code == status
        assert response.json()["error"]
    # and another method is a JSON 405, not an empty page
    version = _catalogue(civitai_site).checkpoint_version
    for prefix in ("", "/civitai"):
        url = f"{civitai_site.url}{prefix}/api/download/models/{version.pk}"
        response = requests.post(url, timeout=30)
        assert response.status_code == 405
        assert response.json()["error"] == "Method POST is not allowed here."
        assert response.headers["Allow"] == "GET, HEAD"


# POST by-hash, mini, enums ----------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [BASE, "/api/v1"])
def test_post_by_hash_finds_many_versions_at_once(civitai_site, prefix):
    # given the SHA256 of two listed files, a private one, a draft's and an unknown one
    catalogue = _catalogue(civitai_site)
    sha = {
        name: version.files.get(is_primary=True).blob_id
        for name, version in (
            ("photo", catalogue.checkpoint_version),
            ("ink", catalogue.lora_version),
            ("secret", catalogue.private.versions.get()),
            ("draft", catalogue.draft_only.versions.get()),
        )
    }
    body = [sha["photo"].upper(), sha["ink"], sha["secret"], sha["draft"], "ab" * 32]
    # when they are posted at once
    response = requests.post(
        f"{civitai_site.url}{prefix}/model-versions/by-hash", json=body, timeout=30
    )
    # then an array of the published, visible versions holding them comes back (the photo
    # file is in alice's unlisted folder too), each as /model-versions/{id} answers it
    assert response.status_code == 200
    found = response.json()
    assert sorted(v["id"] for v in found) == sorted(
        [catalogue.checkpoint_version.pk, catalogue.lora_version.pk, catalogue.folder_version.pk]
    )
    ink = next(v for v in found if v["id"] == catalogue.lora_version.pk)
    assert ink == _get(civitai_site, f"{BASE}/model-versions/{ink['id']}").json()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"hashes": []}',
        b"[1, 2]",
        b'["abc"]',
        b'["' + b"g" * 64 + b'"]',
        ("[" + ",".join(['"' + "a" * 64 + '"'] * 101) + "]").encode(),
    ],
)
def test_post_by_hash_refuses_a_bad_body(civitai_site, body):
    response = requests.post(
        f"{civitai_site.url}/api/v1/model-versions/by-hash",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("Request must include an array of SHA256 Hashes")


def test_post_by_hash_takes_an_empty_array_and_refuses_get(civitai_site):
    url = f"{civitai_site.url}/api/v1/model-versions/by-hash"
    assert requests.post(url, json=[], timeout=30).json() == []
    response = requests.get(url, timeout=30)
    assert response.status_code == 405 and response.json()["error"]


@pytest.mark.parametrize("prefix", [BASE, "/api/v1"])
def test_mini_describes_the_primary_file(civitai_site, prefix):
    version = _catalogue(civitai_site).checkpoint_version
    full = _get(civitai_site, f"{BASE}/model-versions/{version.pk}").json()
    mini = _get(civitai_site, f"{prefix}/model-versions/mini/{version.pk}").json()
    file = full["files"][0]
    assert mini["air"] == full["air"]
    assert (mini["versionName"], mini["modelName"], mini["baseModel"]) == (
        "v1.0",
        "Photo Checkpoint",
        "SD 1.5",
    )
    assert (mini["fileName"], mini["size"], mini["hashes"], mini["format"]) == (
        file["name"],
        file["sizeKB"],
        file["hashes"],
        "SafeTensor",
    )
    assert mini["downloadUrls"] == [full["downloadUrl"]]
    assert mini["publishedAt"] == full["publishedAt"]


@pytest.mark.parametrize(
    ("version_id", "status"), [("999999", 404), ("abc", 400), ("private", 404)]
)
def test_mini_errors(civitai_site, version_id, status):
    if version_id == "private":
        version_id = str(_catalogue(civitai_site).private.versions.get().pk)
    response = _get(civitai_site, f"/api/v1/model-versions/mini/{version_id}")
    assert response.status_code == status
    assert response.json()["error"]


@pytest.mark.parametrize("prefix", [BASE, "/api/v1"])
def test_enums(civitai_site, prefix):
    body = _get(civitai_site, f"{prefix}/enums").json()
    assert set(body) == {"ModelType", "ModelFileType", "BaseModel", "BaseModelType"}
    assert {"Checkpoint", "LORA", "TextualInversion"} <= set(body["ModelType"])
    assert {"SD 1.5", "SDXL 1.0"} <= set(body["BaseModel"])
    # and every value the lists answer is one the enums name
    listed = _get(civitai_site, f"{BASE}/models").json()["items"]
    assert {i["type"] for i in listed} <= set(body["ModelType"])
    assert {v["baseModel"] for i in listed for v in i["modelVersions"]} <= set(body["BaseModel"])


# A diffusers folder as one archive ---------------------------------------------------------------


def _folder_file(site: SharedSite) -> dict[str, Any]:
    version = _catalogue(site).folder_version
    files = _get(site, f"{BASE}/model-versions/{version.pk}").json()["files"]
    assert len(files) == 1
    return files[0]


def test_diffusers_version_shows_as_one_archive(civitai_site, civitai_files):
    # given alice's two-file (diffusers layout) version
    version = _catalogue(civitai_site).folder_version
    # when the API describes it
    file = _folder_file(civitai_site)
    # then it is one Diffusers zip with a name of its own, and its hashes are those of the
    # bytes its downloadUrl serves
    assert (file["type"], file["primary"], file["metadata"]["format"]) == (
        "Model",
        True,
        "Diffusers",
    )
    assert file["name"] == f"folder-model-v10-{version.pk}-diffusers.zip"
    response = requests.get(file["downloadUrl"], timeout=30)
    assert response.status_code == 200
    data = response.content
    assert response.headers["Content-Disposition"] == f'attachment; filename="{file["name"]}"'
    assert file["hashes"]["SHA256"] == hashlib.sha256(data).hexdigest().upper()
    assert file["hashes"]["AutoV2"] == file["hashes"]["SHA256"][:10]
    assert file["sizeKB"] == round(len(data) / 1024, 4)
    # and it is a valid zip of the folder's files, stored, at their paths
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["photoCheckpoint_v10.safetensors", "unet/config.json"]
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
        assert archive.read("unet/config.json") == civitai_files["config"].read_bytes()
        assert (
            archive.read("photoCheckpoint_v10.safetensors") == civitai_files["photo"].read_bytes()
        )


def test_archive_bytes_and_hashes_are_stable_and_resumable(civitai_site):
    # given the archive's URL and its bytes
    file = _folder_file(civitai_site)
    first = requests.get(file["downloadUrl"], timeout=30).content
    # when it is fetched again, and resumed from the middle (as download managers do)
    again = requests.get(file["downloadUrl"], timeout=30)
    start = len(first) // 2 + 7
    tail = requests.get(file["downloadUrl"], headers={"Range": f"bytes={start}-"}, timeout=30)
    # then the bytes, the hashes and the ETag do not change, and the range is the tail
    assert again.content == first
    assert _folder_file(civitai_site)["hashes"] == file["hashes"]
    assert tail.status_code == 206
    assert tail.headers["Content-Range"] == f"bytes {start}-{len(first) - 1}/{len(first)}"
    assert tail.content == first[start:]
    assert tail.headers["ETag"] == again.headers["ETag"]


def test_archive_is_found_by_its_own_hashes(civitai_site):
    version = _catalogue(civitai_site).folder_version
    hashes = _folder_file(civitai_site)["hashes"]
    for kind in ("SHA256", "AutoV2", "BLAKE3"):
        found = _get(civitai_site, f"{BASE}/model-versions/by-hash/{hashes[kind].lower()}")
        assert found.json()["id"] == version.pk, kind
    posted = requests.post(
        f"{civitai_site.url}/api/v1/model-versions/by-hash", json=[hashes["SHA256"]], timeout=30
    ).json()
    assert [v["id"] for v in posted] == [version.pk]


def test_a_file_of_a_diffusers_version_is_still_reachable_by_type(civitai_site, civitai_files):
    version = _catalogue(civitai_site).folder_version
    response = _get(civitai_site, f"/api/download/models/{version.pk}", type="unet/config.json")
    assert response.content == civitai_files["config"].read_bytes()
    assert response.headers["Content-Disposition"] == 'attachment; filename="config.json"'


def test_archive_link_refuses_tampering(civitai_site):
    file = _folder_file(civitai_site)
    location = requests.get(file["downloadUrl"], allow_redirects=False, timeout=30).headers[
        "Location"
    ]
    for old, new in (("signature=", "signature=0"), ("uid=0", "uid=1"), ("-diffusers.zip", ".zip")):
        response = requests.get(location.replace(old, new, 1), timeout=30)
        assert response.status_code == 403, (old, new)
        assert response.json()["error"]


def test_archive_writes_zip64_records_where_sizes_need_them(civitai_site, civitai_files):
    # (the limit lowered to 100 bytes stands in for 4 GiB)
    from registry.services.archives import archive_iter, version_archive

    version = _catalogue(civitai_site).folder_version
    archive = version_archive(version=version, zip64_limit=100)
    data = b"".join(archive_iter(archive=archive))
    assert len(data) == archive.size
    with zipfile.ZipFile(io.BytesIO(data)) as opened:
        assert opened.testzip() is None
        assert opened.read("photoCheckpoint_v10.safetensors") == civitai_files["photo"].read_bytes()
        assert opened.read("unet/config.json") == civitai_files["config"].read_bytes()
    # and every byte range reads the same bytes as the whole
    for start, end in (
        (0, 10),
        (29, 31),
        (archive.size - 30, archive.size - 1),
        (5, archive.size - 1),
    ):
        assert (
            b"".join(archive_iter(archive=archive, start=start, end=end)) == data[start : end + 1]
        )
