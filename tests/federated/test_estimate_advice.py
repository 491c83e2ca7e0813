"""Advice before spending privacy (issue #13): the estimate API's ``advice`` and the wizard's
Privacy advice box, at the utility bench's settings (bench/RESULTS-utility.md)."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from federated.models import FederatedJob
from registry.models import DatasetVersion
from tests.federated.factories import form_data

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")
API = "/api/v1/federated/jobs/estimate"
BENCH = {"batch_size": 8, "rounds": 3, "local_steps": 40, "max_grad_norm": 0.05, "delta": 1e-5}


@pytest.fixture
def world(fed: Any) -> SimpleNamespace:
    trainer = fed.user("trainer", credits=100_000)
    base = fed.base_version(fed.user("creator"))
    small = [fed.dataset(fed.user(f"small{i}"), count=64, name=f"Small {i}") for i in (1, 2)]
    large = [fed.dataset(fed.user(f"large{i}"), count=256, name=f"Large {i}") for i in (1, 2)]
    return SimpleNamespace(trainer=trainer, base=base, small=small, large=large)


def _body(world: SimpleNamespace, datasets: list[Any], **values: Any) -> dict[str, Any]:
    return {
        "name": "Orange shapes",
        "base_version_id": world.base.pk,
        "use": "style",
        "dataset_version_ids": [t.dataset_version_id for t in datasets],
        "resolution": 64,
        "rank": 4,
        "trigger_word": "atlr",
        **BENCH,
        **values,
    }


@pytest.fixture
def api(world: SimpleNamespace, api_client: Any, token_for: Any) -> Any:
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(world.trainer)}")
    return api_client


def test_the_api_warns_at_epsilon_2_on_64_images_and_not_at_epsilon_8_on_256(
    world: SimpleNamespace, api: Any
) -> None:
    # When the trainer estimates the bench's drowned row: 64 images per owner, epsilon 2
    drowned = api.post(API, _body(world, world.small, target_epsilon=2.0), format="json")
    assert drowned.status_code == 200, drowned.content
    advice = drowned.json()["advice"]
    # Then the advice shows the trainer's numbers and says in plain words the signal drowns
    assert advice["level"] == "drowned" and advice["steps"] == 120
    owner = advice["owners"][0]
    assert owner["dataset"] == "Small 1" and owner["examples"] == 64
    assert owner["sample_rate"] == 0.125 and owner["expected_batch"] == 8
    assert owner["noise_multiplier"] == pytest.approx(3.184, abs=0.002)
    assert owner["noise_to_signal"] == pytest.approx(3.184 / 8, abs=0.001)
    assert len(advice["warnings"]) == 2
    assert all("drown the signal" in w for w in advice["warnings"])
    assert "sigma / b" in advice["formula"]
    # And the bench's clear row (256 images per owner, epsilon 8) gets no warning
    clear = api.post(API, _body(world, world.large, target_epsilon=8.0), format="json").json()
    assert clear["advice"]["level"] == "ok" and clear["advice"]["warnings"] == []
    assert clear["advice"]["owners"][1]["noise_multiplier"] == pytest.approx(0.655, abs=0.002)
    # And estimating charges and creates nothing
    assert FederatedJob.objects.count() == 0


def test_no_dp_or_a_bad_dp_setting_gives_no_advice_and_no_crash(
    world: SimpleNamespace, api: Any
) -> None:
    off = api.post(API, _body(world, world.small, dp=False), format="json")
    assert off.status_code == 200 and off.json()["advice"] is None
    # A bad setting is the estimate's problem, not an advice crash
    bad = api.post(API, _body(world, world.small, max_grad_norm=-1.0), format="json").json()
    assert bad["advice"] is None and bad["problems"][0]["code"] == "bad_max_grad_norm"
    # Hostile values: a batch out of range is a problem; an epsilon no noise reaches is advice
    huge = api.post(API, _body(world, world.small, batch_size=10**9), format="json").json()
    assert huge["advice"] is None and huge["problems"][0]["code"] == "bad_batch_size"
    tiny = api.post(API, _body(world, world.small, target_epsilon=1e-7), format="json")
    assert tiny.status_code == 200 and tiny.json()["advice"]["level"] == "drowned"
    assert tiny.json()["advice"]["owners"][0]["noise_multiplier"] is None
    assert "cannot be reached" in tiny.json()["advice"]["warnings"][0]
    # A target above the terms is refused at launch; the advice still tells what it would buy
    above = api.post(API, _body(world, world.small, target_epsilon=50.0), format="json").json()
    assert {p["code"] for p in above["problems"]} == {"epsilon_above_job_budget"}
    assert above["advice"]["target_epsilon"] == 50.0 and above["advice"]["level"] == "ok"


def test_a_batch_larger_than_a_dataset_or_an_empty_dataset_is_a_clear_400(
    world: SimpleNamespace, api: Any
) -> None:
    # A batch of 65 over a dataset of 64
    big = api.post(API, _body(world, world.small, batch_size=65), format="json")
    assert big.status_code == 400
    body = big.json()
    assert body["code"] == "batch_above_dataset"
    assert "at most 64" in body["message"] and "Small 1" in body["message"]
    assert body["details"]["dataset_version_id"] == world.small[0].dataset_version_id
    # A batch equal to the dataset is allowed, and drowned (sampling rate 1)
    whole = api.post(API, _body(world, world.small, batch_size=64), format="json").json()
    assert whole["advice"]["level"] == "drowned"
    assert whole["advice"]["owners"][0]["sample_rate"] == 1.0
    assert any("sampling rate 1" in w for w in whole["advice"]["warnings"])
    # A dataset whose version says it holds no example
    DatasetVersion.objects.filter(pk=world.small[1].dataset_version_id).update(image_count=0)
    empty = api.post(API, _body(world, world.small), format="json")
    assert empty.status_code == 400 and empty.json()["code"] == "dataset_empty"
    assert "Small 2" in empty.json()["message"]


def test_the_wizard_shows_the_advice_and_the_warning(world: SimpleNamespace, client: Any) -> None:
    client.force_login(world.trainer)
    values = {**BENCH, "target_epsilon": 2.0}
    response = client.post("/train/new/", form_data(world, *world.small, **values))
    assert response.status_code == 200
    html = response.content.decode()
    box = re.search(r'<div class="dp-advice.*?bench/RESULTS-utility.md.*?</div>', html, re.S)
    assert box is not None, html
    assert 'data-level="drowned"' in box.group(0) and "DP will drown the signal" in box.group(0)
    assert '<td class="noise-multiplier">3.18' in box.group(0)
    assert '<td class="sample-rate">0.1250</td>' in box.group(0)
    warnings = re.search(r'class="errorlist dp-warnings".*?</ul>', box.group(0), re.S)
    assert warnings is not None and warnings.group(0).count("drown the signal") == 2
    # And at 256 images, epsilon 8: no warning
    values = {**BENCH, "target_epsilon": 8.0}
    html = client.post("/train/new/", form_data(world, *world.large, **values)).content.decode()
    assert 'id="dp-advice" data-level="ok"' in html and "dp-warnings" not in html
    # And a batch larger than a dataset: 400, the message next to that dataset, no advice
    values = {**BENCH, "batch_size": 65}
    bad = client.post("/train/new/", form_data(world, *world.small, **values))
    assert bad.status_code == 400 and "dp-advice" not in bad.content.decode()
    assert "pick a batch of at most 64" in bad.content.decode()
