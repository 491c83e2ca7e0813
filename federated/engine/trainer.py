"""One federated round of LoRA training on a node: arrays in, arrays out.

:func:`train_round` is what a Flower ClientApp calls once per round::

    result = train_round(
        config, base_model=..., dataset=..., cache_dir=..., adapter_in=arrays_from_server,
        accountant_state=state_from_context, ledger=PrivacyLedger(LEDGER_PATH), job_id=run_id,
    )
    # send result.adapter (ordered name -> np.ndarray), result.num_examples, result.metrics()
    # keep result.accountant_state for the next round

It reads the dataset, refuses the call if the privacy ledger says the planned steps would
exceed the budget (before loading anything heavy), loads the base model (memoised in the
process), builds or reuses the latent cache, trains the UNet's LoRA for ``local_steps``
optimizer steps (DP-SGD with opacus when ``config.dp`` is set), checks that the adapter is
finite and changed, records the epsilon reached, and returns the new adapter arrays.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from federated.engine import constants
from federated.engine.adapter import (
    AdapterArrays,
    AdapterSpec,
    TextConditionedUNet,
    attach_adapter,
    caption_input_ids,
    get_adapter_arrays,
    set_adapter_arrays,
    text_encoder_for_training,
)
from federated.engine.buckets import (
    BucketedLatentCache,
    accumulate_micro_batches,
    batch_sampler,
    bucket_counts_json,
    build_bucketed_cache,
    mean_latents,
    split_by_bucket,
)
from federated.engine.cache import LatentCache, build_latent_cache, model_fingerprint, unet_kwargs
from federated.engine.dataset import DatasetScan, read_dataset
from federated.engine.dp import (
    AccountantState,
    DPConfig,
    PerSampleMSE,
    epsilon_after,
    make_private,
    resolve_grad_sample_mode,
    resolve_noise_multiplier,
    sample_rate,
    take_empty_step,
)
from federated.engine.errors import AdapterCheckError, BudgetExceededError, ConfigError
from federated.engine.ledger import PrivacyLedger
from sdcore.loading import detect_family, load_pipeline

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )

__all__ = [
    "LoadedBase",
    "RoundResult",
    "TrainConfig",
    "denoising_loss",
    "load_base",
    "train_on_cache",
    "train_round",
    "training_scheduler",
]

logger = logging.getLogger(__name__)

MixedPrecision = Literal["auto", "no", "bf16"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one job's local training; the same on every node of the job."""

    resolution: int = 512
    adapter: AdapterSpec = field(default_factory=AdapterSpec)
    learning_rate: float = 1e-3
    batch_size: int = 4
    local_steps: int = 10
    # Noise/timestep draws per example per step, averaged in the example's loss. More draws
    # lower the variance of each per-example gradient, which is what survives DP clipping.
    noise_draws: int = 1
    seed: int = 0
    dp: DPConfig | None = None
    device: str | None = None
    mixed_precision: MixedPrecision = "auto"
    # Aspect-ratio buckets (federated/engine/buckets.py); False: every image centre-cropped
    # to a square, as before.
    buckets: bool = True

    def __post_init__(self) -> None:
        if self.resolution % 8 or self.resolution < 8:
            raise ConfigError(f"resolution must be a positive multiple of 8, got {self.resolution}")
        if self.batch_size < 1 or self.local_steps < 1:
            raise ConfigError("batch_size and local_steps must be at least 1")
        if not self.learning_rate > 0:
            raise ConfigError("learning_rate must be positive")
        if self.noise_draws < 1:
            raise ConfigError("noise_draws must be at least 1")
        if (
            self.noise_draws > 1
            and self.dp is not None
            and self.dp.grad_sample_mode not in ("hooks", "auto")
        ):
            raise ConfigError(
                "noise_draws > 1 under DP needs grad_sample_mode='hooks' (the only opacus mode "
                "that sums per-sample gradients over several forward passes)"
            )

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["adapter"] = self.adapter.to_dict()
        data["dp"] = self.dp.to_dict() if self.dp else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TrainConfig:
        values = dict(data)
        adapter = values.pop("adapter", None)
        dp = values.pop("dp", None)
        return cls(
            adapter=AdapterSpec.from_dict(adapter)
            if isinstance(adapter, Mapping)
            else AdapterSpec(),
            dp=DPConfig(**dp) if isinstance(dp, Mapping) else None,
            **values,  # type: ignore[arg-type]  # keys written by to_dict()
        )


@dataclass(frozen=True)
class RoundResult:
    """What one call produced; ``adapter`` and ``metrics()`` go back to the server."""

    adapter: AdapterArrays
    num_examples: int
    train_loss: float
    steps: int
    total_steps: int
    epsilon: float | None
    delta: float | None
    noise_multiplier: float | None
    sample_rate: float | None
    accountant_state: bytes | None
    manifest_hash: str
    seconds: float
    bucket_counts: str = ""  # JSON {"WxH": count} with buckets on; counts only

    def metrics(self) -> dict[str, float | int | str]:
        """Flat scalar metrics (a Flower ``MetricRecord``); -1 where DP is off."""
        return {
            "num-examples": self.num_examples,
            "train-loss": self.train_loss,
            "steps": self.steps,
            "total-steps": self.total_steps,
            "epsilon": -1.0 if self.epsilon is None else self.epsilon,
            "delta": -1.0 if self.delta is None else self.delta,
            "noise-multiplier": -1.0 if self.noise_multiplier is None else self.noise_multiplier,
            "manifest-hash": self.manifest_hash,
            "seconds": self.seconds,
            "bucket-counts": self.bucket_counts,
        }


# --------------------------------------------------------------------------------------
# Base model, memoised per process (a Flower ClientApp process may run several rounds)
# --------------------------------------------------------------------------------------


@dataclass
class LoadedBase:
    pipe: StableDiffusionPipeline
    family: str
    fingerprint: str
    device: torch.device
    dtype: torch.dtype


_BASE_MEMO: dict[tuple[str, int, str, str], LoadedBase] = {}


def _device_and_dtype(config: TrainConfig) -> tuple[torch.device, torch.dtype]:
    device = torch.device(config.device or constants.default_device())
    bf16 = config.mixed_precision == "bf16" or (
        config.mixed_precision == "auto" and device.type == "cuda"
    )
    return device, (torch.bfloat16 if bf16 else torch.float32)


def load_base(
    base_model: Path, *, device: torch.device, dtype: torch.dtype, cache_dir: Path
) -> LoadedBase:
    """Load (once per process) the base pipeline; callers copy the UNet before changing it."""
    base_model = Path(base_model).resolve()
    stat_mtime = max(
        (
            p.stat().st_mtime_ns
            for p in ([base_model] if base_model.is_file() else base_model.rglob("*"))
        ),
        default=0,
    )
    key = (str(base_model), stat_mtime, str(device), str(dtype))
    if key not in _BASE_MEMO:
        family = detect_family(base_model)
        pipe = load_pipeline(base_model, dtype=dtype, device=device)
        pipe.vae.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL
            pipe.text_encoder_2.requires_grad_(False)
        pipe.unet.requires_grad_(False)
        _BASE_MEMO.clear()  # one base model per process is enough; free the previous one
        _BASE_MEMO[key] = LoadedBase(
            pipe=pipe,
            family=family.key,
            fingerprint=model_fingerprint(base_model, memo_dir=cache_dir),
            device=device,
            dtype=dtype,
        )
    return _BASE_MEMO[key]


# --------------------------------------------------------------------------------------
# The training loop on cached latents
# --------------------------------------------------------------------------------------


def _derived_seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF


def denoising_loss(
    unet: torch.nn.Module,
    noise_scheduler: object,
    latents: torch.Tensor,
    conditioning: Mapping[str, torch.Tensor],
    timesteps: torch.Tensor,
    noise: torch.Tensor,
    criterion: torch.nn.Module,
) -> torch.Tensor:
    """The diffusion training loss: predict the noise (or velocity) added at ``timesteps``.

    ``conditioning``: one batch of the cache's tensors (``LatentCache.conditioning_for``);
    :func:`~federated.engine.cache.unet_kwargs` passes them as the family's UNet expects
    (SDXL: pooled embeddings and size ids in ``added_cond_kwargs``).
    """
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)  # type: ignore[attr-defined]
    prediction_type = noise_scheduler.config.prediction_type  # type: ignore[attr-defined]
    if prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)  # type: ignore[attr-defined]
    else:
        target = noise
    prediction = unet(noisy, timesteps, **unet_kwargs(conditioning)).sample
    return criterion(prediction, target)


def training_scheduler(pipe: StableDiffusionPipeline) -> object:
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


@dataclass
class _LoopResult:
    losses: list[float]
    steps: int
    accountant: AccountantState | None
    sample_rate: float | None


def train_on_cache(
    unet: torch.nn.Module,
    cache: LatentCache | BucketedLatentCache,
    *,
    noise_scheduler: object,
    config: TrainConfig,
    seed: int,
    noise_multiplier: float | None = None,
    accountant_state: AccountantState | None = None,
    on_step: Callable[[int, float], None] | None = None,
    conditioning_for: Callable[[torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
) -> _LoopResult:
    """Run ``config.local_steps`` optimizer steps on the adapter of ``unet`` (in place).

    Non-private: batches drawn without replacement (reshuffled each epoch). Private: opacus'
    Poisson batches, per-sample clipping and noise; the accountant continues from
    ``accountant_state``. ``on_step(step, loss)`` is called after each optimizer step
    (benchmarks time steps with it). ``conditioning_for(indices)`` replaces the cache's
    conditioning (a text-encoder LoRA's token ids).
    """
    device = next(unet.parameters()).device
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # trainable LoRA weights stay in fp32 under bf16 autocast
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    num_train = int(noise_scheduler.config.num_train_timesteps)  # type: ignore[attr-defined]
    autocast: AbstractContextManager[object] = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if config.mixed_precision != "no" and next(iter(unet.parameters())).dtype == torch.bfloat16
        else nullcontext()
    )
    unet.train()  # opacus needs train mode ("No activations detected" otherwise)
    losses: list[float] = []

    def step_on(
        indices: torch.Tensor, model: torch.nn.Module, criterion: torch.nn.Module
    ) -> torch.Tensor:
        conditioning = {
            k: v.to(device)
            for k, v in (conditioning_for or cache.conditioning_for)(indices).items()
        }
        total: torch.Tensor | None = None
        for _ in range(config.noise_draws):
            latents = cache.sample_latents(indices, generator).to(device)
            noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
            timesteps = torch.randint(0, num_train, (len(indices),), generator=generator).to(device)
            with autocast:
                loss = denoising_loss(
                    model, noise_scheduler, latents, conditioning, timesteps, noise, criterion
                )
            total = loss if total is None else total + loss
        assert total is not None
        return total / config.noise_draws if config.noise_draws > 1 else total

    if config.dp is None:
        criterion = PerSampleMSE()
        batches = batch_sampler(cache, config.batch_size, generator)  # per bucket if bucketed
        for _ in range(config.local_steps):
            indices = next(batches)
            loss = step_on(indices, unet, criterion)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if on_step:
                on_step(len(losses), losses[-1])
        return _LoopResult(losses, config.local_steps, None, None)

    assert noise_multiplier is not None
    mode = resolve_grad_sample_mode(
        config.dp.grad_sample_mode,
        bf16_autocast=not isinstance(autocast, nullcontext),
        noise_draws=config.noise_draws,
    )
    if mode == "ghost" and isinstance(cache, BucketedLatentCache) and len(cache.buckets) > 1:
        raise ConfigError("ghost clipping does not split batches by bucket; set buckets off")
    private = make_private(
        unet,
        optimizer,
        n_examples=len(cache),
        batch_size=config.batch_size,
        dp=replace(config.dp, grad_sample_mode=mode),
        noise_multiplier=noise_multiplier,
        state=accountant_state,
        seed=seed,
    )
    steps = 0
    while steps < config.local_steps:
        for (indices,) in private.loader:
            if steps == config.local_steps:
                break
            if len(indices) == 0:
                take_empty_step(private, params)
            elif len(parts := split_by_bucket(cache, indices)) > 1:
                # One Poisson batch over all examples, one micro-batch per bucket, clipped per
                # sample and noised once (buckets.accumulate_micro_batches).
                losses.append(
                    accumulate_micro_batches(
                        parts, lambda part: step_on(part, private.module, private.criterion), params
                    )
                )
                private.optimizer.step()
                private.optimizer.zero_grad(set_to_none=True)
            else:
                loss = step_on(indices, private.module, private.criterion)
                loss.backward()
                private.optimizer.step()
                private.optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
            steps += 1
            if on_step:
                on_step(steps, losses[-1] if losses else float("nan"))
    close = getattr(private.module, "_close", None)
    if callable(close):
        close()  # remove opacus hooks from the (copied) UNet
    return _LoopResult(
        losses, steps, AccountantState.from_accountant(private.accountant), private.sample_rate
    )


def _check_adapter(
    before: AdapterArrays,
    after: AdapterArrays,
    unet: torch.nn.Module,
    cache: LatentCache | BucketedLatentCache,
) -> None:
    """Fail loudly if the adapter is not finite, did not change, or breaks the UNet."""
    bad = [name for name, value in after.items() if not np.isfinite(value).all()]
    if bad:
        raise AdapterCheckError(
            f"{len(bad)} adapter tensors are not finite after training (first: {bad[0]})",
            details={"tensors": bad[:10]},
        )
    change = max(float(np.abs(after[n] - before[n]).max()) for n in after)
    if change == 0.0:
        raise AdapterCheckError("the adapter did not change during training (opacus issue 820)")
    unet.eval()
    with torch.no_grad():
        index = torch.tensor([0])
        device = next(unet.parameters()).device
        latents = mean_latents(cache, index).to(device, next(unet.parameters()).dtype)
        conditioning = {
            k: v.to(device, latents.dtype) for k, v in cache.conditioning_for(index).items()
        }
        out = unet(latents, torch.tensor([500], device=device), **unet_kwargs(conditioning)).sample
    if not torch.isfinite(out).all():
        raise AdapterCheckError("the UNet with the trained adapter produces non-finite outputs")


# --------------------------------------------------------------------------------------
# One round
# --------------------------------------------------------------------------------------


def _plan_privacy(
    config: TrainConfig,
    *,
    n_examples: int,
    accountant_state: bytes | None,
    ledger: PrivacyLedger | None,
    dataset_key: str,
    job_id: str,
) -> tuple[float | None, AccountantState | None, float | None]:
    """(noise multiplier, accountant state to continue, epsilon this call will reach)."""
    dp = config.dp
    if dp is None:
        if ledger is not None:
            raise BudgetExceededError(
                f"dataset {dataset_key!r} is in the privacy ledger: it trains only with DP "
                "(non-private training spends an unbounded epsilon); nothing was trained",
                details={"dataset": dataset_key, "job": job_id},
            )
        return None, None, None
    q = sample_rate(n_examples, config.batch_size)
    sigma = resolve_noise_multiplier(
        dp, sample_rate=q, total_steps=dp.planned_rounds * config.local_steps
    )
    state = AccountantState(dp.accountant)
    if accountant_state:
        state = AccountantState.from_bytes(accountant_state)
    if ledger is not None:
        recorded = ledger.job_spend(dataset_key, job_id)
        if recorded is not None and recorded.accountant_state:
            ledger_state = AccountantState.from_bytes(recorded.accountant_state)
            if ledger_state.steps != state.steps:
                logger.warning(
                    "job %s: the accountant state sent has %d steps, the ledger %d; "
                    "using the ledger's",
                    job_id,
                    state.steps,
                    ledger_state.steps,
                )
            state = ledger_state
    projected = epsilon_after(
        state,
        noise_multiplier=sigma,
        sample_rate=q,
        steps=config.local_steps,
        delta=dp.target_delta,
    )
    if ledger is not None:
        planned = AccountantState(state.mechanism, [*state.history, (sigma, q, config.local_steps)])
        ledger.charge(
            dataset_key,
            job_id,
            epsilon_after=projected,
            delta=dp.target_delta,
            steps=planned.steps,
            accountant_state=planned.to_bytes(),
        )
    return sigma, state, projected


def train_round(
    config: TrainConfig,
    *,
    base_model: Path,
    dataset: Path | DatasetScan,
    cache_dir: Path,
    adapter_in: Mapping[str, np.ndarray] | None,
    accountant_state: bytes | None,
    ledger: PrivacyLedger | None,
    job_id: str,
    dataset_key: str | None = None,
    round_index: int = 0,
) -> RoundResult:
    """Train the adapter for ``config.local_steps`` steps on one dataset; see the module doc.

    ``dataset_key`` names the dataset in the ledger (default: the folder's absolute path).
    Raises ``DatasetError``, ``BudgetNotSetError``, ``BudgetExceededError`` (before any step
    runs), ``AdapterMismatchError`` or ``AdapterCheckError``.
    """
    started = time.perf_counter()
    scan = dataset if isinstance(dataset, DatasetScan) else read_dataset(Path(dataset))
    manifest_hash = scan.manifest().manifest_hash
    key = dataset_key or str(scan.root)
    sigma, state, projected = _plan_privacy(
        config,
        n_examples=len(scan),
        accountant_state=accountant_state,
        ledger=ledger,
        dataset_key=key,
        job_id=job_id,
    )

    device, dtype = _device_and_dtype(config)
    cache_dir = Path(cache_dir)
    base = load_base(Path(base_model), device=device, dtype=dtype, cache_dir=cache_dir)
    cache_args = {
        "cache_dir": cache_dir,
        "resolution": config.resolution,
        "model_hash": base.fingerprint,
        "family": base.family,
        "manifest_hash": manifest_hash,
    }
    cache: LatentCache | BucketedLatentCache = (
        build_bucketed_cache(base.pipe, scan, **cache_args)  # type: ignore[arg-type]
        if config.buckets
        else build_latent_cache(base.pipe, scan, **cache_args)  # type: ignore[arg-type]
    ).to(device, dtype)

    unet = copy.deepcopy(base.pipe.unet)
    attach_adapter(unet, config.adapter)
    # Text-encoder LoRA (adapter.py): captions encoded every step, DP clips over both.
    text_encoder = text_encoder_for_training(base.pipe, config.adapter, base.family)
    if text_encoder is not None:
        text_encoder.to(device)
    if adapter_in:
        set_adapter_arrays(unet, config.adapter, adapter_in, text_encoder)
    before = get_adapter_arrays(unet, config.adapter, text_encoder)
    input_ids = caption_input_ids(base.pipe, [e.caption for e in scan.examples])
    steps_so_far = state.steps if state else 0
    # From the content, not the path: the same data and job give the same round anywhere.
    seed = _derived_seed(config.seed, job_id, manifest_hash, round_index, steps_so_far)
    loop = train_on_cache(
        unet if text_encoder is None else TextConditionedUNet(unet, text_encoder),
        cache,
        noise_scheduler=training_scheduler(base.pipe),
        config=config,
        seed=seed,
        noise_multiplier=sigma,
        accountant_state=state,
        conditioning_for=None if text_encoder is None else lambda i: {"input_ids": input_ids[i]},
    )
    after = get_adapter_arrays(unet, config.adapter, text_encoder)
    _check_adapter(before, after, unet, cache)

    epsilon: float | None = None
    state_out: bytes | None = None
    if config.dp is not None and loop.accountant is not None:
        epsilon = loop.accountant.epsilon(config.dp.target_delta)
        state_out = loop.accountant.to_bytes()
        if projected is not None and not math.isclose(
            epsilon, projected, rel_tol=1e-6, abs_tol=1e-9
        ):
            raise AdapterCheckError(
                f"accountant reached epsilon {epsilon} but {projected} was planned; "
                "the round's output is withheld"
            )
    total_steps = loop.accountant.steps if loop.accountant else steps_so_far + loop.steps
    return RoundResult(
        adapter=after,
        num_examples=len(scan),
        train_loss=float(np.mean(loop.losses)) if loop.losses else float("nan"),
        steps=loop.steps,
        total_steps=total_steps,
        epsilon=epsilon,
        delta=config.dp.target_delta if config.dp else None,
        noise_multiplier=sigma,
        sample_rate=loop.sample_rate,
        accountant_state=state_out,
        manifest_hash=manifest_hash,
        seconds=time.perf_counter() - started,
        bucket_counts=bucket_counts_json(cache.counts())
        if isinstance(cache, BucketedLatentCache)
        else "",
    )
