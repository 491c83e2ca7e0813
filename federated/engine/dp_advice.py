"""Advice before spending privacy: will DP-SGD at these settings leave any signal?

Pure (no Django): the job estimate calls it with each chosen dataset's size and the job's
batch size, rounds x local steps, clipping norm and target (epsilon, delta). For each owner it
gives what the trainer will use, computed the trainer's way (:mod:`federated.engine.dp`):

- the **sampling rate** ``q = 1 / ceil(n / B)`` (opacus' Poisson rate for batch ``B`` over
  ``n`` examples: about ``B / n``);
- the **noise multiplier** ``sigma`` that reaches the target epsilon after ``rounds x
  local_steps`` steps at that rate (opacus' ``get_noise_multiplier``, the same accountant);
- the **noise-to-signal ratio of an averaged step**. A DP-SGD step averages the clipped
  per-example gradients of a Poisson batch of expected size ``b = q * n`` and adds Gaussian
  noise of std ``sigma * C`` per coordinate to their sum (``C``: the clipping norm), so the
  step's gradient is ``mean_i clip_C(g_i) + N(0, (sigma * C / b)^2 I)``. The clipped mean has
  norm at most ``C``; the noise has std ``sigma * C / b`` in every coordinate. The ratio of
  the two, **NSR = (sigma * C / b) / C = sigma / b**, is independent of ``C`` and of the
  adapter's size: it is how large each coordinate's noise is against the largest signal the
  step can carry. (Summed over all ``d`` coordinates the noise norm is ``sqrt(d)`` times
  larger; the bound ``C`` is the same for every ``d``, so the per-coordinate ratio is the one
  that compares jobs on the same adapter, and it is what the thresholds below were fitted on.)

Thresholds, from bench/RESULTS-utility.md (batch 8, 3 rounds x 40 steps, clipping 0.05,
delta 1e-5, two owners, concept score 0.31 without DP):

=================  ======  =====  ==========================
images, epsilon    sigma   NSR    concept score
=================  ======  =====  ==========================
256, eps 8         0.655   0.082  0.19 (clear)
1024, eps 8        0.486   0.061  0.19 (clear)
64, eps 8          1.184   0.148  0.11 (weak: a third)
64, eps 2          3.184   0.398  0.00 (drowned)
=================  ======  =====  ==========================

so ``NSR <= 0.10`` is "ok" (the clear rows are at 0.06 to 0.08), above 0.10 "weak", and
above :data:`DROWNED_NSR` = 0.25 (between the weak 0.148 and the drowned 0.398, near their
geometric mean 0.24) "drowned". Two more cases are "drowned" whatever the NSR: a sampling rate
of 1 (every step sees the whole dataset, so sampling amplifies nothing and the few examples
there are carry all the noise), and fewer than :data:`TINY_DATASET` examples. One run per row:
the thresholds are a guide, not a guarantee.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from federated.engine.errors import ConfigError

__all__ = [
    "DROWNED_NSR",
    "TINY_DATASET",
    "WEAK_NSR",
    "DPAdvice",
    "OwnerAdvice",
    "dp_advice",
]

Level = Literal["ok", "weak", "drowned"]
WEAK_NSR = 0.10
DROWNED_NSR = 0.25
TINY_DATASET = 32
FORMULA = "NSR = (sigma * C / b) / C = sigma / b, b = q * n (expected batch), q = 1/ceil(n/B)"
_RANK: dict[str, int] = {"ok": 0, "weak": 1, "drowned": 2}


@dataclass(frozen=True)
class OwnerAdvice:
    """One dataset's DP-SGD, as its node will run it."""

    dataset_version_id: int
    dataset: str
    examples: int
    sample_rate: float
    expected_batch: float
    noise_multiplier: float | None  # None: the target epsilon is not reachable
    noise_std: float | None  # sigma * C / b, per coordinate of the averaged step
    noise_to_signal: float | None  # sigma / b
    level: Level
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DPAdvice:
    """The whole job's advice: the worst owner's level, and every warning in plain words."""

    target_epsilon: float
    delta: float
    max_grad_norm: float
    batch_size: int
    steps: int
    accountant: str
    level: Level
    owners: list[OwnerAdvice]
    warnings: list[str]
    weak_nsr: float = WEAK_NSR
    drowned_nsr: float = DROWNED_NSR
    formula: str = FORMULA

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(
    datasets: Sequence[tuple[int, str, int]],
    *,
    batch_size: int,
    steps: int,
    max_grad_norm: float,
    target_epsilon: float,
    delta: float,
) -> None:
    if not datasets:
        raise ConfigError("advice needs at least one dataset")
    if batch_size < 1 or steps < 1:
        raise ConfigError("batch size and steps must be at least 1")
    finite = all(math.isfinite(x) for x in (max_grad_norm, target_epsilon, delta))
    if not finite or not max_grad_norm > 0 or not target_epsilon > 0 or not 0 < delta < 1:
        raise ConfigError("clipping norm and epsilon must be positive, delta in (0, 1)")
    for dv_id, name, examples in datasets:
        details = {
            "dataset_version_id": dv_id,
            "dataset": name,
            "examples": examples,
            "batch_size": batch_size,
        }
        if examples < 1:
            raise ConfigError(
                f"Dataset {name!r} has no examples: DP-SGD needs at least one.",
                code="dataset_empty",
                details=details,
            )
        if batch_size > examples:
            raise ConfigError(
                f"The batch size {batch_size} is larger than dataset {name!r} "
                f"({examples} examples): pick a batch of at most {examples}.",
                code="batch_above_dataset",
                details=details,
            )


@functools.lru_cache(maxsize=512)
def _noise_multiplier(
    q: float, steps: int, target_epsilon: float, delta: float, accountant: str
) -> float | None:
    """The trainer's noise multiplier (None: unreachable); cached, as the wizard re-asks."""
    from federated.engine.dp import DPConfig, resolve_noise_multiplier

    dp = DPConfig(
        target_epsilon=target_epsilon,
        target_delta=delta,
        accountant=accountant,  # type: ignore[arg-type]  # checked by DPConfig
    )
    try:
        with warnings.catch_warnings():
            # opacus: "Optimal order is the largest alpha" (a looser bound, still an upper one)
            warnings.simplefilter("ignore", UserWarning)
            return resolve_noise_multiplier(dp, sample_rate=q, total_steps=steps)
    except ConfigError:
        return None


def _owner(
    dataset_version_id: int,
    name: str,
    examples: int,
    *,
    batch_size: int,
    steps: int,
    max_grad_norm: float,
    target_epsilon: float,
    delta: float,
    accountant: str,
) -> OwnerAdvice:
    from federated.engine.dp import sample_rate

    q = sample_rate(examples, batch_size)
    b = q * examples
    notes: list[str] = []
    level: Level = "ok"
    sigma = _noise_multiplier(q, steps, target_epsilon, delta, accountant)
    if sigma is None:
        level = "drowned"
        notes.append(
            f"{name!r}: epsilon {target_epsilon:g} cannot be reached in {steps} steps at "
            f"sampling rate {q:.3g}, whatever the noise. Raise epsilon or take fewer steps."
        )
        return OwnerAdvice(dataset_version_id, name, examples, q, b, None, None, None, level, notes)
    nsr = sigma / b
    if nsr > DROWNED_NSR:
        level = "drowned"
        notes.append(
            f"{name!r}: the noise will drown the signal. Each step's noise is {nsr:.2f} of the "
            f"largest signal per coordinate (noise multiplier {sigma:.2f} over a batch of "
            f"{b:g}); above {DROWNED_NSR:g} the utility bench learned nothing. More examples, "
            "a larger batch, fewer steps or a higher epsilon lower it."
        )
    elif nsr > WEAK_NSR:
        level = "weak"
        notes.append(
            f"{name!r}: the signal will be weak. Each step's noise is {nsr:.2f} of the largest "
            f"signal per coordinate (noise multiplier {sigma:.2f} over a batch of {b:g}); the "
            f"utility bench learned clearly only at {WEAK_NSR:g} or less."
        )
    if q >= 1.0:
        level = "drowned"
        notes.append(
            f"{name!r}: every step uses all {examples} examples (sampling rate 1), so sampling "
            "gives no privacy amplification and DP will drown the signal. Pick a batch much "
            "smaller than the dataset."
        )
    if examples < TINY_DATASET:
        level = "drowned"
        notes.append(
            f"{name!r}: {examples} examples is too few for DP-SGD (fewer than "
            f"{TINY_DATASET}); the noise that hides one of them hides them all."
        )
    return OwnerAdvice(
        dataset_version_id,
        name,
        examples,
        q,
        b,
        sigma,
        sigma * max_grad_norm / b,
        nsr,
        level,
        notes,
    )


def dp_advice(
    datasets: Sequence[tuple[int, str, int]],
    *,
    batch_size: int,
    rounds: int,
    local_steps: int,
    max_grad_norm: float,
    target_epsilon: float,
    delta: float,
    accountant: str = "rdp",
) -> DPAdvice:
    """Advice for ``datasets`` (``(dataset_version_id, name, examples)`` each) at these
    settings; raises :class:`ConfigError` (codes ``dataset_empty``, ``batch_above_dataset``,
    ``config_invalid``) on input no node could train with."""
    steps = rounds * local_steps
    _check(
        datasets,
        batch_size=batch_size,
        steps=steps,
        max_grad_norm=max_grad_norm,
        target_epsilon=target_epsilon,
        delta=delta,
    )
    owners = [
        _owner(
            dv_id,
            name,
            examples,
            batch_size=batch_size,
            steps=steps,
            max_grad_norm=max_grad_norm,
            target_epsilon=target_epsilon,
            delta=delta,
            accountant=accountant,
        )
        for dv_id, name, examples in datasets
    ]
    level: Level = max((o.level for o in owners), key=_RANK.__getitem__)
    return DPAdvice(
        target_epsilon=target_epsilon,
        delta=delta,
        max_grad_norm=max_grad_norm,
        batch_size=batch_size,
        steps=steps,
        accountant=accountant,
        level=level,
        owners=owners,
        warnings=[w for o in owners for w in o.warnings],
    )
