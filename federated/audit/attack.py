"""Loss-based membership inference on canaries: how much better does the trained LoRA denoise
each canary than the base model does?

Score of canary ``i`` = mean denoising loss under the base model minus mean denoising loss
under base + trained adapter, both on exactly the same inputs: the canary's latent mean, its
caption's text conditioning, the timesteps :data:`ATTACK_TIMESTEPS` and seeded noise
(``draws`` noise samples per timestep). Higher = more likely a member. Subtracting the base's
loss removes how hard each canary is in itself (the calibrated "difference" attack of the
membership-inference literature), which is far stronger than the raw loss. Stronger still
(``reference=``): calibrate with an adapter trained the same way on other canaries of the same
kind, which removes what training teaches about canary-like images in general.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from federated.engine.adapter import AdapterSpec, attach_adapter, set_adapter_arrays
from federated.engine.cache import build_latent_cache
from federated.engine.dataset import read_dataset
from federated.engine.dp import PerSampleMSE

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )

__all__ = ["ATTACK_TIMESTEPS", "adapter_losses", "canary_losses", "membership_scores"]

# Low and middle timesteps: where a denoiser that has seen an image reconstructs it best.
ATTACK_TIMESTEPS: tuple[int, ...] = (50, 100, 200, 300, 400, 500, 700)


def canary_losses(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    conditioning: Mapping[str, torch.Tensor],
    noise_scheduler: object,
    *,
    timesteps: Sequence[int] = ATTACK_TIMESTEPS,
    draws: int = 4,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """Mean denoising MSE per example (shape ``[n]``) over timesteps x ``draws`` seeded noises.

    The noise depends only on ``seed`` and the shapes: two UNets get the same inputs.
    """
    from federated.engine.trainer import denoising_loss

    n = int(latents.shape[0])
    pairs = [(i, t) for t in timesteps for _ in range(draws) for i in range(n)]
    generator = torch.Generator().manual_seed(seed)
    noise_all = torch.randn((len(pairs), *latents.shape[1:]), generator=generator)
    criterion = PerSampleMSE(reduction="none")
    totals = np.zeros(n, dtype=np.float64)
    was_training = unet.training
    unet.eval()
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            index = torch.tensor([i for i, _ in chunk])
            loss = denoising_loss(
                unet,
                noise_scheduler,
                latents[index],
                {k: v[index] for k, v in conditioning.items()},
                torch.tensor([t for _, t in chunk]),
                noise_all[start : start + len(chunk)],
                criterion,
            )
            np.add.at(totals, index.numpy(), loss.double().numpy())
    unet.train(was_training)
    return totals / (len(timesteps) * draws)


def adapter_losses(
    pipe: StableDiffusionPipeline,
    *,
    canaries_dir: Path,
    cache_dir: Path,
    model_hash: str,
    spec: AdapterSpec | None,
    adapter: Mapping[str, np.ndarray] | None,
    resolution: int = 64,
    draws: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """(losses, canary file names): each canary's mean loss under base (+ adapter, if given)."""
    from federated.engine.trainer import training_scheduler

    scan = read_dataset(Path(canaries_dir))
    cache = build_latent_cache(
        pipe, scan, cache_dir=cache_dir, resolution=resolution, model_hash=model_hash
    )
    latents = cache.latent_mean.float()
    conditioning = {k: v.float() for k, v in cache.conditioning.items()}
    unet = pipe.unet
    if adapter is not None and spec is not None:
        unet = copy.deepcopy(pipe.unet)
        attach_adapter(unet, spec)
        set_adapter_arrays(unet, spec, adapter)
    losses = canary_losses(
        unet, latents, conditioning, training_scheduler(pipe), draws=draws, seed=seed
    )
    return losses, [Path(e.relpath).name for e in scan.examples]


def membership_scores(
    pipe: StableDiffusionPipeline,
    *,
    canaries_dir: Path,
    cache_dir: Path,
    model_hash: str,
    spec: AdapterSpec,
    adapter: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray] | None = None,
    resolution: int = 64,
    draws: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """(scores, canary file names): calibrated loss minus adapted loss, per canary.

    The calibration is the base model (``reference=None``) or base + ``reference``, an adapter
    trained the same way on data holding none of these canaries (other canaries of the same
    kind): it then also removes what any such training teaches about canary-like images in
    general, leaving what the trained adapter learnt of each canary itself. The names
    (``canary-00007.png``) say which canary each score belongs to.
    """
    common: dict[str, Any] = {
        "canaries_dir": canaries_dir,
        "cache_dir": cache_dir,
        "model_hash": model_hash,
        "resolution": resolution,
        "draws": draws,
        "seed": seed,
    }
    calibration, names = adapter_losses(
        pipe,
        spec=spec if reference is not None else None,
        adapter=reference,
        **common,
    )
    adapted, _ = adapter_losses(pipe, spec=spec, adapter=adapter, **common)
    return calibration - adapted, names
