"""Pickle checkpoints become safetensors in a real Celery worker, never in the web process."""

from __future__ import annotations

import io
import time

import pytest
import torch
from rest_framework.test import APIClient
from safetensors.torch import load

from registry.models import FileFormat, ModelFile
from registry.services.blobs import blob_open
from registry.services.catalog import FileSpec, model_create, version_create
from registry.services.uploads import upload_whole_file
from tests.registry.factories import complete_upload


def _ckpt_bytes() -> tuple[bytes, dict[str, torch.Tensor]]:
    tensors = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.arange(12.0).reshape(3, 4),
        "first_stage_model.decoder.conv_in.bias": torch.ones(5, dtype=torch.float16),
    }
    buffer = io.BytesIO()
    torch.save({"state_dict": tensors, "global_step": 7}, buffer)
    return buffer.getvalue(), tensors


def _pickle_version(user):  # type: ignore[no-untyped-def]
    data, tensors = _ckpt_bytes()
    upload = upload_whole_file(
        user=user, filename="old.ckpt", stream=io.BytesIO(data), size=len(data)
    )
    model = model_create(owner=user, name="Old checkpoint", kind="checkpoint")
    version = version_create(model=model, user=user, name="v1", files=[FileSpec(upload)])
    return version.files.get(), tensors


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.mark.slow
def test_a_pickle_checkpoint_is_converted_by_the_worker_into_a_safetensors_file_beside_it(
    celery_worker_process, make_user, token_for
) -> None:
    # Given a version whose only file is a (safe) pickle checkpoint
    alice = make_user("alice")
    pickle_file, tensors = _pickle_version(alice)
    assert pickle_file.format == FileFormat.PICKLE

    # When its owner asks for the conversion
    response = _client(token_for(alice)).post(f"/api/v1/files/{pickle_file.pk}/conversion")

    # Then it is queued, and the worker adds a safetensors file holding the same tensors
    assert response.status_code == 202, response.content
    assert response.json()["conversion_status"] == "queued"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        pickle_file.refresh_from_db()
        if pickle_file.conversion_status in ("done", "failed"):
            break
        time.sleep(0.5)
    assert pickle_file.conversion_status == "done", pickle_file.conversion_error
    converted = ModelFile.objects.get(converted_from=pickle_file)
    assert converted.path == "old.safetensors"
    assert converted.format == FileFormat.SAFETENSORS
    with blob_open(converted.blob) as fh:
        loaded = load(fh.read())
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)


@pytest.mark.django_db
def test_converting_a_file_that_is_not_a_pickle_is_refused(make_user, token_for) -> None:
    alice = make_user("alice")
    upload = complete_upload(user=alice)
    model = model_create(owner=alice, name="A LoRA", kind="lora")
    version = version_create(model=model, user=alice, name="v1", files=[FileSpec(upload)])

    response = _client(token_for(alice)).post(f"/api/v1/files/{version.files.get().pk}/conversion")

    assert response.status_code == 400
    assert response.json()["code"] == "not_a_pickle"


@pytest.mark.django_db
def test_only_the_owner_may_convert_and_a_second_request_conflicts(
    make_user, token_for, django_capture_on_commit_callbacks
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    pickle_file, _ = _pickle_version(alice)
    from registry.services.catalog import version_publish

    version_publish(version=pickle_file.version, user=alice)

    refused = _client(token_for(bob)).post(f"/api/v1/files/{pickle_file.pk}/conversion")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = _client(token_for(alice)).post(f"/api/v1/files/{pickle_file.pk}/conversion")
    second = _client(token_for(alice)).post(f"/api/v1/files/{pickle_file.pk}/conversion")

    assert refused.status_code == 403
    assert first.status_code == 202
    assert len(callbacks) == 1  # the task is enqueued once, after the commit
    assert second.status_code == 409
    assert second.json()["code"] == "conversion_exists"


@pytest.mark.django_db
def test_the_owner_queues_a_conversion_from_the_model_page(
    client, make_user, django_capture_on_commit_callbacks
) -> None:
    # Given the owner of a version with a pickle file, logged in
    alice = make_user("alice")
    pickle_file, _ = _pickle_version(alice)
    client.force_login(alice)
    page = pickle_file.version.model
    detail = client.get(f"/models/{page.pk}/{page.slug}/?version={pickle_file.version_id}")
    assert b"Convert to safetensors" in detail.content

    # When they press the button
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(f"/files/{pickle_file.pk}/convert/")

    # Then the conversion is queued once and the page says so
    assert response.status_code == 302
    assert len(callbacks) == 1
    pickle_file.refresh_from_db()
    assert pickle_file.conversion_status == "queued"
    assert b"Conversion to safetensors queued" in client.get(response["Location"]).content


@pytest.mark.django_db
def test_a_conversion_asked_for_while_the_broker_is_down_is_failed_and_can_be_asked_again(
    make_user, token_for, broker_down, django_capture_on_commit_callbacks
) -> None:
    # Given the owner of a pickle file, and a broker that is down
    alice = make_user("alice")
    pickle_file, _ = _pickle_version(alice)

    # When they ask for the conversion and the request's transaction commits
    with django_capture_on_commit_callbacks(execute=True):
        response = _client(token_for(alice)).post(f"/api/v1/files/{pickle_file.pk}/conversion")

    # Then the request is answered (not a 500) and the file says why it is not queued
    assert response.status_code == 202, response.content
    pickle_file.refresh_from_db()
    assert pickle_file.conversion_status == "failed"
    assert "could not be queued" in pickle_file.conversion_error

    # And once it is failed, the owner may ask again (no "already queued" conflict)
    with django_capture_on_commit_callbacks(execute=False):
        again = _client(token_for(alice)).post(f"/api/v1/files/{pickle_file.pk}/conversion")
    assert again.status_code == 202, again.content
