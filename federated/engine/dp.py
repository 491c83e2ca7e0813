"""DP-SGD with opacus on the LoRA parameters, and an accountant that spans a whole job.

- Per-sample clipping and Gaussian noise by opacus' ``DPOptimizer``, Poisson sampling by its
  ``DPDataLoader`` (sample rate ``1 / ceil(n / batch_size)``, as ``make_private`` sets it).
- The accountant (``"rdp"`` or ``"prv"``) is opacus' own; its state is its history of
  ``(noise_multiplier, sample_rate, steps)``, saved as JSON bytes between rounds, so one
  accountant spans every step of every round of a job.
- The noise multiplier is given, or derived from a target (epsilon, delta) over the planned
  rounds x local steps with opacus' ``get_noise_multiplier``.
- :func:`epsilon_after` tells the epsilon a call WILL reach before it runs (the ledger's check).
- Empty Poisson batches still take a noised step (skipping it would reveal that the batch was
  empty, and the accountant assumes every step is noised).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from federated.engine.errors import ConfigError

if TYPE_CHECKING:
    from opacus.accountants.accountant import IAccountant

__all__ = [
    "AccountantState",
    "DPConfig",
    "PerSampleMSE",
    "PrivateTraining",
    "epsilon_after",
    "make_private",
    "resolve_grad_sample_mode",
    "resolve_noise_multiplier",
    "sample_rate",
    "take_empty_step",
]

GradSampleMode = Literal["auto", "ew", "hooks", "functorch", "ghost"]
GRAD_SAMPLE_MODES = ("auto", "ew", "hooks", "functorch", "ghost")
AccountantName = Literal["rdp", "prv"]


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings of a job; give ``noise_multiplier`` or ``target_epsilon``, not both."""

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    target_delta: float = 1e-5
    max_grad_norm: float = 1.0
    planned_rounds: int = 1
    accountant: AccountantName = "rdp"
    # "auto": ``ew`` (the fastest measured on CPU), ``hooks`` under bf16 autocast (where ``ew``
    # fails) or with several noise draws; see :func:`resolve_grad_sample_mode`.
    grad_sample_mode: GradSampleMode = "auto"
    secure_mode: bool = False

    def __post_init__(self) -> None:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError("DP needs exactly one of noise_multiplier and target_epsilon")
        if self.noise_multiplier is not None and self.noise_multiplier <= 0:
            raise ConfigError("noise_multiplier must be positive")
        if self.target_epsilon is not None and self.target_epsilon <= 0:
            raise ConfigError("target_epsilon must be positive")
        if not 0 < self.target_delta < 1:
            raise ConfigError("target_delta must be in (0, 1)")
        if self.max_grad_norm <= 0:
            raise ConfigError("max_grad_norm must be positive")
        if self.planned_rounds < 1:
            raise ConfigError("planned_rounds must be at least 1")
        if self.accountant not in ("rdp", "prv"):
            raise ConfigError(f"accountant must be 'rdp' or 'prv', got {self.accountant!r}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ConfigError(f"unknown grad_sample_mode {self.grad_sample_mode!r}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class AccountantState:
    """An opacus accountant's history, to carry from round to round (and to the ledger)."""

    mechanism: str
    history: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return sum(steps for _, _, steps in self.history)

    def to_bytes(self) -> bytes:
        data = {"mechanism": self.mechanism, "history": [list(h) for h in self.history]}
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> AccountantState:
        try:
            raw = json.loads(data.decode("utf-8"))
            history = [(float(s), float(q), int(n)) for s, q, n in raw["history"]]
            return cls(mechanism=str(raw["mechanism"]), history=history)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"accountant state is not valid ({exc})") from exc

    @classmethod
    def from_accountant(cls, accountant: IAccountant) -> AccountantState:
        history = [(float(s), float(q), int(n)) for s, q, n in accountant.history]
        return cls(mechanism=accountant.mechanism(), history=history)

    def accountant(self) -> IAccountant:
        from opacus.accountants import create_accountant

        accountant = create_accountant(self.mechanism)
        accountant.history = [tuple(h) for h in self.history]
        return accountant

    def epsilon(self, delta: float) -> float:
        if not self.history:
            return 0.0
        return float(self.accountant().get_epsilon(delta=delta))


def resolve_grad_sample_mode(
    mode: str, *, bf16_autocast: bool, noise_draws: int = 1
) -> GradSampleMode:
    """The opacus mode a DP loop runs: ``mode``, or for ``"auto"`` the fastest that works.

    opacus 1.6's ``ew`` (expanded weights) fails in backward under bf16 autocast: the fp32
    LoRA weights meet bf16 activations in ``linear_expanded_weights`` ("expected m1 and m2 to
    have the same dtype"); ``hooks`` works there. Only ``hooks`` sums per-sample gradients over
    several forward passes (``noise_draws`` > 1). An explicit ``ew`` under bf16 autocast is
    refused here, before any privacy is spent, rather than failing in the first backward.
    """
    if mode == "auto":
        return "hooks" if bf16_autocast or noise_draws > 1 else "ew"
    if mode == "ew" and bf16_autocast:
        raise ConfigError(
            "grad_sample_mode 'ew' fails under bf16 autocast (opacus expanded weights mix "
            "bf16 activations with the fp32 LoRA weights); use 'auto' or 'hooks'"
        )
    if mode not in GRAD_SAMPLE_MODES:
        raise ConfigError(f"unknown grad_sample_mode {mode!r}")
    return mode  # type: ignore[return-value]  # checked just above


def sample_rate(n_examples: int, batch_size: int) -> float:
    """Poisson sample rate opacus uses for a loader of ``batch_size`` over ``n_examples``."""
    if n_examples < 1 or batch_size < 1:
        raise ConfigError("need at least one example and a batch size of at least 1")
    return 1.0 / math.ceil(n_examples / batch_size)


def resolve_noise_multiplier(dp: DPConfig, *, sample_rate: float, total_steps: int) -> float:
    """The configured noise multiplier, or the one reaching the target after ``total_steps``."""
    if dp.noise_multiplier is not None:
        return dp.noise_multiplier
    from opacus.accountants.utils import get_noise_multiplier

    assert dp.target_epsilon is not None  # __post_init__ guarantees one of the two
    try:
        return float(
            get_noise_multiplier(
                target_epsilon=dp.target_epsilon,
                target_delta=dp.target_delta,
                sample_rate=sample_rate,
                steps=total_steps,
                accountant=dp.accountant,
            )
        )
    except ValueError as exc:
        raise ConfigError(f"target epsilon {dp.target_epsilon} is not reachable ({exc})") from exc


def epsilon_after(
    state: AccountantState,
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
) -> float:
    """The epsilon the accountant will report after ``steps`` more steps (computed, not run)."""
    planned = AccountantState(
        state.mechanism, [*state.history, (noise_multiplier, sample_rate, steps)]
    )
    return planned.epsilon(delta)


class PerSampleMSE(nn.Module):
    """MSE averaged per sample; ``reduction="none"`` gives shape ``[batch]`` (ghost clipping)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        if self.reduction == "none":
            return per_sample
        if self.reduction == "sum":
            return per_sample.sum()
        return per_sample.mean()


@dataclass
class PrivateTraining:
    """What :func:`make_private` returns: use these instead of the originals."""

    module: nn.Module
    optimizer: torch.optim.Optimizer
    loader: torch.utils.data.DataLoader[tuple[torch.Tensor, ...]]
    criterion: nn.Module
    accountant: IAccountant
    sample_rate: float
    ghost: bool


def make_private(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    n_examples: int,
    batch_size: int,
    dp: DPConfig,
    noise_multiplier: float,
    state: AccountantState | None,
    seed: int,
) -> PrivateTraining:
    """Wrap ``module`` and ``optimizer`` with opacus; the loader yields example indices.

    The accountant starts from ``state`` (the job's earlier rounds). With ``secure_mode``
    noise and sampling come from a secure generator and ``seed`` is ignored.
    """
    from opacus import PrivacyEngine

    if state is not None and state.mechanism != dp.accountant:
        raise ConfigError(
            f"the job's accountant is {state.mechanism!r} but this round asks for {dp.accountant!r}"
        )
    engine = PrivacyEngine(accountant=dp.accountant, secure_mode=dp.secure_mode)
    if state is not None:
        engine.accountant.history = [tuple(h) for h in state.history]
    indices = torch.utils.data.TensorDataset(torch.arange(n_examples))
    generator = None if dp.secure_mode else torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(indices, batch_size=batch_size, generator=generator)
    noise_generator = None if dp.secure_mode else torch.Generator().manual_seed(seed + 1)
    criterion = PerSampleMSE()
    if dp.grad_sample_mode == "auto":  # callers that know about autocast resolve it first
        dp = replace(dp, grad_sample_mode=resolve_grad_sample_mode("auto", bf16_autocast=False))
    ghost = dp.grad_sample_mode == "ghost"
    wrapped = engine.make_private(
        module=module,
        optimizer=optimizer,
        criterion=criterion,
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        poisson_sampling=True,
        grad_sample_mode=dp.grad_sample_mode,
        noise_generator=noise_generator,
    )
    if ghost:
        private_module, private_optimizer, private_criterion, private_loader = wrapped
    else:
        private_module, private_optimizer, private_loader = wrapped
        private_criterion = criterion
    return PrivateTraining(
        module=private_module,
        optimizer=private_optimizer,
        loader=private_loader,
        criterion=private_criterion,
        accountant=engine.accountant,
        sample_rate=1.0 / len(private_loader),
        ghost=ghost,
    )


def take_empty_step(private: PrivateTraining, params: Sequence[nn.Parameter]) -> None:
    """An optimizer step for an empty Poisson batch: zero gradient, full noise, accounted."""
    for p in params:
        if private.ghost:
            p.grad = torch.zeros_like(p)
        else:
            p.grad_sample = p.new_zeros((0, *p.shape))  # type: ignore[attr-defined]
    private.optimizer.step()
    private.optimizer.zero_grad(set_to_none=True)
