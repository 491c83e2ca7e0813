"""Advice before spending privacy (issue #13): the noise multiplier, sampling rate and
noise-to-signal ratio of each owner's DP-SGD, checked against bench/RESULTS-utility.md."""

from __future__ import annotations

import math

import pytest

from federated.engine.dp import DPConfig, resolve_noise_multiplier, sample_rate
from federated.engine.dp_advice import DROWNED_NSR, TINY_DATASET, WEAK_NSR, dp_advice
from federated.engine.errors import ConfigError

# The utility bench's settings: batch 8, 3 rounds x 40 steps, clipping 0.05, delta 1e-5.
BENCH = {"batch_size": 8, "rounds": 3, "local_steps": 40, "max_grad_norm": 0.05, "delta": 1e-5}


def _two_owners(images: int) -> list[tuple[int, str, int]]:
    return [(1, "owner 1", images), (2, "owner 2", images)]


def test_the_warning_fires_at_epsilon_2_on_64_images_and_not_at_epsilon_8_on_256() -> None:
    # Given the bench's settings, 64 images per owner at epsilon 2 (concept score 0.00)
    drowned = dp_advice(_two_owners(64), target_epsilon=2.0, **BENCH)
    # Then the advice says the noise drowns the signal, for each owner, in plain words
    assert drowned.level == "drowned"
    assert [o.level for o in drowned.owners] == ["drowned", "drowned"]
    assert len(drowned.warnings) == 2 and "drown the signal" in drowned.warnings[0]
    # And 256 images per owner at epsilon 8 (concept score 0.19, clear) gets no warning
    clear = dp_advice(_two_owners(256), target_epsilon=8.0, **BENCH)
    assert clear.level == "ok" and clear.warnings == []
    # And 64 images at epsilon 8 (0.11, a third of the non-private score) is "weak"
    weak = dp_advice(_two_owners(64), target_epsilon=8.0, **BENCH)
    assert weak.level == "weak" and "weak" in weak.warnings[0]


def test_the_numbers_are_the_benchs_noise_multipliers_and_sampling_rates() -> None:
    # The table's rows: (images, epsilon, noise multiplier, sampling rate)
    for images, epsilon, sigma, q in [
        (64, 8.0, 1.184, 0.125),
        (64, 2.0, 3.184, 0.125),
        (256, 8.0, 0.655, 0.03125),
        (1024, 8.0, 0.486, 0.0078125),
    ]:
        owner = dp_advice(_two_owners(images), target_epsilon=epsilon, **BENCH).owners[0]
        assert owner.sample_rate == pytest.approx(q)
        assert owner.expected_batch == pytest.approx(8.0)
        assert owner.noise_multiplier == pytest.approx(sigma, abs=0.002)
        # NSR = sigma / b, and the per-coordinate noise std is sigma * C / b
        assert owner.noise_to_signal == pytest.approx(sigma / 8, abs=0.001)
        assert owner.noise_std == pytest.approx(sigma * 0.05 / 8, abs=1e-4)
    # The thresholds sit between the bench's clear, weak and drowned rows
    assert 0.082 < WEAK_NSR < 0.148 < DROWNED_NSR < 0.398


def test_the_noise_multiplier_is_the_trainers() -> None:
    # The trainer: sample_rate(n, B), then resolve_noise_multiplier over rounds x local steps
    q = sample_rate(100, 7)
    expected = resolve_noise_multiplier(
        DPConfig(target_epsilon=3.0, target_delta=1e-6, max_grad_norm=0.5, planned_rounds=4),
        sample_rate=q,
        total_steps=4 * 25,
    )
    advice = dp_advice(
        [(9, "d", 100)],
        batch_size=7,
        rounds=4,
        local_steps=25,
        max_grad_norm=0.5,
        target_epsilon=3.0,
        delta=1e-6,
    )
    owner = advice.owners[0]
    assert owner.noise_multiplier == expected
    assert owner.sample_rate == q == 1 / 15 and advice.steps == 100
    assert owner.expected_batch == pytest.approx(100 / 15)


def test_sampling_rate_1_and_tiny_datasets_are_drowned_whatever_the_ratio() -> None:
    # Given the demo's datasets: 16 images per owner, batch 16 (sampling rate 1)
    advice = dp_advice(
        _two_owners(16),
        batch_size=16,
        rounds=3,
        local_steps=10,
        max_grad_norm=0.05,
        target_epsilon=8.0,
        delta=1e-5,
    )
    owner = advice.owners[0]
    assert owner.sample_rate == 1.0 and advice.level == "drowned"
    assert any("sampling rate 1" in w for w in owner.warnings)
    assert any(f"fewer than {TINY_DATASET}" in w for w in owner.warnings)
    # And one tiny owner makes the whole job's level drowned, the big one stays ok
    mixed = dp_advice(
        [(1, "big", 4096), (2, "tiny", 20)], target_epsilon=8.0, **{**BENCH, "batch_size": 4}
    )
    assert [o.level for o in mixed.owners] == ["ok", "drowned"] and mixed.level == "drowned"
    assert all("'tiny'" in w for w in mixed.warnings)


def test_an_unreachable_epsilon_is_advice_not_a_crash() -> None:
    advice = dp_advice(
        _two_owners(64),
        batch_size=64,
        rounds=100,
        local_steps=100,
        max_grad_norm=1.0,
        target_epsilon=0.001,
        delta=1e-5,
    )
    owner = advice.owners[0]
    assert owner.noise_multiplier is None and owner.noise_to_signal is None
    assert advice.level == "drowned" and "cannot be reached" in owner.warnings[0]


@pytest.mark.parametrize(
    ("datasets", "values", "code"),
    [
        ([(1, "empty", 0)], {}, "dataset_empty"),
        ([(1, "small", 5)], {"batch_size": 6}, "batch_above_dataset"),
        ([], {}, "config_invalid"),
        ([(1, "d", 64)], {"batch_size": 0}, "config_invalid"),
        ([(1, "d", 64)], {"local_steps": 0}, "config_invalid"),
        ([(1, "d", 64)], {"max_grad_norm": 0.0}, "config_invalid"),
        ([(1, "d", 64)], {"max_grad_norm": math.nan}, "config_invalid"),
        ([(1, "d", 64)], {"target_epsilon": -1.0}, "config_invalid"),
        ([(1, "d", 64)], {"delta": 1.0}, "config_invalid"),
    ],
)
def test_bad_input_is_a_config_error_with_a_code(
    datasets: list[tuple[int, str, int]], values: dict[str, float], code: str
) -> None:
    settings = {**BENCH, "target_epsilon": 8.0, **values}
    with pytest.raises(ConfigError) as err:
        dp_advice(datasets, **settings)  # type: ignore[arg-type]
    assert err.value.code == code
