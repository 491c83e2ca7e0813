"""The public page of a federated job that published a LoRA (issue #19): buyers and visitors
see how the LoRA was trained (rounds, losses, privacy spent, datasets) and nothing private (no
node identities, no owners' names or pay, no escrow). Through Django's test client against
PostgreSQL, with the federated tests' fixtures (a job driven by the ServerApp's reports)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from federated.services.jobs import job_complete, job_progress_record

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")

NODE_ID = "48151623"  # the Flower node id in the round reports; never shown publicly


@pytest.fixture
def trained(fed: Any, server_out: Any) -> SimpleNamespace:
    """A completed 2-round DP job on a data keeper's dataset, its LoRA published."""
    trainer = fed.user("trainer", credits=10_000)
    base = fed.base_version(fed.user("creator"))
    keeper = fed.user("datakeeper")
    terms = fed.dataset(keeper, count=10, price_per_example_round=7, name="Red circles")
    job, _ = fed.running(trainer, fed.spec(base, [terms], rounds=2))
    manifest = terms.dataset_version.manifest_hash
    for index in (1, 2):
        job_progress_record(
            job=job, payload=fed.report(job, index, {NODE_ID: (manifest, 10, 1.25)})
        )
    job = job_complete(job=job, out_dir=server_out(job))
    return SimpleNamespace(
        job=job, trainer=trainer, keeper=keeper, terms=terms, buyer=fed.user("buyer")
    )


def _public(client: Any, job: Any) -> str:
    response = client.get(f"/train/jobs/{job.pk}/public/")
    assert response.status_code == 200
    return response.content.decode()


def _assert_nothing_private(html: str, world: SimpleNamespace) -> None:
    assert NODE_ID not in html and "data-node" not in html
    assert world.keeper.username not in html  # no owner's name
    for private in ("Held in escrow", "Paid to owners", 'class="earned"', "Earned", "refused"):
        assert private not in html, private


@pytest.mark.parametrize("who", ["anonymous", "buyer", "trainer"])
def test_the_public_job_page_shows_rounds_privacy_and_datasets(
    client: Any, trained: SimpleNamespace, who: str
) -> None:
    if who != "anonymous":
        client.force_login(getattr(trained, who))
    # When someone opens the public page of the job that published the LoRA
    html = _public(client, trained.job)
    # Then it shows the rounds, their losses, the privacy spent and the dataset (linked)
    version = trained.job.result_version
    assert f"How {version.model.name} was trained" in html
    assert '<dd class="rounds">2 of 2</dd>' in html
    assert "ε 1.25 spent" in html
    assert html.count('<tr data-round="') == 2 and '<td class="node-count">1</td>' in html
    assert "0.4000" in html and "0.3000" in html  # the losses of rounds 1 and 2
    dataset = trained.terms.dataset_version.dataset
    assert f'href="/datasets/{dataset.pk}/{dataset.slug}/' in html
    assert f'href="/models/{version.model_id}/{version.model.slug}/?version={version.pk}"' in html
    # and nothing private
    _assert_nothing_private(html, trained)
    # and only the trainer is offered the full job page
    assert (f'class="job-link" href="/train/jobs/{trained.job.pk}/"' in html) == (who == "trainer")


def test_the_loras_card_links_the_public_page_for_buyers(
    client: Any, trained: SimpleNamespace
) -> None:
    version = trained.job.result_version
    page = f"/models/{version.model_id}/{version.model.slug}/?version={version.pk}"
    html = client.get(page).content.decode()
    assert f'class="job-public-link" href="/train/jobs/{trained.job.pk}/public/"' in html
    # and the trainer's full job page links the public one
    client.force_login(trained.trainer)
    html = client.get(f"/train/jobs/{trained.job.pk}/").content.decode()
    assert f'class="job-public-page" href="/train/jobs/{trained.job.pk}/public/"' in html
    # and the trainer's full job page stays the trainer's
    client.force_login(trained.buyer)
    assert client.get(f"/train/jobs/{trained.job.pk}/").status_code == 404


def test_a_job_without_a_published_lora_has_no_public_page(
    client: Any, fed: Any, trained: SimpleNamespace
) -> None:
    # Given a running job (nothing published yet) and an unknown id
    running, _ = fed.running(
        trained.trainer, fed.spec(trained.job.base_version, [trained.terms], rounds=2)
    )
    for path in (f"/train/jobs/{running.pk}/public/", "/train/jobs/999999/public/"):
        assert client.get(path).status_code == 404, path
    # When the published LoRA is unpublished from view (its model made private), 404 too
    from registry.models import Model

    Model.objects.filter(pk=trained.job.result_version.model_id).update(visibility="private")
    assert client.get(f"/train/jobs/{trained.job.pk}/public/").status_code == 404
    # and the page is read-only
    Model.objects.filter(pk=trained.job.result_version.model_id).update(visibility="public")
    assert client.post(f"/train/jobs/{trained.job.pk}/public/").status_code == 405
    assert client.get("/train/jobs/abc/public/").status_code == 404
