"""Journey 4: a trainer launches a DP job from the wizard, watches the job page update live,
and finds the published LoRA in their library.

Every part is real: PostgreSQL, Redis, a Celery worker process (the coordinator), the live
server, a Flower SuperLink and two SuperNodes on loopback with generated private datasets
(their owners' machines), and Chromium. Tiny settings (rank 1, 32 px, clip norm 0.05: see
tests/federated/live.py) keep the two rounds under a minute or two on 2 cores.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from federated.engine.localfed import LocalFederation
from tests.federated.live import (
    IMAGES,
    PRICE_PER_EXAMPLE_ROUND,
    OwnerData,
    coordinator_settings,
    list_datasets,
    load_license_catalogue,
)

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]
ROUNDS = 2
JOB_TIMEOUT_MS = 420_000


def test_trainer_launches_a_dp_job_watches_it_live_and_finds_the_lora_in_the_library(
    request: pytest.FixtureRequest,
    browser_page: Page,
    login: Callable[..., None],
    shot: Callable[..., None],
    fed: Any,
    owners: list[OwnerData],
    federation: LocalFederation,
    live_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    tmp_path: Path,
    site: str,
) -> None:
    from federated.models import FederatedJob, PrivacySpend
    from marketplace.selectors import ledger_reconcile, ledger_total, wallet_balance

    # Given the coordinator on the SuperLink, its worker, two owners' listed datasets
    # (16 examples each at 2 credits per example and round) and a trainer with credits
    load_license_catalogue()
    request.addfinalizer(load_license_catalogue)
    coordinator_settings(
        monkeypatch,
        settings,
        tmp_path,
        superlink=f"127.0.0.1:{federation.port}",
        site_url=live_server.url,
    )
    request.getfixturevalue("celery_worker_process")
    terms = list_datasets(fed, owners)
    trainer = fed.user("painter", credits=5_000)
    base = fed.base_version(fed.user("modeller"))
    page = browser_page
    login(page, trainer)

    # When the trainer fills in the wizard and asks for an estimate
    page.goto(f"{site}/train/")
    with page.expect_navigation():
        page.click("text=New job")
    page.fill("#id_name", "Shapes with DP")
    page.select_option("#id_base_version", str(base.pk))
    page.select_option("#id_use", "style")
    page.fill("#id_trigger_word", "sks")
    for t in terms:
        page.check(f'input[name="datasets"][value="{t.dataset_version_id}"]')
    for field, value in (
        ("rank", 1),
        ("alpha", 1),
        ("rounds", ROUNDS),
        ("local_steps", 4),
        ("learning_rate", 0.1),
        ("resolution", 32),
        ("batch_size", 16),
        ("target_epsilon", 8),
        ("max_grad_norm", 0.05),
    ):
        page.fill(f"#id_{field}", str(value))
    page.check("#id_dp")
    with page.expect_navigation():
        page.click("button.estimate-button")

    # Then the estimate holds each owner's maximum: 16 examples x 2 credits x 2 rounds
    owners_max = 2 * IMAGES * PRICE_PER_EXAMPLE_ROUND * ROUNDS
    expect(page.locator(".estimate .owners-max")).to_have_text(str(owners_max))
    expect(page.locator(".ok-to-launch")).to_be_visible()
    total = int(page.locator(".estimate .total").inner_text())
    shot(page, "estimate")
    assert FederatedJob.objects.count() == 0  # an estimate launches nothing

    # When they launch it
    with page.expect_navigation():
        page.click("button.launch-button")
    assert re.search(r"/train/jobs/\d+/$", page.url), page.url
    job = FederatedJob.objects.get(trainer=trainer)
    assert wallet_balance(user=trainer) == 5_000 - total

    # Then the page follows the job as the nodes train: rounds and charts appear live
    expect(page.locator('table.job-rounds tr[data-round="1"]')).to_be_visible(
        timeout=JOB_TIMEOUT_MS
    )
    shot(page, "first-round-live")
    expect(page.locator(".job-status .state")).to_have_text("Completed", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#job-live")).to_have_attribute("data-terminal", "true")
    expect(page.locator(".loss-chart circle.point")).to_have_count(ROUNDS)
    expect(page.locator(".epsilon-chart circle.point").first).to_be_visible()
    for t in terms:
        row = page.locator(f'table.job-datasets tr[data-dataset="{t.dataset_version_id}"]')
        expect(row.locator(".rounds-completed")).to_have_text(str(ROUNDS))
    shot(page, "completed")

    # And the LoRA it published is in their library, and its page names its lineage
    page.goto(f"{site}/library/")
    job.refresh_from_db()
    assert job.result_version is not None
    mine = page.locator(f'table.own-models tr[data-model="{job.result_version.model_id}"]')
    expect(mine).to_contain_text("published")
    shot(page, "library")
    with page.expect_navigation():
        mine.locator("a").click()
    expect(page.locator("h1")).to_contain_text(job.result_version.model.name)
    shot(page, "lora-page")

    # The money and the privacy ledger agree with what the nodes did
    paid = PRICE_PER_EXAMPLE_ROUND * IMAGES * ROUNDS
    for t in terms:
        assert wallet_balance(user=t.dataset_version.dataset.owner) == paid
    assert wallet_balance(user=trainer) == 5_000 - 2 * paid - job.fee_paid
    spends = PrivacySpend.objects.filter(job=job)
    assert spends.count() == 2 and all(0 < s.epsilon <= 8.0 * 1.01 for s in spends)
    assert ledger_total() == 0 and ledger_reconcile() == []
