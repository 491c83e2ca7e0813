"""The node's privacy ledger: budgets, spends, refusals before any step runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from federated.engine import trainer as trainer_module
from federated.engine.dp import AccountantState, DPConfig
from federated.engine.errors import BudgetExceededError, BudgetNotSetError
from federated.engine.ledger import PrivacyLedger
from federated.engine.trainer import TrainConfig, train_round
from sdcore.tiny import TinyModelPaths

from .conftest import LEARNING_CONFIG


def _ledger(tmp_path: Path) -> PrivacyLedger:
    return PrivacyLedger(tmp_path / "ledger.sqlite3")


def _state(steps: int) -> bytes:
    return AccountantState("rdp", [(1.0, 0.5, steps)]).to_bytes()


def test_jobs_compose_by_summing_their_epsilons(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.set_budget("cats", epsilon=10.0, delta=1e-4)
    ledger.charge(
        "cats", "job-1", epsilon_after=3.0, delta=1e-5, steps=5, accountant_state=_state(5)
    )
    ledger.charge(
        "cats", "job-1", epsilon_after=4.0, delta=1e-5, steps=10, accountant_state=_state(10)
    )
    ledger.charge(
        "cats", "job-2", epsilon_after=5.0, delta=1e-5, steps=5, accountant_state=_state(5)
    )
    assert ledger.spent("cats").epsilon == pytest.approx(9.0)
    assert ledger.remaining("cats").epsilon == pytest.approx(1.0)  # type: ignore[union-attr]
    assert ledger.job_spend("cats", "job-1").steps == 10  # type: ignore[union-attr]


def test_a_charge_past_the_budget_is_refused_and_not_recorded(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.set_budget("cats", epsilon=5.0, delta=1e-4)
    ledger.charge(
        "cats", "job-1", epsilon_after=3.0, delta=1e-5, steps=5, accountant_state=_state(5)
    )
    with pytest.raises(BudgetExceededError, match="over its budget of 5"):
        ledger.charge(
            "cats", "job-2", epsilon_after=2.5, delta=1e-5, steps=5, accountant_state=_state(5)
        )
    assert [s.job for s in ledger.spends("cats")] == ["job-1"]


def test_a_dataset_without_a_budget_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BudgetNotSetError):
        _ledger(tmp_path).check("dogs", "job", epsilon_after=0.1, delta=1e-6)


def test_the_ledger_persists_across_instances(tmp_path: Path) -> None:
    _ledger(tmp_path).set_budget("cats", epsilon=2.0, delta=1e-5)
    assert _ledger(tmp_path).budget("cats").epsilon == 2.0  # type: ignore[union-attr]


def _config(dp: DPConfig | None) -> TrainConfig:
    return TrainConfig(
        resolution=LEARNING_CONFIG.resolution,
        adapter=LEARNING_CONFIG.adapter,
        batch_size=8,
        local_steps=4,
        learning_rate=LEARNING_CONFIG.learning_rate,
        device="cpu",
        dp=dp,
    )


def _forbid_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded: training started")

    monkeypatch.setattr(trainer_module, "load_base", refuse)


def test_train_round_past_the_budget_is_refused_before_any_step(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: TinyModelPaths,
    small_datasets: list[Path],
) -> None:
    # Given a budget of epsilon 1 and a call whose 4 steps at sigma 0.6 would pass it
    ledger = _ledger(tmp_path)
    ledger.set_budget("owner-a", epsilon=1.0, delta=1e-4)
    _forbid_training(monkeypatch)
    # When the round is asked for / Then it is refused, nothing loaded, nothing recorded
    with pytest.raises(BudgetExceededError, match="nothing was trained"):
        train_round(
            _config(DPConfig(noise_multiplier=0.6, max_grad_norm=0.05)),
            base_model=tiny_model.diffusers_dir,
            dataset=small_datasets[0],
            cache_dir=tmp_path,
            adapter_in=None,
            accountant_state=None,
            ledger=ledger,
            job_id="job-x",
            dataset_key="owner-a",
        )
    assert ledger.spends("owner-a") == []


def test_non_private_training_on_a_ledgered_dataset_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: TinyModelPaths,
    small_datasets: list[Path],
) -> None:
    ledger = _ledger(tmp_path)
    ledger.set_budget("owner-a", epsilon=100.0, delta=1e-4)
    _forbid_training(monkeypatch)
    with pytest.raises(BudgetExceededError, match="trains only with DP"):
        train_round(
            _config(None),
            base_model=tiny_model.diffusers_dir,
            dataset=small_datasets[0],
            cache_dir=tmp_path,
            adapter_in=None,
            accountant_state=None,
            ledger=ledger,
            job_id="job-x",
            dataset_key="owner-a",
        )


def test_the_ledger_keeps_the_accountant_even_if_the_server_sends_none(
    tmp_path: Path, tiny_model: TinyModelPaths, small_datasets: list[Path], engine_cache_dir: Path
) -> None:
    # Given a job that ran one DP round on a ledgered dataset
    ledger = _ledger(tmp_path)
    ledger.set_budget("owner-a", epsilon=50.0, delta=1e-4)
    config = _config(DPConfig(noise_multiplier=1.0, max_grad_norm=0.05))
    kwargs = dict(
        base_model=tiny_model.diffusers_dir,
        dataset=small_datasets[0],
        cache_dir=engine_cache_dir,
        adapter_in=None,
        ledger=ledger,
        job_id="job-y",
        dataset_key="owner-a",
    )
    first = train_round(config, accountant_state=None, **kwargs)  # type: ignore[arg-type]
    # When the next round arrives without the accountant state (a forgetful server)
    second = train_round(config, accountant_state=None, **kwargs)  # type: ignore[arg-type]
    # Then the ledger's state is used: the epsilon keeps growing and is recorded
    assert second.total_steps == 2 * config.local_steps
    assert second.epsilon > first.epsilon  # type: ignore[operator]
    assert ledger.job_spend("owner-a", "job-y").epsilon == pytest.approx(second.epsilon)  # type: ignore[union-attr]
