"""/api/v1/datasets and /api/v1/dataset-versions: hosted archives and private manifests."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from registry.models import DatasetVersion, Visibility
from registry.services.catalog import dataset_create
from tests.registry.factories import (
    complete_upload,
    dataset_zip_bytes,
    make_private_dataset,
    make_public_dataset,
    private_manifest,
)

pytestmark = pytest.mark.django_db

DATASETS = "/api/v1/datasets"


def _create(api: APIClient, kind: str, **extra: str):
    response = api.post(DATASETS, {"name": f"My {kind} set", "kind": kind, **extra}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_public_dataset_version_from_an_archive_upload(alice, alice_api: APIClient) -> None:
    # Given a public dataset and an uploaded archive of three captioned images
    dataset = _create(alice_api, "public", description="Plain *colors*")
    upload = complete_upload(user=alice, data=dataset_zip_bytes(images=3), filename="colors.zip")

    # When a version is created from the upload
    response = alice_api.post(
        f"{DATASETS}/{dataset['id']}/versions",
        {"name": "v1", "upload_id": str(upload.pk), "license_code": "cc-by-4.0"},
        format="json",
    )

    # Then it counts the images, offers the archive for download, and lists no member names
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["image_count"] == 3
    assert body["stats"]["caption_count"] == 3
    assert body["file"]["sha256"] == upload.blob_id
    assert body["file"]["download_url"].endswith(f"/api/download/datasets/{body['id']}")
    assert "img_0" not in response.content.decode()


def test_private_dataset_version_shows_aggregates_and_never_file_names(
    alice_api: APIClient, bob_api: APIClient
) -> None:
    # Given a private dataset whose node reports a manifest with per-file entries
    dataset = _create(alice_api, "private")
    created = alice_api.post(
        f"{DATASETS}/{dataset['id']}/versions",
        {"name": "v1", "manifest": private_manifest(count=12)},
        format="json",
    )

    # When anyone reads the version
    response = bob_api.get(f"/api/v1/dataset-versions/{created.json()['id']}")

    # Then only aggregate statistics are shown: no names, captions, paths or file to fetch
    assert created.status_code == 201, created.json()
    body = response.json()
    assert body["image_count"] == 12
    assert body["stats"] == {"count": 12, "total_bytes": 123456, "resolutions": {"512x512": 12}}
    assert body["file"] is None
    text = response.content.decode()
    for secret in ("secret_holiday", "my house", "/home/owner"):
        assert secret not in text


def test_a_private_dataset_refuses_an_upload(alice, alice_api: APIClient) -> None:
    dataset = _create(alice_api, "private")
    upload = complete_upload(user=alice, data=dataset_zip_bytes(), filename="photos.zip")

    response = alice_api.post(
        f"{DATASETS}/{dataset['id']}/versions",
        {"name": "v1", "upload_id": str(upload.pk)},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "private_dataset"
    assert not DatasetVersion.objects.exists()


def test_a_public_dataset_refuses_a_manifest(alice_api: APIClient) -> None:
    dataset = _create(alice_api, "public")

    response = alice_api.post(
        f"{DATASETS}/{dataset['id']}/versions",
        {"name": "v1", "manifest": private_manifest()},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "public_dataset"


def test_a_public_dataset_refuses_an_upload_that_is_not_an_archive(alice, alice_api) -> None:
    dataset = _create(alice_api, "public")
    upload = complete_upload(user=alice)

    response = alice_api.post(
        f"{DATASETS}/{dataset['id']}/versions",
        {"name": "v1", "upload_id": str(upload.pk)},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "not_an_archive"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "v1"}, "invalid"),
        ({"name": "v1", "manifest": [1, 2]}, "invalid"),
        ({"name": "v1", "manifest": {"count": 3}}, "bad_manifest"),
        ({"name": "v1", "manifest": {"count": 0, "manifest_hash": "0" * 64}}, "bad_manifest"),
        ({"name": "v1", "manifest": {**private_manifest(), "x": "a\u0000"}}, "bad_text"),
    ],
    ids=["nothing", "not-an-object", "no-hash", "zero-images", "nul-character"],
)
def test_bad_private_versions_are_400(
    alice_api: APIClient, body: dict[str, object], code: str
) -> None:
    dataset = _create(alice_api, "private")

    response = alice_api.post(f"{DATASETS}/{dataset['id']}/versions", body, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == code


def test_only_the_owner_adds_versions(alice_api: APIClient, bob_api: APIClient) -> None:
    dataset = _create(alice_api, "private")

    response = bob_api.post(
        f"{DATASETS}/{dataset['id']}/versions",
        {"name": "v1", "manifest": private_manifest()},
        format="json",
    )

    assert response.status_code == 403


def test_list_shows_public_datasets_with_a_version_and_filters_by_kind(alice, make_user) -> None:
    make_public_dataset(owner=alice, name="Colors")
    make_private_dataset(owner=alice, name="Holidays")
    make_private_dataset(owner=alice, name="Hidden", visibility=Visibility.PRIVATE)
    dataset_create(owner=alice, name="Empty", kind="public")

    everything = APIClient().get(DATASETS).json()["results"]
    private_kind = APIClient().get(DATASETS, {"kind": "private"}).json()["results"]
    searched = APIClient().get(DATASETS, {"q": "colo"}).json()["results"]

    assert sorted(d["name"] for d in everything) == ["Colors", "Holidays"]
    assert [d["name"] for d in private_kind] == ["Holidays"]
    assert [d["name"] for d in searched] == ["Colors"]
    assert everything[0]["latest_version"]["name"] == "v1"


def test_mine_lists_the_owners_empty_and_hidden_datasets(alice, alice_api: APIClient) -> None:
    make_private_dataset(owner=alice, name="Hidden", visibility=Visibility.PRIVATE)
    dataset_create(owner=alice, name="Empty", kind="public")

    response = alice_api.get(DATASETS, {"mine": "1"})

    assert sorted(d["name"] for d in response.json()["results"]) == ["Empty", "Hidden"]


def test_a_hidden_dataset_and_its_versions_are_404_for_others(alice, bob_api) -> None:
    version = make_private_dataset(owner=alice, name="Hidden", visibility=Visibility.PRIVATE)

    assert bob_api.get(f"{DATASETS}/{version.dataset_id}").status_code == 404
    assert bob_api.get(f"/api/v1/dataset-versions/{version.pk}").status_code == 404
    assert APIClient().get(f"/api/v1/dataset-versions/{version.pk}").status_code == 404


def test_dataset_detail_lists_versions_and_renders_the_description(alice_api: APIClient) -> None:
    dataset = _create(alice_api, "private", description="Taken **by me**")
    alice_api.post(
        f"{DATASETS}/{dataset['id']}/versions",
        {"name": "v1", "manifest": private_manifest()},
        format="json",
    )

    body = APIClient().get(f"{DATASETS}/{dataset['id']}").json()

    assert [v["name"] for v in body["versions"]] == ["v1"]
    assert "<strong>by me</strong>" in body["description_html"]
    assert body["owner"]["username"] == "alice"
