"""SDXL in the studio: an SDXL checkpoint (detected from its file) with SDXL LoRAs in kohya
and diffusers format and an SDXL embedding, through the API and the worker's service; SD 1.x
files beside an SDXL checkpoint are refused before anything is queued."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from registry.models import ModelFile
from sdcore.generate import parse_a1111_parameters
from studio.models import Generation, GenerationStatus
from studio.services.generations import ResourceInput, generation_create, generation_run
from tests.studio.tiny_xl_files import (
    write_xl_diffusers_lora,
    write_xl_embedding,
    write_xl_kohya_lora,
)

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations"


@pytest.fixture(scope="session")
def xl_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sdcore.tiny_xl import save_tiny_sdxl_model

    out = tmp_path_factory.mktemp("studio-xl")
    paths = save_tiny_sdxl_model(out / "model", seed=0)
    return {
        "checkpoint": paths.single_file,
        "kohya": write_xl_kohya_lora(out / "xl-glow.safetensors", seed=3, text_encoders=True),
        "diffusers": write_xl_diffusers_lora(out / "xl-diffusers", seed=4),
        "embedding": write_xl_embedding(out / "xlneg.safetensors"),
    }


@pytest.fixture
def xl(studio: Any, publish_file: Any, xl_files: dict[str, Path]) -> dict[str, Any]:
    """The creator publishes the SDXL checkpoint, LoRAs and embedding; the family comes from
    each file (base_model left empty)."""
    creator = studio.creator
    return {
        "base": publish_file(
            creator, xl_files["checkpoint"], kind="checkpoint", base_model="", name="Tiny XL"
        ),
        "kohya": publish_file(creator, xl_files["kohya"], kind="lora", base_model="", name="Glow"),
        "diffusers": publish_file(
            creator,
            xl_files["diffusers"],
            kind="lora",
            base_model="",
            name="Glow diffusers",
        ),
        "embedding": publish_file(
            creator,
            xl_files["embedding"],
            kind="embedding",
            base_model="",
            name="XL negative",
            trigger_words=("xlneg",),
        ),
    }


def _body(base: Any, **extra: Any) -> dict[str, Any]:
    return {
        "base_version_id": base.pk,
        "prompt": "a glowing castle",
        "seed": 9,
        "steps": 2,
        "width": 64,
        "height": 64,
        **extra,
    }


def test_sdxl_files_are_detected_as_sdxl(xl: dict[str, Any]) -> None:
    assert {key: version.base_model for key, version in xl.items()} == dict.fromkeys(xl, "sdxl")


def test_an_sdxl_request_with_loras_and_an_embedding_is_queued(
    studio: Any, xl: dict[str, Any], client_for: Any
) -> None:
    response = client_for(studio.artist).post(
        URL,
        _body(
            xl["base"],
            negative_prompt="xlneg",
            loras=[
                {"version_id": xl["kohya"].pk, "weight": 0.8},
                {"version_id": xl["diffusers"].pk, "weight": 0.5},
            ],
            embeddings=[{"version_id": xl["embedding"].pk}],
        ),
        format="json",
    )
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"


@pytest.mark.parametrize("kind", ["loras", "embeddings"])
def test_sd1_files_with_an_sdxl_checkpoint_are_400_before_queueing(
    studio: Any, xl: dict[str, Any], client_for: Any, kind: str
) -> None:
    resource = studio.lora if kind == "loras" else studio.embedding
    response = client_for(studio.artist).post(
        URL, _body(xl["base"], **{kind: [{"version_id": resource.pk}]}), format="json"
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert (body["code"], body["details"]["field"]) == (
        "architecture_mismatch",
        f"{kind}[0].version_id",
    )
    assert "is for SD 1.x but the checkpoint is SDXL" in body["message"]
    assert not Generation.objects.exists()


def test_an_sdxl_lora_with_an_sd1_checkpoint_is_400(
    studio: Any, xl: dict[str, Any], client_for: Any
) -> None:
    response = client_for(studio.artist).post(
        URL,
        {
            "base_version_id": studio.base.pk,
            "prompt": "x",
            "steps": 2,
            "width": 32,
            "height": 32,
            "loras": [{"version_id": xl["kohya"].pk}],
        },
        format="json",
    )
    assert response.status_code == 400
    assert "is for SDXL but the checkpoint is SD 1.x" in response.json()["message"]


def test_the_worker_makes_an_sdxl_png_with_the_a1111_parameters(
    studio: Any, xl: dict[str, Any], client_for: Any
) -> None:
    # Given an SDXL generation with a kohya LoRA (both text encoders) and the embedding
    generation = generation_create(
        user=studio.artist,
        base_version_id=xl["base"].pk,
        prompt="a glowing castle",
        negative_prompt="xlneg",
        seed=9,
        steps=2,
        width=64,
        height=64,
        loras=[ResourceInput(xl["kohya"].pk, 0.7)],
        embeddings=[ResourceInput(xl["embedding"].pk)],
    )
    # When the worker's service runs it
    done = generation_run(generation_id=generation.pk)
    # Then the PNG holds the A1111 parameters with the registry's hashes
    assert done.status == GenerationStatus.SUCCEEDED, done.error
    response = client_for(studio.artist).get(f"/api/v1/generations/{done.pk}/image")
    image = Image.open(io.BytesIO(b"".join(response.streaming_content)))
    assert image.size == (64, 64)
    fields = parse_a1111_parameters(image.text["parameters"])  # type: ignore[attr-defined]
    base_blob = ModelFile.objects.get(version=xl["base"]).blob
    lora_blob = ModelFile.objects.get(version=xl["kohya"]).blob
    assert fields["Prompt"] == "a glowing castle <lora:xl-glow:0.7>"
    assert fields["Negative prompt"] == "xlneg"
    assert (fields["Model"], fields["Model hash"]) == ("tiny-sdxl", base_blob.autov2)
    assert fields["Lora hashes"] == f"xl-glow: {lora_blob.autov3[:12]}"
    assert fields["Size"] == "64x64"

    # and the LoRA changes the image: without it, the same seed gives another picture
    plain = generation_run(
        generation_id=generation_create(
            user=studio.artist,
            base_version_id=xl["base"].pk,
            prompt="a glowing castle",
            negative_prompt="xlneg",
            seed=9,
            steps=2,
            width=64,
            height=64,
            embeddings=[ResourceInput(xl["embedding"].pk)],
        ).pk
    )
    with done.image.open("rb") as a, plain.image.open("rb") as b:
        assert Image.open(a).tobytes() != Image.open(b).tobytes()


def test_the_diffusers_format_lora_runs_on_the_sdxl_checkpoint(
    studio: Any, xl: dict[str, Any]
) -> None:
    generation = generation_create(
        user=studio.artist,
        base_version_id=xl["base"].pk,
        prompt="a glowing castle",
        seed=1,
        steps=1,
        width=64,
        height=64,
        loras=[ResourceInput(xl["diffusers"].pk)],
    )
    done = generation_run(generation_id=generation.pk)
    assert done.status == GenerationStatus.SUCCEEDED, done.error
    assert "<lora:pytorch_lora_weights:1>" in done.parameters


def test_the_studio_page_offers_the_sdxl_checkpoint_and_refuses_an_sd1_lora_beside_it(
    studio: Any, xl: dict[str, Any]
) -> None:
    from django.test import Client

    client = Client()
    client.force_login(studio.artist)
    page = client.get("/studio/").content.decode()
    base_option = re.search(rf'<option value="{xl["base"].pk}"[^>]*>', page)
    assert base_option and 'data-family="sdxl"' in base_option[0]
    assert 'data-width="64"' in base_option[0]  # its native size, from modelspec.resolution
    assert f'<option value="{xl["kohya"].pk}" data-family="sdxl">' in page
    form = {
        "base_version": xl["base"].pk,
        "prompt": "a glowing castle",
        "negative_prompt": "",
        "seed": 3,
        "steps": 2,
        "guidance": 7,
        "width": 64,
        "height": 64,
        "sampler": "Euler",
        "lora_1": studio.lora.pk,
        "lora_1_weight": 1,
    }
    for slot in (2, 3):
        form |= {f"lora_{slot}": "", f"lora_{slot}_weight": 1}
    for slot in (1, 2):
        form |= {f"embedding_{slot}": "", f"embedding_{slot}_weight": 1}
    response = client.post("/studio/", form)
    assert response.status_code == 400
    assert "is for SD 1.x but the checkpoint is SDXL" in response.content.decode()
    assert not Generation.objects.exists()
