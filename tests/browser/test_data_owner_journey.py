"""Journey 3: a data owner lists a private dataset from a node (through the REST API, as the
node's CLI does), a trainer's job asks for it, the owner approves it in the inbox; the job
runs (its rounds reported as the ServerApp reports them, while the trainer's page updates
live) and settles; the owner sees the epsilon spent and the earnings on the dataset page."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.federated.factories import manifest, openssh_public_key

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]


def test_owner_approves_a_job_and_sees_budget_and_earnings(
    browser_page: Page,
    new_page: Callable[[], Page],
    login: Callable[..., None],
    shot: Callable[..., None],
    fed: Any,
    api_client: Any,
    token_for: Callable[[Any], str],
    server_out: Callable[..., Any],
    site: str,
) -> None:
    from federated.models import FederatedJob
    from federated.selectors import federated_terms_for
    from federated.services.jobs import (
        job_complete,
        job_mark_running,
        job_progress_record,
        job_run_config,
    )
    from marketplace.selectors import ledger_reconcile, ledger_total, wallet_balance

    # Given a data owner whose node registers and lists its dataset through the API
    owner = fed.user("gardener")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(owner)}")
    node = api_client.post(
        "/api/v1/federated/nodes",
        {"name": "garden-pc", "public_key": openssh_public_key()},
        format="json",
    )
    assert node.status_code == 201, node.json()
    listed = api_client.post(
        "/api/v1/federated/datasets",
        {
            "node_id": node.json()["id"],
            "name": "Garden photos",
            "description": "Flowers.",
            "manifest": manifest(count=12, seed=4242),
            "terms": {
                "price_per_example_round": 3,
                "epsilon_per_job": 6.0,
                "epsilon_lifetime": 20.0,
                "approval": "manual",
            },
        },
        format="json",
    )
    assert listed.status_code == 201, listed.json()
    dataset_version_id = listed.json()["dataset_version_id"]
    terms = federated_terms_for(dataset_version_id=dataset_version_id, user=owner)
    assert terms is not None

    # and a trainer's 2-round job that asks for it (12 examples x 3 credits x 2 rounds = 72)
    trainer = fed.user("painter", credits=1_000)
    base = fed.base_version(fed.user("modeller"))
    job = fed.launch(
        trainer, fed.spec(base, [terms], name="Garden LoRA", rounds=2, target_epsilon=5.0)
    )
    assert job.state == FederatedJob.State.AWAITING_APPROVAL

    # When the owner opens the dashboard, the request is in the inbox
    page = browser_page
    login(page, owner)
    page.click("nav >> text=Nodes")
    expect(page.locator("h1")).to_have_text("Nodes and private datasets")
    request = page.locator("table.approvals tbody tr")
    expect(request).to_have_count(1)
    expect(request.locator(".trainer")).to_have_text("painter")
    expect(request.locator(".target-epsilon")).to_have_text("5")
    expect(request.locator(".max-earnings")).to_have_text("72 credits")
    expect(page.locator("table.nodes")).to_contain_text("garden-pc")
    expect(page.locator("table.owner-datasets .reserved")).to_have_text("5")
    shot(page, "inbox")

    # and approves it
    with page.expect_navigation():
        request.locator("button.approve").click()
    expect(page.locator(".messages")).to_contain_text("Approved: Garden LoRA by painter.")
    expect(page.locator(".no-requests")).to_be_visible()
    shot(page, "approved")
    job.refresh_from_db()
    assert job.state == FederatedJob.State.QUEUED

    # Then the job runs: the trainer's page picks up each round as it is reported
    trainer_page = new_page()
    login(trainer_page, trainer)
    config = job_run_config(job=job)
    job = job_mark_running(job=job, run_id="run-1")
    trainer_page.goto(f"{site}/train/jobs/{job.pk}/")
    expect(trainer_page.locator(".job-status .state")).to_have_text("Running")
    expect(trainer_page.locator(".no-rounds")).to_be_visible()
    h = terms.dataset_version.manifest_hash
    for index, epsilon in ((1, 2.5), (2, 4.0)):
        job_progress_record(job=job, payload=fed.report(job, index, {"7": (h, 12, epsilon)}))
        expect(trainer_page.locator(f'table.job-rounds tr[data-round="{index}"]')).to_be_visible()
    expect(trainer_page.locator(".loss-chart circle.point")).to_have_count(2)
    expect(trainer_page.locator(".epsilon-chart circle.point")).to_have_count(2)
    shot(trainer_page, "trainer-live-rounds")
    assert config["dataset-manifests"] == h

    # and settles when it completes: the owner is paid for both rounds
    job = job_complete(job=job, out_dir=server_out(job, epsilon=4.0))
    assert job.state == FederatedJob.State.COMPLETED
    expect(trainer_page.locator(".job-status .state")).to_have_text("Completed")
    expect(trainer_page.locator("#job-live")).to_have_attribute("data-terminal", "true")
    expect(trainer_page.locator("a.result-link")).to_be_visible()
    shot(trainer_page, "trainer-completed")
    assert wallet_balance(user=owner) == 72

    # and the owner's dataset page shows the epsilon spent and the earnings chart
    page.goto(f"{site}/nodes/")
    page.click("table.owner-datasets >> text=Garden photos")
    expect(page.locator("h1")).to_have_text("Garden photos")
    expect(page.locator("dd.spent")).to_have_text("4")
    expect(page.locator("dd.remaining")).to_have_text("16")
    expect(page.locator(f'table.budget-jobs tr[data-job="{job.pk}"] .epsilon')).to_have_text("4")
    expect(page.locator(".total-earned")).to_have_text("72")
    point = page.locator(".dataset-earnings-chart circle.point")
    expect(point).to_have_count(1)
    assert point.get_attribute("data-earned") == "72"
    expect(page.locator(".budget-bar")).to_be_visible()
    shot(page, "dataset-budget-and-earnings")
    assert re.search(r"/nodes/datasets/\d+/$", page.url)

    # When the owner changes the terms on the site: 40 credits per job, automatic approval
    page.check("#id_pricing_1")  # per job
    page.fill("#id_price", "40")
    page.select_option("#id_approval", "auto")
    with page.expect_navigation():
        page.click("#save-terms")
    expect(page.locator(".messages")).to_contain_text("Terms saved")
    expect(page.locator("#id_price")).to_have_value("40")

    # Then the trainer finds them on the dataset's public page, next to "Train on this"
    dataset = terms.dataset_version.dataset
    trainer_page.goto(f"{site}/datasets/{dataset.pk}/{dataset.slug}/")
    offer = trainer_page.locator("#dataset-offer")
    expect(offer.locator(".price")).to_have_text("40 credits per job")
    expect(offer.locator(".approval")).to_have_text("Automatic")
    expect(trainer_page.locator(".manifest")).not_to_contain_text("secret_holiday")
    shot(trainer_page, "dataset-public-page")
    with trainer_page.expect_navigation():
        offer.locator("#train-on-this").click()
    picked = trainer_page.locator(f'input[name="datasets"][value="{dataset_version_id}"]')
    expect(picked).to_be_checked()
    shot(trainer_page, "wizard-with-the-dataset")

    # and the LoRA's page says it was trained on the site, on that dataset, with what privacy
    lora = FederatedJob.objects.get(pk=job.pk).result_version
    assert lora is not None
    trainer_page.goto(f"{site}/models/{lora.model_id}/{lora.model.slug}/?version={lora.pk}")
    card = trainer_page.locator("#trained-from")
    expect(card.locator(".rounds")).to_have_text("2 of 2")
    expect(card.locator(".privacy-spent")).to_contain_text("ε 4 spent")
    expect(card.locator(".trained-datasets")).to_contain_text("Garden photos")
    expect(card.locator("a.job-link")).to_have_attribute("href", f"/train/jobs/{job.pk}/")
    shot(trainer_page, "lora-trained-on-the-site")

    assert ledger_total() == 0 and ledger_reconcile() == []
