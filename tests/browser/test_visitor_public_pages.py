"""A visitor's public pages at desktop and phone widths (issue #19): the landing page at ``/``,
browse at ``/models/``, a LoRA trained on the site with its rendered cover, and the public page
of the job that trained it (no node ids, no owners' pay). Screenshots in the tests' artifacts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from federated.services.jobs import job_complete, job_progress_record
from registry.models import SampleRole
from registry.services.samples import RenderedSample, _store
from tests.registry.factories import png_bytes

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("fast_passwords")

NODE_ID = "48151623"


def test_a_visitor_finds_a_trained_lora_and_how_it_was_trained(
    browser_page: Page, shot: Callable[..., None], fed: Any, server_out: Any, site: str
) -> None:
    # Given a LoRA a 2-round federated job published, with a rendered base-vs-LoRA pair
    trainer = fed.user("trainer", credits=10_000)
    base = fed.base_version(fed.user("creator"))
    terms = fed.dataset(fed.user("datakeeper"), count=10, name="Red circles")
    job, _ = fed.running(trainer, fed.spec(base, [terms], rounds=2))
    manifest = terms.dataset_version.manifest_hash
    for index in (1, 2):
        job_progress_record(
            job=job, payload=fed.report(job, index, {NODE_ID: (manifest, 10, 1.25)})
        )
    job = job_complete(job=job, out_dir=server_out(job))
    version = job.result_version
    _, with_lora = _store(
        version,
        [
            RenderedSample(
                png_bytes(size=(64, 64), color="white"),
                "a red circle",
                role=SampleRole.BASE,
                pair=0,
            ),
            RenderedSample(
                png_bytes(size=(64, 64), color="red"),
                "a red circle",
                role=SampleRole.ADAPTED,
                pair=0,
            ),
        ],
    )
    page = browser_page
    # When a visitor opens the site: the landing page, with the LoRA's cover
    page.goto(site + "/")
    expect(page.locator("h1")).to_have_text("Publish, buy and train Stable Diffusion models")
    expect(page.locator(f'img[src="{with_lora.image.url}"]').first).to_be_visible()
    shot(page, "landing-at-root")
    # and browses the models: the card's cover is the "with LoRA" half
    page.click('.hero-actions a.button.secondary:has-text("Browse models")')
    expect(page).to_have_url(site + "/models/")
    card = page.locator("article.model-card", has_text=version.model.name)
    assert card.locator("img.cover").get_attribute("src") == with_lora.image.url
    shot(page, "browse-models")
    # and opens the LoRA, then how it was trained
    card.locator("a.card-link").click()
    expect(page.locator("#model-cover")).to_have_attribute("src", with_lora.image.url)
    shot(page, "trained-lora")
    page.click("a.job-public-link")
    expect(page.locator("h1")).to_have_text(f"How {version.model.name} was trained")
    expect(page.locator("dd.rounds")).to_have_text("2 of 2")
    expect(page.locator("table.job-rounds tbody tr")).to_have_count(2)
    assert NODE_ID not in page.content() and "datakeeper" not in page.content()
    shot(page, "public-job-page")
