"""Evaluation: validation denoising loss at fixed timesteps and noise, and sample grids.

The validation loss uses each held-out image's latent mean (no sampling), the timesteps in
:data:`EVAL_TIMESTEPS`, and noise drawn from a fixed seed, so two models are compared on
exactly the same inputs: lower is better, and an all-zero FFA adapter gives the base loss.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from federated.engine.adapter import (
    AdapterSpec,
    attach_adapter,
    set_adapter_arrays,
    text_encoder_with_adapter,
)
from federated.engine.cache import LatentCache, build_latent_cache
from federated.engine.dataset import DatasetScan, read_dataset
from federated.engine.dp import PerSampleMSE

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )

__all__ = [
    "EVAL_TIMESTEPS",
    "evaluate_adapter",
    "pipeline_with_adapter",
    "sample_grid",
    "validation_loss",
]

EVAL_TIMESTEPS: tuple[int, ...] = (100, 300, 500, 700, 900)


def validation_loss(
    unet: torch.nn.Module,
    cache: LatentCache,
    noise_scheduler: object,
    *,
    timesteps: Sequence[int] = EVAL_TIMESTEPS,
    seed: int = 0,
    batch_size: int = 16,
) -> float:
    """Mean denoising MSE over every (example, timestep) pair, with seeded noise."""
    from federated.engine.trainer import denoising_loss

    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    generator = torch.Generator().manual_seed(seed)
    n = len(cache)
    pairs = [(i, t) for t in timesteps for i in range(n)]
    noise_all = torch.randn((len(pairs), *cache.latent_mean.shape[1:]), generator=generator)
    criterion = PerSampleMSE(reduction="sum")
    was_training = unet.training
    unet.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            index = torch.tensor([i for i, _ in chunk])
            latents = cache.latent_mean[index].to(device, dtype)
            conditioning = {
                k: v.to(device, dtype) for k, v in cache.conditioning_for(index).items()
            }
            steps = torch.tensor([t for _, t in chunk], device=device)
            noise = noise_all[start : start + len(chunk)].to(device, dtype)
            loss = denoising_loss(
                unet, noise_scheduler, latents, conditioning, steps, noise, criterion
            )
            total += float(loss)
    unet.train(was_training)
    return total / len(pairs)


def _unet_with_adapter(
    pipe: StableDiffusionPipeline,
    spec: AdapterSpec | None,
    adapter: Mapping[str, np.ndarray] | None,
) -> torch.nn.Module:
    if adapter is None or spec is None:
        return pipe.unet
    unet = copy.deepcopy(pipe.unet)
    attach_adapter(unet, spec)
    set_adapter_arrays(unet, spec, adapter)
    unet.eval()
    return unet


def evaluate_adapter(
    pipe: StableDiffusionPipeline,
    *,
    dataset: Path | DatasetScan,
    cache_dir: Path,
    resolution: int,
    model_hash: str,
    spec: AdapterSpec | None = None,
    adapter: Mapping[str, np.ndarray] | None = None,
    family: str = "sd1",
    seed: int = 0,
) -> float:
    """Validation loss of the base model (``adapter=None``) or base + adapter on a dataset."""
    from federated.engine.trainer import training_scheduler

    scan = dataset if isinstance(dataset, DatasetScan) else read_dataset(Path(dataset))
    cache = build_latent_cache(
        pipe, scan, cache_dir=cache_dir, resolution=resolution, model_hash=model_hash, family=family
    )
    unet = _unet_with_adapter(pipe, spec, adapter)
    return validation_loss(unet, cache, training_scheduler(pipe), seed=seed)


def pipeline_with_adapter(
    pipe: StableDiffusionPipeline, spec: AdapterSpec, adapter: Mapping[str, np.ndarray]
) -> StableDiffusionPipeline:
    """A pipeline sharing ``pipe``'s components but with an adapted copy of its UNet (and of
    its text encoder when the adapter has a text-encoder LoRA)."""
    components = dict(pipe.components)
    components["unet"] = _unet_with_adapter(pipe, spec, adapter)
    if spec.text_encoder:
        components["text_encoder"] = text_encoder_with_adapter(pipe.text_encoder, spec, adapter)
    adapted = type(pipe)(**components)
    adapted.set_progress_bar_config(disable=True)
    return adapted


def sample_grid(
    pipe: StableDiffusionPipeline,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    out_path: Path,
    resolution: int | None = None,
    num_inference_steps: int = 20,
    guidance_scale: float = 7.5,
) -> Path:
    """A PNG grid: one row per prompt, one column per seed (each cell its own generator)."""
    size = resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    rows: list[list[Image.Image]] = []
    for prompt in prompts:
        row = []
        for seed in seeds:
            result = pipe(
                prompt,
                height=size,
                width=size,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                generator=torch.Generator(device="cpu").manual_seed(seed),
                output_type="pil",
            )
            row.append(result.images[0])
        rows.append(row)
    grid = Image.new("RGB", (size * len(seeds), size * len(prompts)), "white")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid.paste(image, (c * size, r * size))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out_path, format="PNG")
    return out_path
