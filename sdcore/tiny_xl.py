"""A tiny SDXL model with random weights, for tests and the demo's SDXL flag.

Same architecture as SDXL 1.0 base, tiny widths: a UNet with ``addition_embed_type="text_time"``
(pooled text embedding plus six time ids: original size, crop corner, target size), no attention
at the first level and deeper transformers further down (``transformer_layers_per_block``), two
text encoders whose penultimate hidden states are concatenated (a CLIP ``CLIPTextModel`` and an
OpenCLIP-like ``CLIPTextModelWithProjection`` that also gives the pooled embedding), a KL
autoencoder with scale factor 8 and SDXL's scaling factor, and the Euler scheduler SDXL ships
with. Both text encoders use the offline tokenizer (:mod:`sdcore.tokenizer`): nothing is
downloaded.

The two text encoders have different widths (32 and 64) as in SDXL (768 and 1280): diffusers'
single-file converter tells them apart by width. The widths are chosen so that
:func:`sdcore.loading.load_pipeline` infers exactly this configuration from the tensor shapes of
the original single file (SGM layout: ``model.diffusion_model.*``,
``conditioner.embedders.0.transformer.*``, ``conditioner.embedders.1.model.*`` in OpenCLIP
layout, ``first_stage_model.*``).

The same seed gives the same bytes (same SHA-256) in both saved layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sdcore.loading import SDXL_SCHEDULER_CONFIG
from sdcore.tiny import TinyModelPaths, save_both_layouts
from sdcore.tokenizer import build_offline_tokenizer, offline_vocab_size

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
        StableDiffusionXLPipeline,
    )

__all__ = [
    "TINY_SDXL_RESOLUTION",
    "TINY_SDXL_SINGLE_FILE_NAME",
    "TinyModelPaths",
    "build_tiny_sdxl_pipeline",
    "save_tiny_sdxl_model",
    "tiny_sdxl_component_configs",
]

TINY_SDXL_RESOLUTION = 64  # pixels; UNet sample_size 8 x VAE scale factor 8
TINY_SDXL_SINGLE_FILE_NAME = "tiny-sdxl.safetensors"
TINY_SDXL_DIFFUSERS_DIR_NAME = "diffusers"

_TEXT_1_WIDTH = 32  # SDXL: 768 (CLIP ViT-L)
_TEXT_2_WIDTH = 64  # SDXL: 1280 (OpenCLIP ViT-bigG)
_POOLED_DIM = 32  # SDXL: 1280 (text_encoder_2 projection)
_TIME_EMBED_DIM = 8  # SDXL: 256 (addition_time_embed_dim)


def _text_config(width: int, *, layers: int, heads: int, act: str, projection: int) -> dict:
    vocab_size = offline_vocab_size()
    return {
        "vocab_size": vocab_size,
        "hidden_size": width,
        "intermediate_size": width * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 77,
        "hidden_act": act,
        "projection_dim": projection,
        # As in CLIP: the two special tokens are the last ids.
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1,
    }


def tiny_sdxl_component_configs() -> dict[str, dict[str, object]]:
    """Constructor keyword arguments of the tiny SDXL model's components."""
    return {
        "unet": {
            "sample_size": TINY_SDXL_RESOLUTION // 8,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 2,
            "block_out_channels": (32, 64),
            # SDXL pattern: no attention at the first level, cross-attention below it.
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "transformer_layers_per_block": (1, 2),
            "cross_attention_dim": _TEXT_1_WIDTH + _TEXT_2_WIDTH,
            # Head counts per level, as the loader infers them (64-wide heads, 8-wide below 64).
            "attention_head_dim": (4, 1),
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": _TIME_EMBED_DIM,
            "projection_class_embeddings_input_dim": _POOLED_DIM + 6 * _TIME_EMBED_DIM,
            "norm_num_groups": 32,
        },
        "vae": {
            "sample_size": TINY_SDXL_RESOLUTION,
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": 4,
            "layers_per_block": 1,
            "block_out_channels": (32, 32, 64, 64),
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "norm_num_groups": 32,
            "scaling_factor": 0.13025,
            "force_upcast": True,
        },
        "text_encoder": _text_config(
            _TEXT_1_WIDTH, layers=2, heads=4, act="quick_gelu", projection=_TEXT_1_WIDTH
        ),
        "text_encoder_2": _text_config(
            _TEXT_2_WIDTH, layers=2, heads=1, act="gelu", projection=_POOLED_DIM
        ),
        "scheduler": dict(SDXL_SCHEDULER_CONFIG),
    }


def build_tiny_sdxl_pipeline(*, seed: int = 0) -> StableDiffusionXLPipeline:
    """Build the tiny SDXL pipeline in memory: random weights from ``seed``, fp32, CPU."""
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
        StableDiffusionXLPipeline,
    )
    from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    configs = tiny_sdxl_component_configs()
    # Weight init uses the global RNG: fork it so the caller's random state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**configs["unet"])
        vae = AutoencoderKL(**configs["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))  # type: ignore[arg-type]
        text_encoder_2 = CLIPTextModelWithProjection(
            CLIPTextConfig(**configs["text_encoder_2"])  # type: ignore[arg-type]
        )
    scheduler = EulerDiscreteScheduler(**configs["scheduler"])
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=build_offline_tokenizer(),
        tokenizer_2=build_offline_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_sdxl_model(out_dir: Path, *, seed: int = 0) -> TinyModelPaths:
    """Write the tiny SDXL model as a diffusers folder and as an original (SGM) single file.

    ``out_dir / "diffusers"`` is a ``save_pretrained`` folder (safetensors weights);
    ``out_dir / "tiny-sdxl.safetensors"`` holds ``model.diffusion_model.*``,
    ``conditioner.embedders.0.transformer.*``, ``conditioner.embedders.1.model.*`` and
    ``first_stage_model.*`` keys with ``modelspec.*`` metadata
    (``stable-diffusion-xl-v1-base``). Both are replaced atomically; the same seed gives the
    same bytes.
    """
    return save_both_layouts(
        build_tiny_sdxl_pipeline(seed=seed),
        Path(out_dir),
        family="sdxl",
        resolution=TINY_SDXL_RESOLUTION,
        title=f"Atelier tiny SDXL (seed {seed})",
        dir_name=TINY_SDXL_DIFFUSERS_DIR_NAME,
        file_name=TINY_SDXL_SINGLE_FILE_NAME,
    )
