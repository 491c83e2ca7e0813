"""The upload page: without JavaScript (multipart), and with an upload id from the upload API."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from registry.models import Blob, Model, ModelFile, ModelVersion, Upload, VersionStatus
from tests.registry.factories import lora_bytes
from tests.support import text_of

pytestmark = pytest.mark.django_db

UPLOAD_URL = "/upload/"


@pytest.fixture(autouse=True)
def _fast_passwords(fast_passwords: None) -> None:
    """Every test here: the suite's fast password hasher."""


@pytest.fixture
def alice_client(client: Client, alice: object) -> Client:
    client.force_login(alice)  # type: ignore[arg-type]
    return client


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("echo pwned",))


def form_data(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "Ink wash",
        "kind": "lora",
        "description": "Brush *strokes*.",
        "tags": "ink, style",
        "visibility": "public",
        "version_name": "v1",
        "trigger_words": "inkwash, sumi-e",
    }
    data.update(overrides)
    return data


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_upload_page_requires_login(client: Client) -> None:
    response = client.get(UPLOAD_URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_upload_page_loads_the_chunked_uploader(alice_client: Client) -> None:
    html = alice_client.get(UPLOAD_URL).content.decode()
    assert 'src="/static/upload.js"' in html
    assert 'data-uploads-url="/api/v1/uploads"' in html
    assert 'enctype="multipart/form-data"' in html
    assert '<input type="file" name="file"' in html


def test_upload_without_javascript_creates_the_model_and_a_draft_version(
    alice_client: Client, alice: object
) -> None:
    # given a small LoRA posted in the form itself
    data = lora_bytes(seed=11)
    upload = SimpleUploadedFile("ink-wash.safetensors", data)
    # when the form is submitted
    response = alice_client.post(UPLOAD_URL, form_data(file=upload))
    # then the model and its draft version exist and the browser goes to the model page
    model = Model.objects.get(owner=alice, name="Ink wash")
    version = ModelVersion.objects.get(model=model)
    assert response.status_code == 302
    assert response["Location"] == f"/models/{model.pk}/{model.slug}/?version={version.pk}"
    assert version.status == VersionStatus.DRAFT
    assert version.trigger_words == ["inkwash", "sumi-e"]
    assert sorted(model.tags.values_list("name", flat=True)) == ["ink", "style"]
    model_file = ModelFile.objects.get(version=version)
    assert model_file.path == "ink-wash.safetensors"
    assert model_file.blob.size == len(data)
    assert model_file.lora_rank == 4


def test_refused_pickle_shows_the_error_next_to_the_file_and_stores_nothing(
    alice_client: Client,
    settings,  # type: ignore[no-untyped-def]
) -> None:
    # given a pickle that would run a shell command when loaded
    evil = SimpleUploadedFile("evil.ckpt", pickle.dumps(_Evil(), protocol=2))
    # when it is posted
    response = alice_client.post(UPLOAD_URL, form_data(file=evil))
    # then the page says why, next to the file field, and nothing is stored
    html = response.content.decode()
    assert response.status_code == 400
    assert "system" in text_of(html, "file-errors")
    assert text_of(html, "name-errors") == ""
    assert not Model.objects.exists()
    assert not Blob.objects.exists()
    assert stored_files(Path(settings.MEDIA_ROOT)) == []
    assert stored_files(Path(settings.BLOB_ROOT)) == []
    assert stored_files(Path(settings.UPLOAD_TEMP_DIR)) == []


def test_unsupported_file_type_shows_the_error_next_to_the_file(alice_client: Client) -> None:
    response = alice_client.post(
        UPLOAD_URL, form_data(file=SimpleUploadedFile("tool.exe", b"MZ\x90\x00" * 10))
    )
    assert response.status_code == 400
    assert "Unsupported file type" in text_of(response.content.decode(), "file-errors")
    assert not Model.objects.exists()


def test_missing_file_shows_the_error_next_to_the_file(alice_client: Client) -> None:
    response = alice_client.post(UPLOAD_URL, form_data())
    assert response.status_code == 400
    assert "Choose a file" in text_of(response.content.decode(), "file-errors")


def test_missing_name_shows_the_error_next_to_the_name(alice_client: Client) -> None:
    upload = SimpleUploadedFile("a.safetensors", lora_bytes(seed=1))
    response = alice_client.post(UPLOAD_URL, form_data(name="", file=upload))
    html = response.content.decode()
    assert response.status_code == 400
    assert "required" in text_of(html, "name-errors")
    assert not Model.objects.exists()


def test_bad_kind_shows_the_error_next_to_the_kind(alice_client: Client) -> None:
    upload = SimpleUploadedFile("a.safetensors", lora_bytes(seed=1))
    response = alice_client.post(UPLOAD_URL, form_data(kind="spaceship", file=upload))
    assert response.status_code == 400
    assert "valid choice" in text_of(response.content.decode(), "kind-errors")


def _api_upload(client: Client, data: bytes, filename: str) -> str:
    """What upload.js does: create, append in two chunks, complete (session auth)."""
    created = client.post(
        "/api/v1/uploads",
        {"filename": filename, "size": len(data)},
        content_type="application/json",
    ).json()
    half = len(data) // 2
    for offset, chunk in ((0, data[:half]), (half, data[half:])):
        response = client.patch(
            f"/api/v1/uploads/{created['id']}",
            chunk,
            content_type="application/offset+octet-stream",
            headers={"Upload-Offset": str(offset)},
        )
        assert response.status_code == 200, response.content
    assert client.post(f"/api/v1/uploads/{created['id']}/complete").status_code == 200
    return str(created["id"])


def test_upload_with_an_upload_id_from_the_api_creates_the_model(
    alice_client: Client, alice: object
) -> None:
    # given a file already sent through the resumable upload API
    data = lora_bytes(seed=12)
    upload_id = _api_upload(alice_client, data, "chunked.safetensors")
    # when the form is submitted with its id and no file
    response = alice_client.post(UPLOAD_URL, form_data(upload_id=upload_id, name="Chunked"))
    # then the version holds that upload's blob
    version = ModelVersion.objects.get(model__name="Chunked")
    assert response.status_code == 302
    assert (
        ModelFile.objects.get(version=version).blob_id == Upload.objects.get(pk=upload_id).blob_id
    )


def test_upload_id_of_someone_else_is_refused_next_to_the_file(
    client: Client, alice: object, make_user: Callable[..., object]
) -> None:
    client.force_login(alice)  # type: ignore[arg-type]
    upload_id = _api_upload(client, lora_bytes(seed=13), "theirs.safetensors")
    client.force_login(make_user("mallory"))  # type: ignore[arg-type]
    response = client.post(UPLOAD_URL, form_data(upload_id=upload_id))
    assert response.status_code == 400
    assert "not found" in text_of(response.content.decode(), "file-errors")
    assert not Model.objects.exists()


def test_incomplete_upload_id_is_refused_next_to_the_file(alice_client: Client) -> None:
    created = alice_client.post(
        "/api/v1/uploads",
        {"filename": "x.safetensors", "size": 100},
        content_type="application/json",
    ).json()
    response = alice_client.post(UPLOAD_URL, form_data(upload_id=created["id"]))
    assert response.status_code == 400
    assert "not complete" in text_of(response.content.decode(), "file-errors")


def test_duplicate_tags_and_words_are_collapsed(alice_client: Client) -> None:
    upload = SimpleUploadedFile("a.safetensors", lora_bytes(seed=14))
    alice_client.post(
        UPLOAD_URL, form_data(file=upload, tags="a, b, a,, ", trigger_words="w1\nw2, w1")
    )
    version = ModelVersion.objects.get()
    assert sorted(version.model.tags.values_list("name", flat=True)) == ["a", "b"]
    assert version.trigger_words == ["w1", "w2"]
