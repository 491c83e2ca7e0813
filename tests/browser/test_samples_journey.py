"""Images everywhere (issue #13): publishing renders sample images on the real Celery worker,
a LoRA's as base alone / base + LoRA pairs; the creator adds an image of their own on the model
page and makes it the cover; the studio starts at the checkpoint's native size and shows base
and base + LoRA side by side from one request.

Real parts: the shipped atelier-shapes base (64x64) published through the registry, a LoRA,
a Celery worker process on Redis running diffusers on the CPU, the live server, Chromium.
Screenshots at 1280 and 390 px: ``test-artifacts/browser/<test>/``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.studio.tiny_files import write_kohya_lora

pytestmark = pytest.mark.slow
RENDER_TIMEOUT_S = 600


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The worker's model cache in this test's folder, on the CPU, samples at 10 of the base's
    20 steps (a busy 2-core machine; set before it starts)."""
    monkeypatch.setenv("ATELIER_MODEL_CACHE_DIR", str(tmp_path / "worker-model-cache"))
    monkeypatch.setenv("ATELIER_GENERATION_DEVICE", "cpu")
    monkeypatch.setenv("ATELIER_SAMPLE_MAX_STEPS", "10")


def _wait_for_samples(version: Any, count: int) -> list[Any]:
    from registry.models import SampleImage, SampleSource

    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while time.monotonic() < deadline:
        found = list(SampleImage.objects.filter(version=version, source=SampleSource.RENDERED))
        if len(found) >= count:
            return found
        time.sleep(0.5)
    pytest.fail(f"the worker rendered {len(found)} of {count} samples of {version}")


def _png(color: str) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", (64, 64), "white")
    for x in range(16, 48):
        for y in range(16, 48):
            image.putpixel((x, y), (128, 0, 160) if color == "purple" else (0, 0, 0))
    image.save(out, format="PNG")
    return out.getvalue()


def test_published_versions_get_sample_images_and_the_studio_compares_base_and_lora(
    worker_env: None,
    samples_on_publish: Any,
    browser_page: Page,
    login: Callable[..., None],
    shot: Callable[..., None],
    make_user: Callable[..., Any],
    tmp_path: Path,
    site: str,
) -> None:
    from registry.models import LineageRelation, SampleRole
    from registry.services.catalog import (
        FileSpec,
        ParentSpec,
        model_create,
        version_create,
        version_publish,
    )
    from registry.services.uploads import upload_whole_file
    from sdcore.shapes import save_shapes_model

    page = browser_page
    creator = make_user("shapesmith")

    def upload(path: Path) -> Any:
        data = path.read_bytes()
        return upload_whole_file(
            user=creator, filename=path.name, stream=io.BytesIO(data), size=len(data)
        )

    # Given the shapes base published (its single file)
    shapes = save_shapes_model(tmp_path / "shapes").single_file
    base_model = model_create(owner=creator, name="Atelier shapes", kind="checkpoint")
    single = version_create(
        model=base_model, user=creator, name="v1", files=[FileSpec(upload(shapes))]
    )
    single = version_publish(version=single, user=creator)

    # When a LoRA trained on it is published
    lora_path = write_kohya_lora(tmp_path / "purple.safetensors", seed=3)
    model = model_create(owner=creator, name="Purple shapes", kind="lora", description="A LoRA.")
    lora = version_create(
        model=model,
        user=creator,
        name="v1",
        files=[FileSpec(upload(lora_path))],
        base_model="sd1",
        trigger_words=["atlr"],
        parents=[ParentSpec(LineageRelation.ADAPTER, version=single)],
    )
    lora = version_publish(version=lora, user=creator)

    # Then the worker renders the base's fixed prompts at 64x64, and the LoRA's pairs on it
    samples = _wait_for_samples(single, 3)
    assert {Image.open(s.image.open("rb")).size for s in samples} == {(64, 64)}
    pairs = _wait_for_samples(lora, 4)
    assert [p.role for p in pairs] == [SampleRole.BASE, SampleRole.ADAPTED] * 2
    assert pairs[1].parameters["base_version_id"] == single.pk

    # The LoRA's page shows each pair side by side
    login(page, creator)
    page.goto(f"{site}/models/{model.pk}/{model.slug}/")
    expect(page.locator("#samples figure.pair")).to_have_count(2)
    expect(page.locator("#samples figure.pair").first.locator("img")).to_have_count(2)

    # The creator adds an image of their own and makes it the cover
    own = tmp_path / "own.png"
    own.write_bytes(_png("purple"))
    page.set_input_files("#sample-images", str(own))
    with page.expect_navigation():
        page.click("#sample-add-submit")
    expect(page.locator("#samples figure.sample")).to_have_count(3)
    with page.expect_navigation():
        page.locator("#samples figure.sample").last.locator("button.make-cover").click()
    first = page.locator("#samples figure.sample").first
    expect(first.locator("span.badge.rendered")).to_have_count(0)  # the creator's own image
    cover = page.locator("#model-cover").get_attribute("src")
    assert cover == first.locator("img").first.get_attribute("src")
    shot(page, "lora-page-with-samples")

    # and the browse card shows that cover
    page.goto(f"{site}/")
    card = page.locator("article.model-card", has_text="Purple shapes")
    assert card.locator("img.cover").get_attribute("src") == cover

    # The studio starts at the base's native 64x64 and 20 steps
    page.goto(f"{site}/studio/?version={lora.pk}")
    expect(page.locator("#id_width")).to_have_value("64")
    expect(page.locator("#id_steps")).to_have_value("20")
    expect(page.locator("#native-hint")).to_contain_text("64×64")
    page.fill("#id_prompt", "a atlr circle on a white background")
    page.fill("#id_seed", "7")
    page.fill("#id_steps", "10")  # half the native steps: a busy CPU worker
    page.check("#id_compare")
    with page.expect_navigation():
        page.click("#generate-submit")
    expect(page.locator("#compare")).to_be_visible(timeout=RENDER_TIMEOUT_S * 1000)
    expect(page.locator("#baseline-image")).to_be_visible()
    expect(page.locator("#compare figcaption").first).to_contain_text("seed 7")
    shot(page, "studio-base-vs-lora")
