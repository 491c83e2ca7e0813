"""DP-SGD under bf16 autocast (what the trainer runs on CUDA), checked on CPU.

opacus 1.6's ``ew`` mode fails in backward under bf16 autocast (fp32 LoRA weights, bf16
activations); ``hooks`` works. The trainer's default (``grad_sample_mode="auto"``) must pick a
mode that works, and an explicit ``ew`` under autocast is refused before any step.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from federated.engine.adapter import AdapterSpec, attach_adapter, get_adapter_arrays
from federated.engine.cache import build_latent_cache
from federated.engine.dataset import read_dataset
from federated.engine.dp import DPConfig, make_private, resolve_grad_sample_mode
from federated.engine.errors import ConfigError
from federated.engine.flower.settings import train_config_from_run_config
from federated.engine.trainer import TrainConfig, load_base, train_on_cache, training_scheduler
from sdcore.tiny import TinyModelPaths
from tests.federated.engine.conftest import TRAIN_RESOLUTION


def test_auto_picks_ew_in_fp32_and_hooks_under_bf16_autocast() -> None:
    assert resolve_grad_sample_mode("auto", bf16_autocast=False) == "ew"
    assert resolve_grad_sample_mode("auto", bf16_autocast=True) == "hooks"
    assert resolve_grad_sample_mode("auto", bf16_autocast=False, noise_draws=2) == "hooks"
    assert resolve_grad_sample_mode("functorch", bf16_autocast=True) == "functorch"
    with pytest.raises(ConfigError, match="autocast"):
        resolve_grad_sample_mode("ew", bf16_autocast=True)


def test_the_job_default_is_auto() -> None:
    config = train_config_from_run_config({"dp": "on", "dp-noise-multiplier": 1.0})
    assert config.dp is not None and config.dp.grad_sample_mode == "auto"
    assert DPConfig(noise_multiplier=1.0).grad_sample_mode == "auto"
    # several noise draws need hooks: auto is allowed, ew is not
    TrainConfig(noise_draws=2, dp=DPConfig(noise_multiplier=1.0))
    with pytest.raises(ConfigError):
        TrainConfig(noise_draws=2, dp=DPConfig(noise_multiplier=1.0, grad_sample_mode="ew"))


@pytest.fixture(scope="module")
def bf16_setup(
    tiny_model: TinyModelPaths, small_datasets: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[object, object]:
    cache_dir = tmp_path_factory.mktemp("bf16-cache")
    base = load_base(
        tiny_model.diffusers_dir,
        device=torch.device("cpu"),
        dtype=torch.bfloat16,
        cache_dir=cache_dir,
    )
    scan = read_dataset(small_datasets[0])
    cache = build_latent_cache(
        base.pipe,
        scan,
        cache_dir=cache_dir,
        resolution=TRAIN_RESOLUTION,
        model_hash=base.fingerprint,
        family=base.family,
        manifest_hash=scan.manifest().manifest_hash,
    ).to(torch.device("cpu"), torch.bfloat16)
    return base, cache


def _bf16_config(mode: str) -> TrainConfig:
    return TrainConfig(
        resolution=TRAIN_RESOLUTION,
        adapter=AdapterSpec(rank=1, alpha=1.0),
        learning_rate=1e-1,
        batch_size=8,
        local_steps=2,
        device="cpu",
        mixed_precision="bf16",
        dp=DPConfig(noise_multiplier=1.0, max_grad_norm=0.05, grad_sample_mode=mode),  # type: ignore[arg-type]
    )


def test_dp_trains_under_bf16_autocast_with_the_default_mode(bf16_setup: tuple) -> None:
    base, cache = bf16_setup
    # Given the tiny UNet in bf16 with an adapter, and the job's default DP settings
    unet = copy.deepcopy(base.pipe.unet)
    assert next(unet.parameters()).dtype == torch.bfloat16
    config = _bf16_config("auto")
    attach_adapter(unet, config.adapter)
    before = get_adapter_arrays(unet, config.adapter)
    # When it trains privately under bf16 autocast (as on CUDA)
    loop = train_on_cache(
        unet,
        cache,
        noise_scheduler=training_scheduler(base.pipe),
        config=config,
        seed=0,
        noise_multiplier=1.0,
    )
    # Then every step ran, the accountant counted them and the adapter moved
    after = get_adapter_arrays(unet, config.adapter)
    assert loop.steps == 2 and loop.accountant is not None and loop.accountant.steps == 2
    assert max(float(abs(after[n] - before[n]).max()) for n in after) > 0


def test_ew_is_refused_under_bf16_autocast_before_any_step(bf16_setup: tuple) -> None:
    base, cache = bf16_setup
    unet = copy.deepcopy(base.pipe.unet)
    config = _bf16_config("ew")
    attach_adapter(unet, config.adapter)
    with pytest.raises(ConfigError, match="autocast"):
        train_on_cache(
            unet,
            cache,
            noise_scheduler=training_scheduler(base.pipe),
            config=config,
            seed=0,
            noise_multiplier=1.0,
        )


def test_opacus_ew_really_fails_under_bf16_autocast(bf16_setup: tuple) -> None:
    """Why the refusal exists: if opacus fixes ew under autocast, this test says so."""
    base, cache = bf16_setup
    unet = copy.deepcopy(base.pipe.unet)
    attach_adapter(unet, AdapterSpec(rank=1, alpha=1.0))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    unet.train()
    private = make_private(
        unet,
        torch.optim.SGD(params, lr=0.1),
        n_examples=len(cache),
        batch_size=4,
        dp=DPConfig(noise_multiplier=1.0, grad_sample_mode="ew"),
        noise_multiplier=1.0,
        state=None,
        seed=0,
    )
    index = torch.arange(4)
    latents = cache.latent_mean[index]
    conditioning = dict(cache.conditioning_for(index).items())
    with pytest.raises(RuntimeError, match="dtype"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = private.module(latents, torch.full((4,), 500), **conditioning).sample
        private.criterion(out, torch.zeros_like(out)).backward()
