"""Training rounds on the tiny model: learning with and without DP, checks, chaining."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from federated.engine.errors import AdapterCheckError, ConfigError
from federated.engine.evaluate import evaluate_adapter, pipeline_with_adapter, sample_grid
from federated.engine.trainer import (
    LoadedBase,
    RoundResult,
    TrainConfig,
    _check_adapter,
    train_round,
)
from sdcore.tiny import TinyModelPaths

from .conftest import LEARNING_CONFIG, MODERATE_DP, TRAIN_RESOLUTION


def _train(
    config: TrainConfig, tiny_model: TinyModelPaths, dataset: Path, cache_dir: Path
) -> RoundResult:
    return train_round(
        config,
        base_model=tiny_model.diffusers_dir,
        dataset=dataset,
        cache_dir=cache_dir,
        adapter_in=None,
        accountant_state=None,
        ledger=None,
        job_id="learn",
    )


@pytest.fixture(scope="module")
def plain_round(
    tiny_model: TinyModelPaths, concept_dataset: Path, engine_cache_dir: Path
) -> RoundResult:
    return _train(LEARNING_CONFIG, tiny_model, concept_dataset, engine_cache_dir)


@pytest.fixture(scope="module")
def dp_round(
    tiny_model: TinyModelPaths, concept_dataset: Path, engine_cache_dir: Path
) -> RoundResult:
    config = dataclasses.replace(LEARNING_CONFIG, dp=MODERATE_DP)
    return _train(config, tiny_model, concept_dataset, engine_cache_dir)


def _heldout_loss(base: LoadedBase, heldout: Path, cache_dir: Path, adapter: dict | None) -> float:  # type: ignore[type-arg]
    return evaluate_adapter(
        base.pipe,
        dataset=heldout,
        cache_dir=cache_dir,
        resolution=TRAIN_RESOLUTION,
        model_hash=base.fingerprint,
        spec=LEARNING_CONFIG.adapter,
        adapter=adapter,
    )


def test_training_lowers_the_heldout_validation_loss(
    plain_round: RoundResult, tiny_base: LoadedBase, heldout_dataset: Path, engine_cache_dir: Path
) -> None:
    base_loss = _heldout_loss(tiny_base, heldout_dataset, engine_cache_dir, None)
    trained = _heldout_loss(tiny_base, heldout_dataset, engine_cache_dir, dict(plain_round.adapter))
    print(f"held-out loss: base {base_loss:.4f}, trained {trained:.4f}")
    assert trained < 0.95 * base_loss


def test_dp_training_at_epsilon_8_lowers_the_heldout_validation_loss(
    dp_round: RoundResult, tiny_base: LoadedBase, heldout_dataset: Path, engine_cache_dir: Path
) -> None:
    base_loss = _heldout_loss(tiny_base, heldout_dataset, engine_cache_dir, None)
    trained = _heldout_loss(tiny_base, heldout_dataset, engine_cache_dir, dict(dp_round.adapter))
    print(f"held-out loss, DP epsilon {dp_round.epsilon:.2f}: {base_loss:.4f} -> {trained:.4f}")
    assert dp_round.epsilon is not None and 7.5 < dp_round.epsilon <= 8.0
    assert trained < 0.99 * base_loss


def test_the_adapter_changes_the_image_for_a_fixed_seed(
    plain_round: RoundResult, tiny_base: LoadedBase
) -> None:
    def image(pipe: object) -> np.ndarray:
        out = pipe(  # type: ignore[operator]
            "a photo of sks red circle",
            num_inference_steps=4,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )
        return np.asarray(out.images[0])

    adapted = pipeline_with_adapter(tiny_base.pipe, LEARNING_CONFIG.adapter, plain_round.adapter)
    difference = np.abs(image(adapted) - image(tiny_base.pipe)).mean()
    assert difference > 1e-3


def test_the_round_reports_what_it_did(plain_round: RoundResult) -> None:
    assert plain_round.num_examples == 128
    assert plain_round.steps == plain_round.total_steps == LEARNING_CONFIG.local_steps
    assert plain_round.epsilon is None and plain_round.accountant_state is None
    metrics = plain_round.metrics()
    assert metrics["epsilon"] == -1.0 and metrics["num-examples"] == 128
    assert all(isinstance(v, int | float | str) for v in metrics.values())


def test_a_second_round_starts_from_the_adapter_it_is_given(
    plain_round: RoundResult,
    tiny_model: TinyModelPaths,
    concept_dataset: Path,
    engine_cache_dir: Path,
) -> None:
    config = dataclasses.replace(LEARNING_CONFIG, local_steps=1, learning_rate=1e-6)
    result = train_round(
        config,
        base_model=tiny_model.diffusers_dir,
        dataset=concept_dataset,
        cache_dir=engine_cache_dir,
        adapter_in=dict(plain_round.adapter),
        accountant_state=None,
        ledger=None,
        job_id="learn",
        round_index=1,
    )
    start = np.concatenate([v.ravel() for v in plain_round.adapter.values()])
    end = np.concatenate([v.ravel() for v in result.adapter.values()])
    assert np.abs(end - start).max() < 1e-4 < np.abs(start).max()


def test_an_adapter_that_did_not_change_fails_loudly(
    tiny_base: LoadedBase, plain_round: RoundResult
) -> None:
    arrays = plain_round.adapter
    with pytest.raises(AdapterCheckError, match="did not change"):
        _check_adapter(arrays, arrays, tiny_base.pipe.unet, None)  # type: ignore[arg-type]


def test_a_non_finite_adapter_fails_loudly(tiny_base: LoadedBase, plain_round: RoundResult) -> None:
    broken = type(plain_round.adapter)((k, v.copy()) for k, v in plain_round.adapter.items())
    next(iter(broken.values()))[0, 0] = np.inf
    with pytest.raises(AdapterCheckError, match="not finite"):
        _check_adapter(plain_round.adapter, broken, tiny_base.pipe.unet, None)  # type: ignore[arg-type]


def test_the_config_round_trips_through_a_dict() -> None:
    config = dataclasses.replace(LEARNING_CONFIG, dp=MODERATE_DP)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_inconsistent_configs_are_refused() -> None:
    with pytest.raises(ConfigError):
        TrainConfig(resolution=30)
    # several noise draws under DP need opacus's hooks mode: an explicit ew is refused, while
    # the default 'auto' picks hooks for them
    ew = dataclasses.replace(MODERATE_DP, grad_sample_mode="ew")
    with pytest.raises(ConfigError, match="hooks"):
        dataclasses.replace(LEARNING_CONFIG, dp=ew, noise_draws=2)
    assert MODERATE_DP.grad_sample_mode == "auto"
    dataclasses.replace(LEARNING_CONFIG, dp=MODERATE_DP, noise_draws=2)


def test_sample_grid_writes_one_cell_per_prompt_and_seed(
    plain_round: RoundResult, tiny_base: LoadedBase, tmp_path: Path
) -> None:
    adapted = pipeline_with_adapter(tiny_base.pipe, LEARNING_CONFIG.adapter, plain_round.adapter)
    path = sample_grid(
        adapted,
        ["sks red circle", "a photo of sks"],
        [0, 1, 2],
        out_path=tmp_path / "grid.png",
        num_inference_steps=2,
    )
    from PIL import Image

    with Image.open(path) as grid:
        assert grid.size == (3 * 64, 2 * 64)
