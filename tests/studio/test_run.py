"""The worker's side, run in this process: the PNG and its parameters, failures with their
reason, access checked again, and attaching an image as a sample of a version."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image
from rest_framework.test import APIClient

from registry.models import SampleImage
from registry.services.catalog import version_unpublish
from sdcore.generate import parse_a1111_parameters
from studio.models import Generation, GenerationStatus
from studio.services.generations import ResourceInput, generation_create, generation_run

pytestmark = pytest.mark.django_db


def _make(studio: Any, **extra: Any) -> Generation:
    values: dict[str, Any] = {
        "user": studio.artist,
        "base_version_id": studio.base.pk,
        "prompt": "a castle, easyneg",
        "seed": 11,
        "steps": 2,
        "width": 32,
        "height": 32,
        **extra,
    }
    return generation_create(**values)


def test_a_run_writes_a_png_with_the_a1111_parameters(studio, client_for) -> None:
    # Given a generation with the creator's LoRA and embedding
    generation = _make(
        studio,
        loras=[ResourceInput(studio.lora.pk, 0.6)],
        embeddings=[ResourceInput(studio.embedding.pk)],
    )

    # When the worker's service runs it
    done = generation_run(generation_id=generation.pk)

    # Then it succeeded, with every step counted
    assert done.status == GenerationStatus.SUCCEEDED, done.error
    assert (done.progress_step, done.device) == (2, "cpu")
    assert done.started_at is not None and done.finished_at >= done.started_at
    # and the PNG served to its owner holds the parameters, with the registry's hashes
    response = client_for(studio.artist).get(f"/api/v1/generations/{done.pk}/image")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(b"".join(response.streaming_content)))
    assert image.size == (32, 32)
    text = image.text["parameters"]  # type: ignore[attr-defined]  # PngImageFile
    assert text == done.parameters
    fields = parse_a1111_parameters(text)
    base_blob = studio.base.files.get().blob
    lora_blob = studio.lora.files.get().blob
    embedding_blob = studio.embedding.files.get().blob
    assert fields["Prompt"] == "a castle, easyneg <lora:castles:0.6>"
    assert (fields["Seed"], fields["Steps"], fields["Size"]) == ("11", "2", "32x32")
    assert fields["Model hash"] == base_blob.autov2 and fields["Model"] == "tiny-sd1"
    assert fields["Lora hashes"] == f"castles: {lora_blob.autov3[:12]}"
    assert fields["TI hashes"] == f"easyneg: {embedding_blob.sha256[:12]}"
    # and running it again (a redelivered task) changes nothing
    assert generation_run(generation_id=done.pk).image.name == done.image.name


def test_the_same_request_twice_makes_the_same_image(studio) -> None:
    first = generation_run(generation_id=_make(studio).pk)
    second = generation_run(generation_id=_make(studio).pk)
    with first.image.open("rb") as a, second.image.open("rb") as b:
        assert Image.open(a).tobytes() == Image.open(b).tobytes()


def test_a_diffusers_folder_checkpoint_runs_too(studio, make_user, tiny_model_dir) -> None:
    from tests.registry.compat_fixtures import _tiny_paths, publish_tiny_as

    published = publish_tiny_as(make_user("folks"), _tiny_paths(tiny_model_dir))
    generation = _make(studio, base_version_id=published.diffusers.pk)
    done = generation_run(generation_id=generation.pk)
    assert done.status == GenerationStatus.SUCCEEDED, done.error
    assert "Model: tiny-sd-15" in done.parameters and "Model hash" not in done.parameters


def test_a_lora_that_does_not_fit_fails_with_the_reason(
    studio, publish_file, resource_files
) -> None:
    # Given a LoRA that says SD 1.x but whose tensors fit another model
    misfit = publish_file(studio.creator, resource_files["misfit_lora"], kind="lora")
    generation = _make(studio, loras=[ResourceInput(misfit.pk)])
    # When it runs
    done = generation_run(generation_id=generation.pk)
    # Then it failed, saying which LoRA and why; no image was written
    assert done.status == GenerationStatus.FAILED
    assert done.error_code == "lora_mismatch"
    assert done.error.startswith("LoRA misfit does not fit this checkpoint")
    assert not done.image and done.finished_at is not None


def test_access_is_checked_again_when_the_generation_runs(studio) -> None:
    generation = _make(studio, loras=[ResourceInput(studio.lora.pk)])
    version_unpublish(version=studio.lora, user=studio.creator)
    done = generation_run(generation_id=generation.pk)
    assert (done.status, done.error_code) == (GenerationStatus.FAILED, "version_not_found")
    pk = studio.lora.pk
    assert done.error == f"Castles v1: no model version {pk}, or it is not visible to you."


def test_the_owner_of_a_version_attaches_a_generation_as_its_sample(
    studio, client_for, publish_file, resource_files
) -> None:
    # Given the creator's image made with the creator's own LoRA
    generation = _make(studio, user=studio.creator, loras=[ResourceInput(studio.lora.pk)])
    generation_run(generation_id=generation.pk)
    client = client_for(studio.creator)
    url = f"/api/v1/generations/{generation.pk}/samples"

    # When the creator attaches it to the LoRA's version
    response = client.post(url, {"version_id": studio.lora.pk}, format="json")

    # Then the version has it as a sample image, with the prompt and the A1111 parameters
    assert response.status_code == 201, response.content
    sample = SampleImage.objects.get(version=studio.lora)
    assert sample.prompt == "a castle, easyneg"
    assert sample.parameters["generation_id"] == generation.pk
    assert sample.parameters["a1111"].startswith("a castle, easyneg <lora:castles:1>")
    assert APIClient().get(f"/api/v1/versions/{studio.lora.pk}").json()["images"][0]["id"] == (
        sample.pk
    )
    # and attaching it again is a conflict
    again = client.post(url, {"version_id": studio.lora.pk}, format="json")
    assert again.status_code == 409


def test_only_an_owner_of_a_version_that_made_the_image_may_attach_it(
    studio, client_for, publish_file, resource_files
) -> None:
    # Given the artist's image made with the creator's LoRA
    generation = _make(studio, loras=[ResourceInput(studio.lora.pk)])
    generation_run(generation_id=generation.pk)
    mine = publish_file(studio.artist, resource_files["other_lora"], kind="lora")
    url = f"/api/v1/generations/{generation.pk}/samples"
    client = client_for(studio.artist)
    # Then the artist may not attach it to the creator's LoRA (not theirs)
    refused = client.post(url, {"version_id": studio.lora.pk}, format="json")
    assert refused.status_code == 403
    # nor to their own LoRA, which did not make it
    unused = client.post(url, {"version_id": mine.pk}, format="json")
    assert unused.status_code == 400
    assert unused.json()["details"]["field"] == "version_id"
    # and the creator may not attach the artist's image
    theirs = client_for(studio.creator).post(url, {"version_id": studio.lora.pk}, format="json")
    assert theirs.status_code == 404
    assert not SampleImage.objects.exists()
