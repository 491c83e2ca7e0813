"""A tiny Stable Diffusion 1.x model with random weights, for tests and the demo.

Same architecture as SD 1.x (UNet with cross-attention, KL autoencoder with scale factor 8,
CLIP text encoder, Euler scheduler), tiny widths, random weights from a seed and an offline
tokenizer (:mod:`sdcore.tokenizer`): nothing is downloaded. The widths are chosen so that the
single-file loader (:func:`sdcore.loading.load_pipeline`) infers exactly this configuration
from tensor shapes, as it does for a real SD 1.x checkpoint.

The same seed gives the same bytes (same SHA-256) in both saved layouts, so saving again is
idempotent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sdcore.loading import SD1_SCHEDULER_CONFIG, save_original_single_file
from sdcore.tokenizer import build_offline_tokenizer, offline_vocab_size

if TYPE_CHECKING:
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )

__all__ = [
    "TINY_RESOLUTION",
    "TINY_SINGLE_FILE_NAME",
    "TinyModelPaths",
    "build_tiny_pipeline",
    "save_tiny_model",
    "tiny_component_configs",
]

TINY_RESOLUTION = 64  # pixels; UNet sample_size 8 x VAE scale factor 8
TINY_SINGLE_FILE_NAME = "tiny-sd1.safetensors"
TINY_DIFFUSERS_DIR_NAME = "diffusers"


@dataclass(frozen=True)
class TinyModelPaths:
    """Where :func:`save_tiny_model` wrote the two layouts of one tiny model."""

    diffusers_dir: Path
    single_file: Path


def tiny_component_configs() -> dict[str, dict[str, object]]:
    """Constructor keyword arguments of the tiny model's unet, vae, text encoder, scheduler."""
    vocab_size = offline_vocab_size()
    return {
        "unet": {
            "sample_size": TINY_RESOLUTION // 8,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 2,
            "block_out_channels": (32, 64),
            # SD 1.x pattern: cross-attention at every level except the deepest.
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        },
        "vae": {
            "sample_size": TINY_RESOLUTION,
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": 4,
            "layers_per_block": 1,
            "block_out_channels": (32, 32, 64, 64),
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "norm_num_groups": 32,
            "scaling_factor": 0.18215,
        },
        "text_encoder": {
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "projection_dim": 32,
            # As in CLIP: the two special tokens are the last ids.
            "bos_token_id": vocab_size - 2,
            "eos_token_id": vocab_size - 1,
            "pad_token_id": vocab_size - 1,
        },
        "scheduler": dict(SD1_SCHEDULER_CONFIG),
    }


def build_tiny_pipeline(*, seed: int = 0) -> StableDiffusionPipeline:
    """Build the tiny SD 1.x pipeline in memory: random weights from ``seed``, fp32, CPU."""
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )
    from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = tiny_component_configs()
    # Weight init uses the global RNG: fork it so the caller's random state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**configs["unet"])
        vae = AutoencoderKL(**configs["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))  # type: ignore[arg-type]
    scheduler = EulerDiscreteScheduler(**configs["scheduler"])
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_offline_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,  # type: ignore[arg-type]  # optional component
        feature_extractor=None,  # type: ignore[arg-type]  # optional component
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_model(out_dir: Path, *, seed: int = 0) -> TinyModelPaths:
    """Write the tiny model as a diffusers folder and as an original SD 1.x single file.

    ``out_dir / "diffusers"`` is a ``save_pretrained`` folder (safetensors weights);
    ``out_dir / "tiny-sd1.safetensors"`` holds ``model.diffusion_model.*``,
    ``first_stage_model.*`` and ``cond_stage_model.transformer.*`` keys with ``modelspec.*``
    metadata. Both are replaced atomically; the same seed gives the same bytes.
    """
    return save_both_layouts(
        build_tiny_pipeline(seed=seed),
        Path(out_dir),
        family="sd1",
        resolution=TINY_RESOLUTION,
        title=f"Atelier tiny SD 1.x (seed {seed})",
        dir_name=TINY_DIFFUSERS_DIR_NAME,
        file_name=TINY_SINGLE_FILE_NAME,
    )


def save_both_layouts(
    pipe: DiffusionPipeline,
    out_dir: Path,
    *,
    family: str,
    resolution: int,
    title: str,
    dir_name: str,
    file_name: str,
) -> TinyModelPaths:
    """Save ``pipe`` as ``out_dir / dir_name`` (``save_pretrained``, safetensors) and as the
    original single file ``out_dir / file_name`` of ``family``: both staged in a temporary
    folder beside them, then replaced atomically (the tiny SD 1.x and SDXL models share this)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = TinyModelPaths(diffusers_dir=out_dir / dir_name, single_file=out_dir / file_name)
    with tempfile.TemporaryDirectory(prefix=".tiny-", dir=out_dir) as tmp:
        staged_dir = Path(tmp) / dir_name
        pipe.save_pretrained(str(staged_dir), safe_serialization=True)
        staged_file = Path(tmp) / file_name
        save_original_single_file(
            pipe, staged_file, family=family, resolution=resolution, title=title
        )
        if paths.diffusers_dir.exists():
            shutil.rmtree(paths.diffusers_dir)
        os.replace(staged_dir, paths.diffusers_dir)
        os.replace(staged_file, paths.single_file)
    return paths
