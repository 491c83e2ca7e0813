"""Secure aggregation is a per-job choice, in the API and the wizard, with its measured cost
shown in the estimate."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from federated.models import FederatedJob
from federated.services.job_spec import AGGREGATION_COSTS
from tests.federated.factories import form_data

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")


@pytest.fixture
def world(fed: Any) -> SimpleNamespace:
    trainer = fed.user("trainer", credits=10_000)
    base = fed.base_version(fed.user("creator"))
    terms = fed.dataset(fed.user("owner"), count=10, price_per_example_round=2)
    return SimpleNamespace(trainer=trainer, base=base, terms=terms)


def _body(world: SimpleNamespace, **values: Any) -> dict[str, Any]:
    return {
        "name": "Red circles",
        "base_version_id": world.base.pk,
        "use": "style",
        "dataset_version_ids": [world.terms.dataset_version_id],
        "rounds": 3,
        "resolution": 32,
        "rank": 2,
        "trigger_word": "sks",
        **values,
    }


def test_the_api_estimate_shows_what_secure_aggregation_costs(
    world: SimpleNamespace,
    api_client: Any,
    token_for: Any,
) -> None:
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(world.trainer)}")
    plain = api_client.post("/api/v1/federated/jobs/estimate", _body(world), format="json").json()
    assert plain["aggregation"]["aggregation"] == "fedavg"
    assert plain["aggregation_extra_seconds"] == 0
    secure = api_client.post(
        "/api/v1/federated/jobs/estimate", _body(world, aggregation="secagg"), format="json"
    ).json()
    cost = secure["aggregation"]
    assert cost["aggregation"] == "secagg" and cost["wall_time_factor"] > 1
    assert secure["aggregation_extra_seconds"] == 3 * cost["extra_seconds_per_round"] > 0
    assert "RESULTS-federation.md" in cost["source"] and "fails the round" in cost["limits"]
    assert secure["total"] == plain["total"]  # time, not credits
    bad = api_client.post(
        "/api/v1/federated/jobs/estimate", _body(world, aggregation="magic"), format="json"
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"


def test_the_wizard_offers_secure_aggregation_shows_its_cost_and_launches_with_it(
    world: SimpleNamespace,
    client: Any,
) -> None:
    client.force_login(world.trainer)
    page = client.get("/train/new/").content.decode()
    assert 'name="aggregation" value="secagg"' in page
    estimate = client.post("/train/new/", form_data(world, world.terms, aggregation="secagg"))
    html = estimate.content.decode()
    cost = re.search(r'id="aggregation-cost".*?</div>', html, re.S)
    assert cost is not None and AGGREGATION_COSTS["secagg"].label in cost.group(0)
    assert re.search(
        r'<span class="extra-seconds">50</span> s for this job.s 2 rounds', cost.group(0)
    )
    launched = client.post(
        "/train/new/", form_data(world, world.terms, aggregation="secagg", action="launch")
    )
    assert launched.status_code == 302
    job = FederatedJob.objects.get(trainer=world.trainer)
    assert job.config["aggregation"] == "secagg"
