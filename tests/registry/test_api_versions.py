"""/api/v1/models/{id}/versions, /api/v1/versions/{id}[/publish|/unpublish|/images], files."""

from __future__ import annotations

import io

import pytest
from rest_framework.test import APIClient

from registry.models import Blob, Lineage, ModelVersion, SampleImage, Visibility
from registry.services.catalog import ParentSpec, model_create
from tests.registry.factories import (
    complete_upload,
    lora_bytes,
    make_model,
    make_private_dataset,
    make_version,
    png_bytes,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(alice):
    return model_create(owner=alice, name="Ink", kind="lora")


# --- create ----------------------------------------------------------------------------------


def test_create_version_from_an_upload_reports_files_hashes_and_detection(
    alice, alice_api: APIClient, model
) -> None:
    # Given a completed upload of a kohya SD 1.x LoRA
    upload = complete_upload(user=alice)

    # When a version is created from it
    response = alice_api.post(
        f"/api/v1/models/{model.pk}/versions",
        {
            "name": "v1",
            "description": "First *cut*",
            "trigger_words": ["inkstyle"],
            "files": [{"upload_id": str(upload.pk), "path": "ink.safetensors"}],
            "license_code": "creativeml-openrail-m",
        },
        format="json",
    )

    # Then it is a draft whose file carries every hash and what the header says
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["base_model"], body["layout"]) == ("draft", "sd1", "single")
    assert body["trigger_words"] == ["inkstyle"]
    [file] = body["files"]
    blob = Blob.objects.get(pk=upload.blob_id)
    assert file["path"] == "ink.safetensors"
    assert file["size"] == blob.size
    assert file["format"] == "safetensors"
    assert file["is_primary"] is True
    assert file["hashes"] == {
        "sha256": blob.sha256,
        "autov1": blob.autov1,
        "autov2": blob.autov2,
        "autov3": blob.autov3,
        "crc32": blob.crc32,
        "blake3": blob.blake3,
    }
    assert (file["detected_kind"], file["architecture"]) == ("lora", "sd1")
    assert (file["lora_rank"], file["lora_alpha"]) == (4, 4.0)
    assert file["download_url"].endswith(f"/api/v1/files/{file['id']}/download")
    assert body["download_url"].endswith(f"/api/download/models/{body['id']}")


def test_create_version_with_someone_elses_upload_is_404(bob, alice_api: APIClient, model) -> None:
    upload = complete_upload(user=bob)

    response = alice_api.post(
        f"/api/v1/models/{model.pk}/versions",
        {"name": "v1", "files": [{"upload_id": str(upload.pk)}]},
        format="json",
    )

    assert response.status_code == 404
    assert response.json()["code"] == "upload_not_found"
    assert not ModelVersion.objects.exists()


def test_create_version_on_someone_elses_model_is_403(bob, bob_api: APIClient, model) -> None:
    upload = complete_upload(user=bob)

    response = bob_api.post(
        f"/api/v1/models/{model.pk}/versions",
        {"name": "v1", "files": [{"upload_id": str(upload.pk)}]},
        format="json",
    )

    assert response.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "v1", "files": []}, "files"),
        ({"name": "v1"}, "files"),
        ({"name": "v1", "files": [{"upload_id": "not-a-uuid"}]}, "files"),
        ({"name": "v1", "files": [], "base_model": "sd9"}, "base_model"),
    ],
    ids=["empty-files", "no-files", "bad-upload-id", "bad-base-model"],
)
def test_create_version_with_bad_input_is_400(
    alice_api: APIClient, model, body: dict, field: str
) -> None:
    response = alice_api.post(f"/api/v1/models/{model.pk}/versions", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["details"]


def test_a_duplicate_version_name_is_409(alice, alice_api: APIClient, model) -> None:
    make_version(model=model, name="v1")
    upload = complete_upload(user=alice)

    response = alice_api.post(
        f"/api/v1/models/{model.pk}/versions",
        {"name": "v1", "files": [{"upload_id": str(upload.pk)}]},
        format="json",
    )

    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_version"


# --- lineage ---------------------------------------------------------------------------------


def test_lineage_is_shown_both_ways(alice, bob, alice_api: APIClient, bob_api: APIClient) -> None:
    # Given bob's public base model and alice's private dataset listing
    base = make_model(owner=bob, name="Base", kind="checkpoint")
    dataset_version = make_private_dataset(owner=alice)
    model = model_create(owner=alice, name="Child", kind="lora")
    upload = complete_upload(user=alice, data=lora_bytes(seed=5))

    # When alice creates an adapter trained on her dataset and publishes it
    created = alice_api.post(
        f"/api/v1/models/{model.pk}/versions",
        {
            "name": "v1",
            "files": [{"upload_id": str(upload.pk)}],
            "parents": [
                {"relation": "adapter", "version_id": base.pk},
                {"relation": "trained_on", "dataset_version_id": dataset_version.pk},
            ],
        },
        format="json",
    )
    child_id = created.json()["id"]
    alice_api.post(f"/api/v1/versions/{child_id}/publish")

    # Then the child names both parents and the base lists the child as a user of it
    parents = created.json()["parents"]
    assert [(p["relation"], p["version"] and p["version"]["id"]) for p in parents] == [
        ("adapter", base.pk),
        ("trained_on", None),
    ]
    assert parents[1]["dataset_version"]["id"] == dataset_version.pk
    children = bob_api.get(f"/api/v1/versions/{base.pk}").json()["children"]
    assert [(c["relation"], c["version"]["id"]) for c in children] == [("adapter", child_id)]


def test_a_draft_child_is_hidden_from_the_parents_other_viewers(alice, bob) -> None:
    base = make_model(owner=bob, name="Base", kind="checkpoint")
    model = model_create(owner=alice, name="Child", kind="lora")
    make_version(model=model, publish=False, parents=[ParentSpec("adapter", version=base)])

    children = APIClient().get(f"/api/v1/versions/{base.pk}").json()["children"]

    assert children == []


def test_a_parent_the_user_cannot_see_is_400(alice, bob, bob_api: APIClient) -> None:
    hidden = make_model(owner=alice, name="Hidden", visibility=Visibility.PRIVATE)
    model = model_create(owner=bob, name="Child", kind="lora")
    upload = complete_upload(user=bob)

    response = bob_api.post(
        f"/api/v1/models/{model.pk}/versions",
        {
            "name": "v1",
            "files": [{"upload_id": str(upload.pk)}],
            "parents": [{"relation": "adapter", "version_id": hidden.pk}],
        },
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "parent_not_found"
    assert not Lineage.objects.exists()


def test_a_parent_with_both_a_version_and_a_dataset_is_400(alice, alice_api, model) -> None:
    upload = complete_upload(user=alice)

    response = alice_api.post(
        f"/api/v1/models/{model.pk}/versions",
        {
            "name": "v1",
            "files": [{"upload_id": str(upload.pk)}],
            "parents": [{"relation": "adapter", "version_id": 1, "dataset_version_id": 1}],
        },
        format="json",
    )

    assert response.status_code == 400
    assert "parents" in response.json()["details"]


# --- publish, unpublish, visibility ----------------------------------------------------------


def test_publish_lists_the_model_and_unpublish_hides_the_version(
    alice_api: APIClient, model
) -> None:
    version = make_version(model=model, publish=False)
    anonymous = APIClient()
    assert anonymous.get(f"/api/v1/versions/{version.pk}").status_code == 404

    published = alice_api.post(f"/api/v1/versions/{version.pk}/publish")
    listed = [m["id"] for m in anonymous.get("/api/v1/models").json()["results"]]
    visible = anonymous.get(f"/api/v1/versions/{version.pk}").status_code
    unpublished = alice_api.post(f"/api/v1/versions/{version.pk}/unpublish")

    assert published.json()["status"] == "published"
    assert published.json()["published_at"] is not None
    assert listed == [model.pk]
    assert visible == 200
    assert unpublished.json()["status"] == "unpublished"
    assert anonymous.get(f"/api/v1/versions/{version.pk}").status_code == 404


def test_publish_by_someone_else_is_403_on_published_and_404_on_drafts(
    bob_api: APIClient, model
) -> None:
    published = make_version(model=model, name="v1")
    draft = make_version(model=model, name="v2", publish=False)

    assert bob_api.post(f"/api/v1/versions/{published.pk}/unpublish").status_code == 403
    assert bob_api.post(f"/api/v1/versions/{draft.pk}/publish").status_code == 404
    assert ModelVersion.objects.get(pk=draft.pk).status == "draft"


def test_publish_with_an_unknown_license_is_refused(alice_api: APIClient, model) -> None:
    version = make_version(model=model, publish=False, license_code="no-such-license")

    response = alice_api.post(f"/api/v1/versions/{version.pk}/publish")

    assert response.status_code == 400
    assert response.json()["code"] == "unknown_license"


def test_version_list_shows_drafts_only_to_the_owner(alice_api: APIClient, model) -> None:
    make_version(model=model, name="v1")
    make_version(model=model, name="v2", publish=False)
    url = f"/api/v1/models/{model.pk}/versions"

    assert [v["name"] for v in alice_api.get(url).json()] == ["v2", "v1"]
    assert [v["name"] for v in APIClient().get(url).json()] == ["v1"]
    assert APIClient().get(url).json()[0]["files"][0]["format"] == "safetensors"


# --- sample images ---------------------------------------------------------------------------


def _image_post(api: APIClient, version_id: int, data: bytes, name: str = "s.png", **fields):
    upload = io.BytesIO(data)
    upload.name = name
    return api.post(
        f"/api/v1/versions/{version_id}/images", {"image": upload, **fields}, format="multipart"
    )


def test_sample_image_is_stored_and_shown_on_the_version(alice_api: APIClient, model) -> None:
    version = make_version(model=model)

    response = _image_post(
        alice_api, version.pk, png_bytes(), prompt="an inked cat", parameters='{"steps": 20}'
    )

    assert response.status_code == 201, response.json()
    assert response.json()["prompt"] == "an inked cat"
    assert response.json()["parameters"] == {"steps": 20}
    assert response.json()["url"].endswith(".png")
    [image] = APIClient().get(f"/api/v1/versions/{version.pk}").json()["images"]
    assert image["id"] == response.json()["id"]
    listed = APIClient().get("/api/v1/models").json()["results"][0]
    assert listed["cover_image_url"] == image["url"]


def test_sample_image_takes_the_prompt_from_a1111_png_parameters(alice_api, model) -> None:
    version = make_version(model=model)
    data = png_bytes(parameters="a cat in ink\nSteps: 20, Sampler: Euler a")

    response = _image_post(alice_api, version.pk, data)

    assert response.json()["prompt"] == "a cat in ink"
    assert "Steps: 20" in response.json()["parameters"]["a1111"]


@pytest.mark.parametrize(
    ("data", "name", "code"),
    [
        (b"just some text, not pixels", "s.png", "bad_image"),
        (png_bytes()[:-30], "s.png", "bad_image"),
        (None, "s.gif", "unsupported_image"),
    ],
    ids=["text", "truncated-png", "gif"],
)
def test_a_bad_sample_image_is_400_and_not_stored(
    alice_api: APIClient, model, data: bytes | None, name: str, code: str
) -> None:
    version = make_version(model=model)
    if data is None:
        from PIL import Image

        out = io.BytesIO()
        Image.new("RGB", (4, 4)).save(out, format="GIF")
        data = out.getvalue()

    response = _image_post(alice_api, version.pk, data, name=name)

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert not SampleImage.objects.exists()


def test_a_sample_image_over_the_size_limit_is_413(alice_api, model, settings) -> None:
    settings.ATELIER_MAX_IMAGE_BYTES = 100
    version = make_version(model=model)

    response = _image_post(alice_api, version.pk, png_bytes(size=(64, 64), color="blue"))

    assert response.status_code == 413
    assert not SampleImage.objects.exists()


@pytest.mark.parametrize("parameters", ["[1, 2]", "{not json", '{"a": "\\u0000"}'])
def test_parameters_that_are_not_a_storable_object_are_400(
    alice_api: APIClient, model, parameters: str
) -> None:
    version = make_version(model=model)

    response = _image_post(alice_api, version.pk, png_bytes(), parameters=parameters)

    assert response.status_code == 400
    assert "parameters" in response.json()["details"]


def test_only_the_owner_adds_sample_images(bob_api: APIClient, model) -> None:
    version = make_version(model=model)

    response = _image_post(bob_api, version.pk, png_bytes())

    assert response.status_code == 403
    assert not SampleImage.objects.exists()


# --- files: lookup by hash and download ------------------------------------------------------


@pytest.mark.parametrize("hash_type", ["sha256", "autov2", "autov3", "crc32", "blake3"])
def test_lookup_by_any_hash_in_any_case_finds_the_file(model, hash_type: str) -> None:
    version = make_version(model=model)
    blob = version.files.get().blob
    value = getattr(blob, hash_type).upper()

    response = APIClient().get(f"/api/v1/files/by-hash/{value}")

    assert response.status_code == 200, response.json()
    [match] = response.json()["files"]
    assert match["sha256"] == blob.sha256
    assert match["version"]["id"] == version.pk
    assert match["version"]["model"]["owner"]["username"] == "alice"


def test_lookup_hides_files_of_private_models(alice) -> None:
    version = make_model(owner=alice, name="Secret", visibility=Visibility.PRIVATE)
    sha = version.files.get().blob_id

    response = APIClient().get(f"/api/v1/files/by-hash/{sha}")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("value", ["xyz12345", "abc", "g" * 64])
def test_lookup_of_something_that_is_not_a_hash_is_400(db, value: str) -> None:
    response = APIClient().get(f"/api/v1/files/by-hash/{value}")

    assert response.status_code == 400
    assert response.json()["code"] == "bad_hash"


def test_file_download_redirects_to_a_signed_url_and_counts(model) -> None:
    version = make_version(model=model)
    model_file = version.files.get()

    response = APIClient().get(f"/api/v1/files/{model_file.pk}/download")
    served = APIClient().get(response["Location"])

    assert response.status_code == 302
    assert f"/files/{model_file.blob_id}/" in response["Location"]
    assert b"".join(served.streaming_content) == lora_bytes()
    assert ModelVersion.objects.get(pk=version.pk).download_count == 1


def test_file_download_of_a_draft_is_404_for_others(model) -> None:
    version = make_version(model=model, publish=False)

    response = APIClient().get(f"/api/v1/files/{version.files.get().pk}/download")

    assert response.status_code == 404
