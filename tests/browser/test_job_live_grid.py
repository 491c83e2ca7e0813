"""The live job page shows each round's sample grid as its report arrives (issue #13): the
ServerApp's report carries the grid, the page's poll swaps in the round, and grids already on
the page stay the same elements (not fetched and drawn again each poll)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]


def _grid(colour: tuple[int, int, int]) -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 256), colour).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_the_job_page_shows_each_rounds_grid_as_it_arrives(
    browser_page: Page,
    login: Callable[..., None],
    shot: Callable[..., None],
    fed: Any,
    site: str,
) -> None:
    from federated.services.jobs import job_progress_record

    # Given a trainer watching the page of a running job on one dataset
    trainer = fed.user("watcher", credits=5_000)
    terms = fed.dataset(fed.user("owner"), count=10)
    job, _ = fed.running(trainer, fed.spec(fed.base_version(fed.user("creator")), [terms]))
    page = browser_page
    login(page, trainer)
    page.goto(f"{site}/train/jobs/{job.pk}/")
    expect(page.locator(".no-rounds")).to_be_visible()
    digest = terms.dataset_version.manifest_hash
    # When the ServerApp reports round 1 with its sample grid
    job_progress_record(
        job=job,
        payload=fed.report(
            job, 1, {"7": (digest, 10, 1.0)}, **{"sample-grid-png": _grid((255, 0, 0))}
        ),
    )
    # Then the page shows it without a reload, loaded
    first = page.locator('.round-grid[data-round="1"] img')
    expect(first).to_be_visible()
    page.wait_for_function(
        "document.querySelector('.round-grid[data-round=\"1\"] img').naturalWidth === 64"
    )
    page.evaluate(
        "document.querySelector('.round-grid[data-round=\"1\"] img').dataset.seen = 'yes'"
    )
    # And round 2's grid joins it, while round 1's image stays the element already drawn
    job_progress_record(
        job=job,
        payload=fed.report(
            job, 2, {"7": (digest, 10, 2.0)}, **{"sample-grid-png": _grid((0, 0, 255))}
        ),
    )
    expect(page.locator('.round-grid[data-round="2"] img')).to_be_visible()
    expect(page.locator(".round-grid img")).to_have_count(2)
    expect(first).to_have_attribute("data-seen", "yes")
    shot(page, "live-grids")
