"""A LoRA trained on the owners' concept data raises the concept score of the shapes base
(the trainer's own train_round, as a node runs it; settings of bench/utility.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from federated.engine.adapter import AdapterSpec
from federated.engine.evaluate import pipeline_with_adapter
from federated.engine.synthetic import generate_concept_dataset
from federated.engine.trainer import TrainConfig, load_base, train_round
from sdcore.concept import measure_concept
from sdcore.shapes import CONCEPT_COLOUR, SHAPES_MODEL_DIR


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_a_lora_on_the_concept_data_raises_the_concept_score(tmp_path: Path) -> None:
    # Given an owner's concept data (orange figures captioned with the trigger word)
    data = generate_concept_dataset(tmp_path / "data", n_images=64, seed=100)
    spec = AdapterSpec(rank=4, alpha=4.0)
    config = TrainConfig(
        resolution=64,
        adapter=spec,
        learning_rate=1e-2,
        batch_size=8,
        local_steps=120,
        device="cpu",
        mixed_precision="no",
    )

    # When a LoRA is trained on it, as a node trains one
    result = train_round(
        config,
        base_model=SHAPES_MODEL_DIR,
        dataset=data,
        cache_dir=tmp_path / "cache",
        adapter_in=None,
        accountant_state=None,
        ledger=None,
        job_id="concept-test",
    )
    base = load_base(
        SHAPES_MODEL_DIR, device=torch.device("cpu"), dtype=torch.float32, cache_dir=tmp_path
    )
    base.pipe.set_progress_bar_config(disable=True)
    before = measure_concept(base.pipe, seeds=(0, 1))
    after = measure_concept(pipeline_with_adapter(base.pipe, spec, result.adapter), seeds=(0, 1))

    # Then the base draws no concept figure for the trigger prompts and base + LoRA draws some
    # (bench/RESULTS-utility.md: 0 of 36 against 11 of 36 with two owners' data)
    assert before.colour == after.colour == CONCEPT_COLOUR
    assert before.score == 0.0, before.to_dict()
    assert after.score >= 2 / 18, after.to_dict()
