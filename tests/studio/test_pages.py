"""The studio's pages: "Try it" from a model page, the form with errors next to their field,
the progress page, the finished image with its parameters, the gallery, sharing, samples."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from registry.models import SampleImage
from studio.models import Generation, GenerationStatus
from studio.services.generations import (
    ResourceInput,
    generation_create,
    generation_fail,
    generation_run,
)

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _field_block(html: str, name: str) -> str:
    """The HTML of one form field's block (label, input, errors), as registry/_field.html."""
    start = html.rfind("<div", 0, html.index(f'id="field-{name}"'))
    return html[start : html.index("</div>", start)]


def _selected(block: str, value: int) -> bool:
    """Whether the option ``value`` of a select is selected and says its family (sd1)."""
    option = re.search(rf'<option value="{value}"[^>]*>', block)
    return bool(option) and " selected" in option[0] and 'data-family="sd1"' in option[0]


def _form(studio: Any, **extra: Any) -> dict[str, Any]:
    data = {
        "base_version": studio.base.pk,
        "prompt": "a castle on a hill",
        "negative_prompt": "",
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


def test_a_model_page_has_a_try_it_link(studio) -> None:
    model = studio.lora.model
    html = Client().get(f"/models/{model.pk}/{model.slug}/").content.decode()
    assert f'href="/studio/?version={studio.lora.pk}"' in html


def test_try_it_on_a_lora_fills_its_slot_and_a_checkpoint_of_its_family(studio) -> None:
    response = _client(studio.artist).get(f"/studio/?version={studio.lora.pk}")
    assert response.status_code == 200
    html = response.content.decode()
    assert _selected(_field_block(html, "lora_1"), studio.lora.pk)
    assert _selected(_field_block(html, "base_version"), studio.base.pk)
    # and embeddings say the word that calls them in a prompt
    assert "Easy negative v1 (SD 1.x) · word: easyneg" in _field_block(html, "embedding_1")


def test_the_form_needs_a_login() -> None:
    response = Client().get("/studio/")
    assert response.status_code == 302 and "/accounts/login" in response["Location"]


def test_a_bad_size_is_shown_next_to_its_field(studio) -> None:
    response = _client(studio.artist).post("/studio/", _form(studio, width=36))
    assert response.status_code == 400
    block = _field_block(response.content.decode(), "width")
    assert "has-error" in block and "36 is not a multiple of 8." in block
    assert not Generation.objects.exists()


def test_a_paid_lora_is_refused_next_to_the_slot_it_was_in(studio, sell) -> None:
    sell(studio.lora, 40)
    response = _client(studio.artist).post("/studio/", _form(studio, lora_2=studio.lora.pk))
    assert response.status_code == 403
    block = _field_block(response.content.decode(), "lora_2")
    assert "has-error" in block and "Castles v1 costs 40 credits; buy it to use it." in block


def test_the_form_queues_a_generation_and_shows_its_progress(studio) -> None:
    client = _client(studio.artist)
    response = client.post("/studio/", _form(studio, lora_1=studio.lora.pk, lora_1_weight=0.7))
    generation = Generation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/studio/generations/{generation.pk}/"
    assert generation.resources.get().weight == 0.7
    html = client.get(response["Location"]).content.decode()
    assert f'data-status-url="/api/v1/generations/{generation.pk}"' in html
    assert '<progress id="generation-bar" max="2" aria-labelledby' in html and "Queued" in html
    assert "studio/generation.js" in html
    # and once the worker is on it, the step it is at
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.RUNNING, progress_step=1
    )
    html = client.get(response["Location"]).content.decode()
    assert '<progress id="generation-bar" max="2" value="1"' in html
    assert 'id="generation-status">Step 1 of 2<' in html  # the badge says what the bar says


def test_a_finished_generation_shows_the_image_parameters_and_actions(studio) -> None:
    generation = generation_create(
        user=studio.creator,
        base_version_id=studio.base.pk,
        prompt="a tower",
        seed=4,
        steps=2,
        width=32,
        height=32,
        loras=[ResourceInput(studio.lora.pk, 0.5)],
    )
    done = generation_run(generation_id=generation.pk)
    html = _client(studio.creator).get(f"/studio/generations/{done.pk}/").content.decode()
    assert f'src="/api/v1/generations/{done.pk}/image"' in html
    assert "Steps: 2, Sampler: Euler, CFG scale: 7, Seed: 4, Size: 32x32" in html
    assert 'id="make-public"' in html
    # the creator owns both the checkpoint and the LoRA: either may get it as a sample
    options = re.findall(r'<option value="(\d+)">', _sample_form(html))
    assert sorted(map(int, options)) == sorted([studio.base.pk, studio.lora.pk])
    assert "studio/generation.js" not in html  # nothing to poll


def _sample_form(html: str) -> str:
    start = html.index('class="sample-form"')
    return html[start : html.index("</form>", start)]


def test_a_failed_generation_shows_its_reason(studio) -> None:
    generation = generation_create(
        user=studio.artist,
        base_version_id=studio.base.pk,
        prompt="x",
        steps=2,
        width=32,
        height=32,
    )
    generation_fail(generation_id=generation.pk, code="timeout", message="It took too long.")
    html = _client(studio.artist).get(f"/studio/generations/{generation.pk}/").content.decode()
    assert 'role="alert"' in html and "It took too long." in html and "timeout" in html


def test_the_gallery_lists_my_images_with_their_parameters(studio, make_user) -> None:
    mine = generation_create(
        user=studio.artist,
        base_version_id=studio.base.pk,
        prompt="my castle",
        seed=99,
        steps=2,
        width=32,
        height=32,
        loras=[ResourceInput(studio.lora.pk, 0.25)],
    )
    generation_create(
        user=make_user("other"),
        base_version_id=studio.base.pk,
        prompt="their castle",
        steps=2,
        width=32,
        height=32,
    )
    html = _client(studio.artist).get("/studio/gallery/").content.decode()
    assert f'id="generation-{mine.pk}"' in html and "my castle" in html
    assert "Seed 99 · 2 steps · Euler" in html and "LoRA castles × 0.25" in html
    assert "their castle" not in html


def test_a_private_generation_page_is_404_for_others_until_made_public(studio, make_user) -> None:
    generation = generation_create(
        user=studio.artist,
        base_version_id=studio.base.pk,
        prompt="x",
        steps=2,
        width=32,
        height=32,
    )
    generation_run(generation_id=generation.pk)
    page = f"/studio/generations/{generation.pk}/"
    assert Client().get(page).status_code == 404
    assert _client(make_user("other")).get(page).status_code == 404

    response = _client(studio.artist).post(
        f"/studio/generations/{generation.pk}/visibility/", {"is_public": "1"}
    )

    assert response.status_code == 302
    assert Client().get(page).status_code == 200
    image = Client().get(f"/api/v1/generations/{generation.pk}/image")
    assert image.status_code == 200 and image["Cache-Control"] == "public, max-age=300"


def test_the_owner_adds_the_image_as_a_sample_from_the_page(studio) -> None:
    generation = generation_create(
        user=studio.creator,
        base_version_id=studio.base.pk,
        prompt="a sample",
        steps=2,
        width=32,
        height=32,
    )
    generation_run(generation_id=generation.pk)
    response = _client(studio.creator).post(
        f"/studio/generations/{generation.pk}/sample/", {"version_id": studio.base.pk}
    )
    assert response.status_code == 302
    assert SampleImage.objects.get().version == studio.base
    model = studio.base.model
    html = Client().get(f"/models/{model.pk}/{model.slug}/").content.decode()
    assert 'alt="a sample"' in html


def test_generate_again_fills_the_form_with_the_same_settings(studio) -> None:
    generation = generation_create(
        user=studio.artist,
        base_version_id=studio.base.pk,
        prompt="again please",
        seed=1234,
        steps=3,
        width=40,
        height=32,
        loras=[ResourceInput(studio.lora.pk, 0.3)],
    )
    assert generation.status == GenerationStatus.QUEUED
    html = _client(studio.artist).get(f"/studio/?from={generation.pk}").content.decode()
    assert 'value="1234"' in _field_block(html, "seed")
    assert 'value="40"' in _field_block(html, "width")
    assert _selected(_field_block(html, "lora_1"), studio.lora.pk)
    assert 'value="0.3"' in _field_block(html, "lora_1_weight")


def test_generate_is_near_the_top_of_the_form(studio) -> None:
    html = _client(studio.artist).get("/studio/").content.decode()
    button = html.index('id="generate-submit"')
    # before the optional parts: LoRAs, embeddings, settings
    assert button < html.index("<legend>LoRAs</legend>") < html.index("<legend>Settings</legend>")
    assert html.index('id="id_prompt"') < button


def test_a_lora_of_another_family_is_refused_before_queueing(
    studio, publish_file, resource_files
) -> None:
    # Given an SD 2.x LoRA (offered with its family for the page to hide it beside an
    # SD 1.x checkpoint) and a Flux one (not offered: no Flux checkpoint generates)
    sd2 = publish_file(
        studio.creator, resource_files["other_lora"], kind="lora", base_model="sd2", name="Two"
    )
    flux = publish_file(
        studio.creator, resource_files["misfit_lora"], kind="lora", base_model="flux", name="F"
    )
    client = _client(studio.artist)
    block = _field_block(client.get("/studio/").content.decode(), "lora_1")
    assert re.search(rf'<option value="{sd2.pk}" data-family="sd2">', block)
    assert f'<option value="{flux.pk}"' not in block
    # When the SD 2.x LoRA is sent with the SD 1.x checkpoint anyway (no JavaScript)
    response = client.post("/studio/", _form(studio, lora_2=sd2.pk))
    # Then a 400 names the slot and the two families, and nothing is queued
    assert response.status_code == 400
    block = _field_block(response.content.decode(), "lora_2")
    assert "has-error" in block and "is for SD 2.x but the checkpoint is SD 1.x" in block
    assert not Generation.objects.exists()
