"""The studio follows the checkpoint: its native size and steps fill the form and are the API's
defaults; and one request can make base alone and base + LoRA side by side, same seed."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image

from studio.models import Generation, GenerationStatus
from studio.services.generations import generation_run

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations"


def _field_block(html: str, name: str) -> str:
    """The HTML of one form field's block (label, input, errors), as registry/_field.html."""
    start = html.rfind("<div", 0, html.index(f'id="field-{name}"'))
    return html[start : html.index("</div>", start)]


def _form(studio: Any, **extra: Any) -> dict[str, Any]:
    data = {
        "base_version": studio.base.pk,
        "prompt": "a castle on a hill",
        "seed": 3,
        "steps": 2,
        "guidance": 7,
        "width": 32,
        "height": 32,
        "sampler": "Euler",
    }
    for slot in (1, 2, 3):
        data |= {f"lora_{slot}": "", f"lora_{slot}_weight": 1}
    for slot in (1, 2):
        data |= {f"embedding_{slot}": "", f"embedding_{slot}_weight": 1}
    return data | extra


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _value(block: str) -> str:
    match = re.search(r'value="([^"]*)"', block)
    assert match is not None, block
    return match.group(1)


def test_the_form_starts_at_the_checkpoints_native_size_and_steps(studio: Any) -> None:
    html = _client(studio.artist).get(f"/studio/?version={studio.base.pk}").content.decode()

    # Then the tiny checkpoint's 64x64 and 20 steps, not 512x512
    assert _value(_field_block(html, "width")) == "64"
    assert _value(_field_block(html, "height")) == "64"
    assert _value(_field_block(html, "steps")) == "20"
    # and its option carries them for the page's script when the checkpoint changes
    option = re.search(rf'<option value="{studio.base.pk}"[^>]*>', html)
    assert option is not None
    assert 'data-width="64"' in option[0] and 'data-steps="20"' in option[0]
    assert 'id="native-hint"' in html and "64×64" in html


def test_the_api_defaults_to_the_native_size_and_steps(studio: Any, client_for: Any) -> None:
    response = client_for(studio.artist).post(
        URL, {"base_version_id": studio.base.pk, "prompt": "a red circle"}, format="json"
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["width"], body["height"], body["steps"]) == (64, 64, 20)
    assert body["baseline_id"] is None


def test_compare_makes_the_base_alone_and_with_the_lora_with_one_seed(
    studio: Any, client_for: Any
) -> None:
    # When the artist asks once for a LoRA image and its comparison
    response = client_for(studio.artist).post(
        URL,
        {
            "base_version_id": studio.base.pk,
            "prompt": "a castle",
            "seed": 5,
            "steps": 2,
            "loras": [{"version_id": studio.lora.pk, "weight": 1.0}],
            "compare": True,
        },
        format="json",
    )
    assert response.status_code == 202, response.json()
    main = Generation.objects.get(pk=response.json()["id"])
    baseline = main.baseline
    # Then two generations: same prompt, seed and settings; the LoRA only on one
    assert baseline is not None and response.json()["baseline_id"] == baseline.pk
    assert (baseline.seed, baseline.prompt, baseline.steps) == (5, "a castle", 2)
    assert baseline.resources.count() == 0 and main.resources.get().version_id == studio.lora.pk

    # and once the worker made both, the page shows them side by side
    for generation in (baseline, main):
        assert generation_run(generation_id=generation.pk).status == GenerationStatus.SUCCEEDED
    html = _client(studio.artist).get(f"/studio/generations/{main.pk}/").content.decode()
    assert 'id="compare"' in html
    baseline_src = reverse("studio:generation-image", args=[baseline.pk])
    assert re.search(rf'id="baseline-image"[^>]* src="{re.escape(baseline_src)}"', html)
    pixels = []
    for generation in (baseline, main):
        generation.refresh_from_db()
        with generation.image.open("rb") as handle:
            pixels.append(Image.open(io.BytesIO(handle.read())).convert("RGB").tobytes())
    assert pixels[0] != pixels[1]  # the LoRA changed the image


def test_compare_without_a_lora_is_refused_naming_the_field(studio: Any, client_for: Any) -> None:
    response = client_for(studio.artist).post(
        URL, {"base_version_id": studio.base.pk, "prompt": "x", "compare": True}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["details"]["field"] == "compare"
    assert not Generation.objects.exists()


def test_the_form_can_ask_for_the_comparison(studio: Any) -> None:
    client = _client(studio.artist)
    response = client.post("/studio/", _form(studio, lora_1=studio.lora.pk, compare="on"))
    assert response.status_code == 302
    main = Generation.objects.exclude(baseline=None).get()
    assert main.baseline is not None and main.baseline.seed == main.seed == 3
