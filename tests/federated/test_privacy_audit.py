"""The privacy audit's statistics, canaries and attack (issue #17).

The statistics are checked on known cases (a Clopper-Pearson interval and a one-run bound in
closed form), for monotonicity (a better attack never lowers the bound) and on bad inputs
(refused with a ValueError). The canaries and the attack run on a tiny random-weight model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federated.audit.stats import (
    attack_auc,
    clopper_pearson,
    clopper_pearson_epsilon_lower_bound,
    one_run_epsilon_lower_bound,
)


def _coins(m: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(m) < 0.5


# --- known cases -----------------------------------------------------------------------------


def test_clopper_pearson_known_values() -> None:
    # 0 of n: the upper end solves (1 - p)^n = alpha/2; n of n: p^n = alpha/2.
    low, high = clopper_pearson(0, 10, 0.95)
    assert low == 0.0
    assert high == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-9)
    low, high = clopper_pearson(10, 10, 0.95)
    assert low == pytest.approx(0.025 ** (1 / 10), rel=1e-9) and high == 1.0
    low, high = clopper_pearson(5, 10, 0.95)
    assert low == pytest.approx(0.18709, abs=1e-4) and high == pytest.approx(0.81291, abs=1e-4)


def test_one_run_bound_known_case() -> None:
    """10 guesses, all right, delta 0: the bound solves p^10 = 0.05, eps = log(p / (1 - p))."""
    members = _coins(64)
    scores = members.astype(float)
    bound = one_run_epsilon_lower_bound(scores, members, delta=0.0, guesses=[10])
    p = 0.05 ** (1 / 10)
    assert bound.epsilon == pytest.approx(math.log(p / (1 - p)), abs=1e-4)
    assert bound.detail["correct"] == 10 and bound.detail["guesses"] == 10


def test_auc_known_cases() -> None:
    members = np.array([True, True, False, False])
    assert attack_auc([3, 4, 1, 2], members) == 1.0
    assert attack_auc([1, 2, 3, 4], members) == 0.0
    assert attack_auc([1, 1, 1, 1], members) == 0.5  # ties count one half
    assert attack_auc([4, 1, 3, 2], members) == 0.5


def test_random_scores_give_no_bound() -> None:
    """Scores independent of membership: no lower bound above 0 (at 95%) on these seeds."""
    for seed in range(5):
        members = _coins(64, seed)
        scores = np.random.default_rng(100 + seed).normal(size=64)
        assert one_run_epsilon_lower_bound(scores, members).epsilon == 0.0
        assert clopper_pearson_epsilon_lower_bound(scores, members).epsilon < 0.5
        assert 0.25 < attack_auc(scores, members) < 0.75


def test_perfect_attack_bound_is_limited_by_the_canaries() -> None:
    """Even a perfect attack proves little with few canaries: the bound grows with m."""
    bounds = []
    for m in (16, 64, 256):
        members = _coins(m, 1)
        bounds.append(one_run_epsilon_lower_bound(members.astype(float), members).epsilon)
    assert 0 < bounds[0] < bounds[1] < bounds[2]
    assert bounds[1] < 3.0  # 64 canaries cannot show much more than eps ~2


# --- monotonicity ----------------------------------------------------------------------------


def test_bounds_grow_with_the_separation() -> None:
    members = _coins(128, 2)
    noise = np.random.default_rng(3).normal(size=128)
    one_run, cp, auc = [], [], []
    for shift in (0.0, 1.0, 2.0, 4.0):
        scores = noise + shift * members
        one_run.append(one_run_epsilon_lower_bound(scores, members).epsilon)
        cp.append(clopper_pearson_epsilon_lower_bound(scores, members).epsilon)
        auc.append(attack_auc(scores, members))
    assert one_run == sorted(one_run) and one_run[-1] > one_run[0]
    assert cp == sorted(cp) and cp[-1] > 1.0
    assert auc == sorted(auc) and auc[-1] > 0.95


def test_higher_confidence_lowers_the_bound() -> None:
    members = _coins(128, 4)
    scores = np.random.default_rng(5).normal(size=128) + 2.0 * members
    at_90 = one_run_epsilon_lower_bound(scores, members, confidence=0.9).epsilon
    at_99 = one_run_epsilon_lower_bound(scores, members, confidence=0.99).epsilon
    assert 0 < at_99 < at_90
    cp_90 = clopper_pearson_epsilon_lower_bound(scores, members, confidence=0.9).epsilon
    cp_99 = clopper_pearson_epsilon_lower_bound(scores, members, confidence=0.99).epsilon
    assert 0 < cp_99 < cp_90


def test_a_larger_delta_lowers_the_bound() -> None:
    members = _coins(64, 6)
    scores = members.astype(float)
    assert (
        one_run_epsilon_lower_bound(scores, members, delta=1e-2).epsilon
        < one_run_epsilon_lower_bound(scores, members, delta=0.0).epsilon
    )


# --- bad inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "members", "kwargs"),
    [
        ([], [], {}),
        ([1.0, 2.0], [True], {}),
        ([1.0, float("nan")], [True, False], {}),
        ([1.0, 2.0], [2, 0], {}),
        ([1.0, 2.0], [True, False], {"confidence": 1.0}),
        ([1.0, 2.0], [True, False], {"confidence": 0.3}),
        ([1.0, 2.0], [True, False], {"delta": -0.1}),
        ([1.0, 2.0], [True, False], {"delta": 1.0}),
    ],
)
def test_bad_inputs_are_refused(scores: Any, members: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        one_run_epsilon_lower_bound(scores, members, **kwargs)
    with pytest.raises(ValueError):
        clopper_pearson_epsilon_lower_bound(scores, members, **kwargs)


def test_one_class_is_refused_where_it_must_be() -> None:
    with pytest.raises(ValueError, match="member"):
        attack_auc([1.0, 2.0], [True, True])
    with pytest.raises(ValueError, match="member"):
        clopper_pearson_epsilon_lower_bound([1.0, 2.0], [False, False])
    with pytest.raises(ValueError):
        one_run_epsilon_lower_bound([1.0, 2.0], [True, False], guesses=[3])
    with pytest.raises(ValueError):
        clopper_pearson(11, 10, 0.95)


# --- canaries --------------------------------------------------------------------------------


def test_canaries_are_distinct_deterministic_and_inserted_by_coin(tmp_path: Path) -> None:
    from federated.audit.canaries import insert_canaries, make_canaries
    from federated.engine.dataset import read_dataset
    from federated.engine.synthetic import generate_concept_dataset

    canaries = make_canaries(24, seed=3)
    again = make_canaries(24, seed=3)
    assert [c.caption for c in canaries] == [c.caption for c in again]
    assert np.array_equal(np.asarray(canaries[5].image), np.asarray(again[5].image))
    assert len({c.caption.split()[1] for c in canaries}) == 24  # a word of its own each
    assert len({np.asarray(c.image).tobytes() for c in canaries}) == 24
    own = generate_concept_dataset(tmp_path / "own", n_images=4, seed=1)
    data, canary_set = insert_canaries(own, tmp_path / "owner", canaries, include_seed=9)
    inside = int(sum(canary_set.members))
    assert 0 < inside < 24  # fair coins (this seed gives both)
    scan = read_dataset(data)
    assert len(scan) == 4 + inside
    captions = {e.caption for e in scan.examples}
    for canary, member in zip(canaries, canary_set.members, strict=True):
        assert (canary.caption in captions) == member
    assert len(read_dataset(canary_set.all_dir)) == 24
    with pytest.raises(ValueError):
        make_canaries(0)
    with pytest.raises(ValueError):
        insert_canaries(own, tmp_path / "x", canaries, include_seed=1, probability=1.0)


# --- the attack and the bench's statistics on a tiny run ------------------------------------


@pytest.mark.slow
def test_attack_on_a_tiny_run(tmp_path: Path) -> None:
    """One short round (no DP) on a tiny random-weight model with 8 canaries: the scores are
    per canary, in the canaries' order, exactly base loss minus adapted loss; an all-zero
    adapter (or the adapter as its own reference) scores 0; the bench's statistics run on them.

    Bounded: a 32x32 tiny model, 4 steps, one timestep draw. Whether the attack succeeds is
    the benchmark's question (bench/RESULTS-privacy.md), not this test's.
    """
    import torch

    from bench.privacy_audit import audit_scores, table
    from federated.audit.attack import adapter_losses, membership_scores
    from federated.audit.canaries import insert_canaries, make_canaries
    from federated.engine.adapter import AdapterSpec
    from federated.engine.trainer import TrainConfig, load_base, train_round
    from sdcore.tiny import save_tiny_model

    torch.set_num_threads(1)
    model = save_tiny_model(tmp_path / "model").diffusers_dir
    empty = tmp_path / "empty"
    empty.mkdir()
    canaries = make_canaries(8, seed=0, resolution=32)
    data, canary_set = insert_canaries(empty, tmp_path / "owner", canaries, include_seed=0)
    spec = AdapterSpec(rank=2, alpha=2.0, mode="lora")
    config = TrainConfig(
        resolution=32,
        adapter=spec,
        learning_rate=1e-2,
        batch_size=4,
        local_steps=4,
        device="cpu",
        mixed_precision="no",
    )
    cache = tmp_path / "cache"
    result = train_round(
        config,
        base_model=model,
        dataset=data,
        cache_dir=cache,
        adapter_in=None,
        accountant_state=None,
        ledger=None,
        job_id="audit-test",
    )
    base = load_base(model, device=torch.device("cpu"), dtype=torch.float32, cache_dir=cache)
    common: dict[str, Any] = {
        "canaries_dir": canary_set.all_dir,
        "cache_dir": cache,
        "model_hash": base.fingerprint,
        "resolution": 32,
        "draws": 1,
    }
    scores, names = membership_scores(base.pipe, spec=spec, adapter=result.adapter, **common)
    assert names == [f"canary-{i:05d}.png" for i in range(8)]
    base_loss, _ = adapter_losses(base.pipe, spec=None, adapter=None, **common)
    adapted_loss, _ = adapter_losses(base.pipe, spec=spec, adapter=result.adapter, **common)
    assert np.allclose(scores, base_loss - adapted_loss, rtol=0, atol=1e-6)
    assert np.isfinite(scores).all() and np.abs(scores).max() > 0  # the adapter changed things
    zero = {k: np.zeros_like(v) for k, v in result.adapter.items()}
    flat, _ = membership_scores(base.pipe, spec=spec, adapter=zero, **common)
    assert np.abs(flat).max() < 1e-6
    itself, _ = membership_scores(
        base.pipe, spec=spec, adapter=result.adapter, reference=result.adapter, **common
    )
    assert np.abs(itself).max() < 1e-6

    members = np.asarray(canary_set.members)
    row = audit_scores({"base": scores, "reference": -scores}, members)
    attacks = row["attacks"]
    assert isinstance(attacks, dict)
    # The two attacks are mirror images: their AUCs add up to 1; the headline is the larger.
    assert attacks["base"]["auc"] + attacks["reference"]["auc"] == pytest.approx(1.0)
    assert row["auc"] == max(attacks["base"]["auc"], attacks["reference"]["auc"])
    # Bonferroni over the two attacks: each bound at 97.5%.
    assert attacks["base"]["eps_lb_one_run"]["confidence"] == pytest.approx(0.975)
    text = table(
        {
            "nodp": {
                **row,
                "federation": "in-process",
                "epsilon_accounted": None,
                "canaries_in": int(members.sum()),
                "canaries_out": int((~members).sum()),
            }
        }
    )
    assert "| nodp | in-process | - (no DP) |" in text
