"""Base-model names as Civitai writes them (SD 1.5, SDXL 1.0, Pony, Illustrious, NoobAI...):
detected from files' metadata and names, settable by the creator, shown on pages and given and
filtered by the Civitai-compatible routes; the family still decides compatibility."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch

from marketplace.templatetags.labels import base_model_label
from registry.models import ModelVersion
from sdcore.detect import civitai_base_model
from sdcore.loading import write_safetensors


@pytest.mark.parametrize(
    ("family", "metadata", "names", "expected"),
    [
        ("sdxl", {}, (), "SDXL 1.0"),
        ("sdxl", {"ss_sd_model_name": "ponyDiffusionV6XL_v6.safetensors"}, (), "Pony"),
        ("sdxl", {"modelspec.title": "Illustrious XL v1.0"}, (), "Illustrious"),
        ("sdxl", {}, ("NoobAI-XL illustrious based",), "NoobAI"),
        ("sdxl", {"ss_base_model_version": "sdxl_base_v1-0"}, ("my lora",), "SDXL 1.0"),
        ("sd1", {"ss_base_model_version": "sd_v1"}, (), "SD 1.5"),
        ("sd1", {}, ("pony style",), "SD 1.5"),  # never another family's name
        ("sd2", {}, (), "SD 2.1"),
        ("flux", {"modelspec.title": "FLUX.1 schnell"}, (), "Flux.1 S"),
        ("unknown", {}, (), "Other"),
        ("nonsense", {}, (), "Other"),
    ],
)
def test_names_come_from_metadata_and_names_within_the_family(
    family: str, metadata: dict[str, str], names: tuple[str, ...], expected: str
) -> None:
    assert civitai_base_model(family, metadata, names) == expected


def test_the_page_label_says_the_descendant_else_the_family() -> None:
    def version(family: str, name: str) -> ModelVersion:
        return ModelVersion(base_model=family, base_model_name=name)

    assert base_model_label(version("sdxl", "Pony")) == "Pony"
    assert base_model_label(version("sdxl", "SDXL 1.0")) == "SDXL"
    assert base_model_label(version("sdxl", "")) == "SDXL"
    assert base_model_label(version("sd1", "SDXL 1.0")) == "SD 1.x"  # stale: family wins
    assert base_model_label(version("sdxl", "Animagine")) == "Animagine"  # the creator's
    assert base_model_label("sdxl") == "SDXL"  # a family code still works


def _lora_file(path: Path, metadata: dict[str, str]) -> Path:
    name = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
    tensors = {
        f"{name}.lora_down.weight": torch.zeros(4, 64),
        f"{name}.lora_up.weight": torch.zeros(64, 4),
        f"{name}.alpha": torch.tensor(4.0),
    }
    return write_safetensors(path, tensors, metadata)


def _publish(owner: Any, path: Path, name: str, **extra: Any) -> ModelVersion:
    from registry.services.catalog import FileSpec, model_create, version_create, version_publish
    from registry.services.uploads import upload_whole_file

    data = path.read_bytes()
    upload = upload_whole_file(
        user=owner, filename=path.name, stream=io.BytesIO(data), size=len(data)
    )
    model = model_create(owner=owner, name=name, kind="lora")
    version = version_create(model=model, user=owner, name="v1", files=[FileSpec(upload)], **extra)
    return version_publish(version=version, user=owner)


@pytest.mark.django_db
def test_detected_and_creator_set_names_show_on_pages_and_civitai_routes(
    make_user: Any, client: Any, tmp_path: Path, settings: Any
) -> None:
    settings.ATELIER_SAMPLE_MAX_STEPS = 0
    owner = make_user("maker")
    # Given an SDXL LoRA trained on Pony (kohya's metadata says so), one whose creator says
    # Illustrious, and a plain SDXL one
    pony = _publish(
        owner,
        _lora_file(tmp_path / "pony.safetensors", {"ss_sd_model_name": "ponyDiffusionV6XL"}),
        "Pony glow",
    )
    illustrious = _publish(
        owner,
        _lora_file(tmp_path / "ill.safetensors", {}),
        "Ill glow",
        base_model_name="Illustrious",
    )
    plain = _publish(owner, _lora_file(tmp_path / "plain.safetensors", {}), "Plain glow")
    # Then the family is SDXL for all three, and the names are as said
    assert [v.base_model for v in (pony, illustrious, plain)] == ["sdxl"] * 3
    assert [v.base_model_name for v in (pony, illustrious, plain)] == [
        "Pony",
        "Illustrious",
        "SDXL 1.0",
    ]
    # and the model page shows the name
    page = client.get(f"/models/{pony.model.pk}/{pony.model.slug}/").content.decode()
    assert '<dd class="base-model">Pony</dd>' in page
    # and Civitai's routes give it and filter by it
    body = client.get(f"/civitai/api/v1/model-versions/{pony.pk}").json()
    assert body["baseModel"] == "Pony"

    def listed(**params: str) -> list[str]:
        response = client.get("/civitai/api/v1/models", params)
        assert response.status_code == 200, response.content
        return sorted(item["name"] for item in response.json()["items"])

    assert listed(baseModels="Pony") == ["Pony glow"]
    assert listed(baseModels="illustrious") == ["Ill glow"]
    assert listed(baseModels="SDXL 1.0") == ["Ill glow", "Plain glow", "Pony glow"]
    assert listed(baseModels="NoobAI") == []
    assert listed(baseModels="Pony,SD 1.5") == ["Pony glow"]


@pytest.mark.django_db
def test_the_creator_sets_the_name_through_the_api(
    make_user: Any, token_for: Any, tmp_path: Path, settings: Any
) -> None:
    from rest_framework.test import APIClient

    from registry.services.catalog import model_create
    from registry.services.uploads import upload_whole_file

    settings.ATELIER_SAMPLE_MAX_STEPS = 0
    owner = make_user("namer")
    path = _lora_file(tmp_path / "n.safetensors", {})
    data = path.read_bytes()
    upload = upload_whole_file(
        user=owner, filename=path.name, stream=io.BytesIO(data), size=len(data)
    )
    model = model_create(owner=owner, name="Named", kind="lora")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(owner)}")
    url = f"/api/v1/models/{model.pk}/versions"
    too_long = client.post(
        url,
        {"name": "v0", "files": [{"upload_id": str(upload.pk)}], "base_model_name": "x" * 41},
        format="json",
    )
    assert too_long.status_code == 400
    response = client.post(
        url,
        {"name": "v1", "files": [{"upload_id": str(upload.pk)}], "base_model_name": "NoobAI"},
        format="json",
    )
    assert response.status_code == 201, response.content
    version = ModelVersion.objects.get(pk=response.json()["id"])
    assert (version.base_model, version.base_model_name) == ("sdxl", "NoobAI")
