"""DP-SGD wiring: epsilon equals opacus' accountant, state spans rounds, noise from a target."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from torch import nn

from federated.engine.dp import (
    AccountantState,
    DPConfig,
    epsilon_after,
    make_private,
    resolve_noise_multiplier,
    sample_rate,
    take_empty_step,
)
from federated.engine.errors import ConfigError
from federated.engine.trainer import RoundResult, TrainConfig, train_round
from sdcore.tiny import TinyModelPaths

from .conftest import LEARNING_CONFIG

DP_STEPS = 6


def _dp_round(
    tiny_model: TinyModelPaths,
    dataset: Path,
    cache_dir: Path,
    *,
    dp: DPConfig,
    state: bytes | None = None,
    adapter: dict | None = None,  # type: ignore[type-arg]
) -> RoundResult:
    config = TrainConfig(
        resolution=LEARNING_CONFIG.resolution,
        adapter=LEARNING_CONFIG.adapter,
        learning_rate=LEARNING_CONFIG.learning_rate,
        batch_size=8,
        local_steps=DP_STEPS,
        device="cpu",
        dp=dp,
    )
    return train_round(
        config,
        base_model=tiny_model.diffusers_dir,
        dataset=dataset,
        cache_dir=cache_dir,
        adapter_in=adapter,
        accountant_state=state,
        ledger=None,
        job_id="dp-test",
    )


@pytest.mark.parametrize("accountant_cls", [RDPAccountant, PRVAccountant])
def test_reported_epsilon_equals_opacus_accountant_for_the_same_rate_noise_and_steps(
    tiny_model: TinyModelPaths,
    small_datasets: list[Path],
    engine_cache_dir: Path,
    accountant_cls: type,
) -> None:
    # Given a DP round with a fixed noise multiplier on 16 examples, batch 8
    mechanism = accountant_cls.mechanism()
    dp = DPConfig(noise_multiplier=1.1, max_grad_norm=0.05, accountant=mechanism)
    result = _dp_round(tiny_model, small_datasets[0], engine_cache_dir, dp=dp)
    # When opacus' accountant is stepped the same way, independently
    reference = accountant_cls()
    for _ in range(DP_STEPS):
        reference.step(noise_multiplier=1.1, sample_rate=8 / 16)
    # Then the epsilon reported is the accountant's
    assert result.sample_rate == 0.5
    assert result.steps == DP_STEPS
    assert result.epsilon == pytest.approx(reference.get_epsilon(delta=dp.target_delta), rel=1e-9)


def test_the_accountant_spans_rounds(
    tiny_model: TinyModelPaths, small_datasets: list[Path], engine_cache_dir: Path
) -> None:
    # Given two rounds, the second continuing the first's accountant state and adapter
    dp = DPConfig(noise_multiplier=1.1, max_grad_norm=0.05)
    first = _dp_round(tiny_model, small_datasets[0], engine_cache_dir, dp=dp)
    second = _dp_round(
        tiny_model,
        small_datasets[0],
        engine_cache_dir,
        dp=dp,
        state=first.accountant_state,
        adapter=dict(first.adapter),
    )
    # Then the second reports the epsilon of all steps of both rounds
    reference = RDPAccountant()
    reference.history = [(1.1, 0.5, 2 * DP_STEPS)]
    assert second.total_steps == 2 * DP_STEPS
    assert second.epsilon == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-9)
    assert second.epsilon > first.epsilon


def test_noise_from_a_target_reaches_the_target_over_the_planned_rounds() -> None:
    # Given a target of epsilon 4 over 3 rounds of 20 steps at rate 1/8
    dp = DPConfig(target_epsilon=4.0, target_delta=1e-5, planned_rounds=3)
    sigma = resolve_noise_multiplier(dp, sample_rate=1 / 8, total_steps=60)
    # When the whole job is accounted
    spent = epsilon_after(
        AccountantState("rdp"), noise_multiplier=sigma, sample_rate=1 / 8, steps=60, delta=1e-5
    )
    # Then it stays within the target and close to it
    assert 3.9 <= spent <= 4.0


def test_epsilon_after_is_what_the_accountant_reports_after_stepping() -> None:
    state = AccountantState("rdp", [(1.3, 0.25, 10)])
    planned = epsilon_after(state, noise_multiplier=1.3, sample_rate=0.25, steps=5, delta=1e-5)
    accountant = state.accountant()
    for _ in range(5):
        accountant.step(noise_multiplier=1.3, sample_rate=0.25)
    assert planned == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-12)


def test_accountant_state_round_trips_through_bytes() -> None:
    state = AccountantState("prv", [(1.0, 0.5, 3), (2.0, 0.25, 4)])
    again = AccountantState.from_bytes(state.to_bytes())
    assert again == state
    assert again.steps == 7
    with pytest.raises(ConfigError):
        AccountantState.from_bytes(b"{oops")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"noise_multiplier": 1.0, "target_epsilon": 2.0}, {"noise_multiplier": -1.0}],
)
def test_dp_config_needs_exactly_one_valid_noise_source(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        DPConfig(**kwargs)


def test_sample_rate_is_one_over_the_number_of_batches() -> None:
    assert sample_rate(16, 8) == 0.5
    assert sample_rate(17, 8) == pytest.approx(1 / 3)


@pytest.mark.parametrize("mode", ["hooks", "ew", "ghost"])
def test_an_empty_poisson_batch_still_takes_a_noised_accounted_step(mode: str) -> None:
    # Given a private linear model
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    dp = DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, grad_sample_mode=mode)  # type: ignore[arg-type]
    private = make_private(
        model,
        optimizer,
        n_examples=4,
        batch_size=2,
        dp=dp,
        noise_multiplier=1.0,
        state=None,
        seed=0,
    )
    before = [p.detach().clone() for p in model.parameters()]
    # When the batch is empty
    take_empty_step(private, list(model.parameters()))
    # Then the weights moved (noise) and the accountant counted the step
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert AccountantState.from_accountant(private.accountant).steps == 1
