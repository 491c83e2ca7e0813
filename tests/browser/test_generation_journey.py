"""Journey 5: anyone generates an image with a base checkpoint plus a LoRA, from the LoRA's
"Try it" button, and the page follows the real Celery worker until the image is there. The
same user then stacks a LoRA of their own that is not published, and finds both images, with
their parameters, in the gallery.

Every part is real: the tiny SD 1.x checkpoint and LoRA files published through the
registry's services, a Celery worker process on Redis running diffusers on the CPU, the live
server and Chromium.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from sdcore.generate import parse_a1111_parameters
from sdcore.tiny import TINY_SINGLE_FILE_NAME
from tests.studio.tiny_files import write_kohya_lora

pytestmark = pytest.mark.slow
GENERATION_TIMEOUT_MS = 120_000


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The worker's model cache in this test's folder, on the CPU (set before it starts)."""
    monkeypatch.setenv("ATELIER_MODEL_CACHE_DIR", str(tmp_path / "worker-model-cache"))
    monkeypatch.setenv("ATELIER_GENERATION_DEVICE", "cpu")


def _publish(owner: Any, path: Path, *, kind: str, name: str, publish: bool = True) -> Any:
    from registry.services.catalog import FileSpec, model_create, version_create, version_publish
    from registry.services.uploads import upload_whole_file

    data = path.read_bytes()
    upload = upload_whole_file(
        user=owner, filename=path.name, stream=io.BytesIO(data), size=len(data)
    )
    model = model_create(owner=owner, name=name, kind=kind, description=f"{name}.")
    version = version_create(
        model=model, user=owner, name="v1", files=[FileSpec(upload)], base_model="sd1"
    )
    return version_publish(version=version, user=owner) if publish else version


def _fill_small(page: Page, *, seed: int) -> None:
    """Settings that make the tiny model draw in well under a second."""
    for field, value in (("width", 32), ("height", 32), ("steps", 3), ("seed", seed)):
        page.fill(f"#id_{field}", str(value))


def _wait_for_image(page: Page) -> None:
    expect(page.locator("#generation-image")).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#generation-status")).to_have_text("Done")


def _png_parameters(page: Page) -> dict[str, str]:
    src = page.locator("#generation-image").get_attribute("src")
    response = page.request.get(str(src))
    assert response.status == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.body()))
    return parse_a1111_parameters(image.text["parameters"])  # type: ignore[attr-defined]


def test_anyone_generates_with_a_checkpoint_and_a_lora_then_adds_a_lora_of_their_own(
    worker_env: None,
    celery_worker_process: Any,
    browser_page: Page,
    login: Callable[..., None],
    shot: Callable[..., None],
    make_user: Callable[..., Any],
    tiny_model_dir: Path,
    tmp_path: Path,
    site: str,
) -> None:
    from studio.models import Generation

    # Given a creator's free checkpoint and LoRA, and an artist with a LoRA not yet published
    creator = make_user("painter")
    _publish(creator, tiny_model_dir / TINY_SINGLE_FILE_NAME, kind="checkpoint", name="Tiny Base")
    lora = _publish(
        creator,
        write_kohya_lora(tmp_path / "castles.safetensors", seed=1),
        kind="lora",
        name="Castles",
    )
    artist = make_user("sketcher")
    _publish(
        artist,
        write_kohya_lora(tmp_path / "mine.safetensors", seed=2),
        kind="lora",
        name="My Towers",
        publish=False,
    )
    page = browser_page
    login(page, artist)

    # When the artist presses "Try it" on the LoRA's page
    page.goto(f"{site}/models/{lora.model_id}/{lora.model.slug}/")
    with page.expect_navigation():
        page.click("#try-it")
    # Then the form holds the LoRA and a checkpoint it fits
    expect(page.locator("#id_lora_1 option:checked")).to_contain_text("Castles")
    expect(page.locator("#id_base_version option:checked")).to_contain_text("Tiny Base")
    page.fill("#id_prompt", "a castle on a hill")
    page.fill("#id_lora_1_weight", "0.8")
    _fill_small(page, seed=7)
    shot(page, "form-with-lora")
    with page.expect_navigation():
        page.click("#generate-submit")

    # Then the page follows the worker until the image is shown with its parameters
    _wait_for_image(page)
    shot(page, "first-image")
    # and the Download button saves the PNG under a name that says what it is
    with page.expect_download() as download:
        page.click("#download-image")
    assert download.value.suggested_filename.startswith("atelier-")
    assert download.value.suggested_filename.endswith("-7.png")
    expect(page.locator("#generation-parameters")).to_contain_text("<lora:castles:0.8>")
    fields = _png_parameters(page)
    assert fields["Prompt"] == "a castle on a hill <lora:castles:0.8>"
    assert (fields["Steps"], fields["Seed"], fields["Size"]) == ("3", "7", "32x32")

    # When they generate again, adding their own unpublished LoRA in the second slot
    with page.expect_navigation():
        page.click("text=Generate again")
    expect(page.locator("#id_prompt")).to_have_value("a castle on a hill")
    page.select_option(
        "#id_lora_2", label=page.locator("#id_lora_2 option", has_text="My Towers").inner_text()
    )
    page.fill("#id_lora_2_weight", "0.5")
    page.fill("#id_seed", "8")
    with page.expect_navigation():
        page.click("#generate-submit")
    _wait_for_image(page)
    fields = _png_parameters(page)
    assert "<lora:castles:0.8>" in fields["Prompt"] and "<lora:mine:0.5>" in fields["Prompt"]
    shot(page, "second-image")

    # Then both images are in their gallery, and the worker made exactly these two
    page.goto(f"{site}/studio/gallery/")
    shot(page, "gallery")
    made = Generation.objects.filter(user=artist)
    assert sorted(g.seed for g in made) == [7, 8]
    assert all(g.status == "succeeded" for g in made)
    for generation in made:
        expect(page.locator(f"a[href='/studio/generations/{generation.pk}/']")).to_have_count(1)


def test_a_weight_out_of_range_is_refused_next_to_its_field_and_nothing_is_queued(
    browser_page: Page,
    login: Callable[..., None],
    make_user: Callable[..., Any],
    tiny_model_dir: Path,
    tmp_path: Path,
    site: str,
    transactional_db: None,
) -> None:
    from studio.models import Generation

    # Given a checkpoint and a LoRA
    creator = make_user("painter")
    _publish(creator, tiny_model_dir / TINY_SINGLE_FILE_NAME, kind="checkpoint", name="Tiny Base")
    _publish(
        creator,
        write_kohya_lora(tmp_path / "castles.safetensors", seed=1),
        kind="lora",
        name="Castles",
    )
    artist = make_user("sketcher")
    page = browser_page
    login(page, artist)

    # When a LoRA weight far outside the allowed range is asked for
    page.goto(f"{site}/studio/")
    page.fill("#id_prompt", "a castle")
    page.select_option(
        "#id_lora_1", label=page.locator("#id_lora_1 option", has_text="Castles").inner_text()
    )
    page.fill("#id_lora_1_weight", "99")
    _fill_small(page, seed=1)
    with page.expect_navigation():
        page.click("#generate-submit")

    # Then the form says what is wrong next to the weight, and nothing is queued
    expect(page.locator("#field-lora_1_weight.has-error #lora_1_weight-errors")).to_contain_text(
        "between -2 and 2"
    )
    expect(page.locator("#field-prompt.has-error")).to_have_count(0)
    assert Generation.objects.count() == 0


def test_a_queued_generation_says_queued_in_badge_and_bar_and_its_owner_cancels_it(
    browser_page: Page,
    login: Callable[..., None],
    shot: Callable[..., None],
    make_user: Callable[..., Any],
    tiny_model_dir: Path,
    tmp_path: Path,
    site: str,
    transactional_db: None,
) -> None:
    """No worker here: the generation stays queued until its owner cancels it."""
    from studio.models import Generation

    # Given an SD 1.x checkpoint and LoRA, and an SD 2.x LoRA
    creator = make_user("painter")
    _publish(creator, tiny_model_dir / TINY_SINGLE_FILE_NAME, kind="checkpoint", name="Tiny Base")
    _publish(
        creator,
        write_kohya_lora(tmp_path / "castles.safetensors", seed=1),
        kind="lora",
        name="Castles",
    )
    other = _publish(
        creator,
        write_kohya_lora(tmp_path / "other.safetensors", seed=3),
        kind="lora",
        name="Second family",
    )
    other.base_model = "sd2"
    other.save(update_fields=["base_model"])
    artist = make_user("sketcher")
    page = browser_page
    login(page, artist)

    # When the artist opens the studio
    page.goto(f"{site}/studio/")
    # Then Generate is in the first screen, and the SD 2.x LoRA is not offered with SD 1.x
    assert page.locator("#generate-submit").bounding_box()["y"] < 900  # type: ignore[index]
    expect(page.locator(f"#id_lora_1 option[value='{other.pk}']")).to_be_disabled()
    expect(page.locator(f"#id_lora_1 option[value='{other.pk}']")).to_be_hidden()
    page.fill("#id_prompt", "a castle")
    _fill_small(page, seed=3)
    shot(page, "studio-form")
    with page.expect_navigation():
        page.click("#generate-submit")

    # Then the badge and the text under the bar say the same thing
    expect(page.locator("#generation-status")).to_have_text("Queued")
    expect(page.locator("#generation-status-text")).to_have_text("Queued")
    page.wait_for_timeout(1500)  # a poll or two of the status API: still the same words
    expect(page.locator("#generation-status")).to_have_text("Queued")
    expect(page.locator("#generation-status-text")).to_have_text("Queued")
    shot(page, "queued")

    # When its owner cancels it
    with page.expect_navigation():
        page.click("#cancel-generation")
    # Then it says so, and a worker would skip it
    expect(page.locator("#generation-status")).to_have_text("Cancelled")
    expect(page.locator("#generation-cancelled")).to_contain_text("Cancelled.")
    expect(page.locator("#cancel-generation")).to_have_count(0)
    shot(page, "cancelled")
    assert Generation.objects.get(user=artist).status == "cancelled"
