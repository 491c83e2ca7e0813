"""The job options for aspect-ratio buckets and text-encoder LoRA reach every node's trainer."""

from __future__ import annotations

from typing import Any

import pytest

from federated.services.jobs import job_estimate, job_run_config
from registry.models import BaseModelFamily

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")


@pytest.fixture
def world(fed: Any) -> dict[str, Any]:
    return {
        "trainer": fed.user("trainer", credits=10_000),
        "base": fed.base_version(fed.user("creator")),
        "d1": fed.dataset(fed.user("owner1"), count=10, price_per_example_round=1),
        "d2": fed.dataset(fed.user("owner2"), count=10, price_per_example_round=1),
    }


def test_the_options_default_to_buckets_on_and_no_text_encoder_lora(fed: Any, world: Any) -> None:
    from federated.engine.flower.settings import train_config_from_run_config

    job = fed.launch(world["trainer"], fed.spec(world["base"], [world["d1"], world["d2"]]))
    config = job_run_config(job=job)
    assert (config["buckets"], config["text-encoder-lora"]) == (True, False)
    train = train_config_from_run_config(config)
    assert train.buckets and not train.adapter.text_encoder


def test_a_job_turns_buckets_off_and_text_encoder_lora_on(fed: Any, world: Any) -> None:
    from federated.engine.flower.settings import train_config_from_run_config

    spec = fed.spec(
        world["base"], [world["d1"], world["d2"]], buckets=False, text_encoder_lora=True
    )
    config = job_run_config(job=fed.launch(world["trainer"], spec))
    train = train_config_from_run_config(config)
    assert not train.buckets and train.adapter.text_encoder


def test_text_encoder_lora_on_a_base_it_does_not_support_is_a_problem(fed: Any, world: Any) -> None:
    base = world["base"]
    base.base_model = BaseModelFamily.SD3
    base.save(update_fields=["base_model"])
    spec = fed.spec(base, [world["d1"], world["d2"]], text_encoder_lora=True)
    codes = [p["code"] for p in job_estimate(trainer=world["trainer"], spec=spec).problems]
    assert "text_encoder_lora_family" in codes
    spec = fed.spec(base, [world["d1"], world["d2"]])
    codes = [p["code"] for p in job_estimate(trainer=world["trainer"], spec=spec).problems]
    assert "text_encoder_lora_family" not in codes
