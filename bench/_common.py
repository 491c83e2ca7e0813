"""Shared helpers for the trainer benchmarks: model, dataset, cache, timing, machine info.

``--full-size`` builds SD-1.5-sized random weights (UNet 320/640/1280/1280 with
cross-attention 768, VAE 128/256/512/512, CLIP text encoder 768 wide and 12 layers deep);
without it the tiny model of ``sdcore.tiny``. ``family="sdxl"``: SDXL 1.0 base's architecture
(:data:`SDXL_UNET_CONFIG`, CLIP ViT-L plus OpenCLIP ViT-bigG text encoders, VAE with SDXL's
scaling factor), or the tiny SDXL model of ``sdcore.tiny_xl``. Nothing is downloaded either way.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from federated.engine.cache import LatentCache, build_latent_cache  # noqa: E402
from federated.engine.dataset import DatasetScan, read_dataset  # noqa: E402
from federated.engine.synthetic import generate_synthetic_dataset  # noqa: E402
from sdcore.tiny import build_tiny_pipeline  # noqa: E402

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )


def machine() -> dict[str, object]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "gpu": gpu,
        "torch": torch.__version__,
    }


# SDXL 1.0 base's UNet (2,567,463,684 parameters), as in its unet/config.json.
SDXL_UNET_CONFIG: dict[str, object] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
SDXL_UNET_PARAMETERS = 2_567_463_684


def _full_size_sdxl() -> object:
    """SDXL 1.0 base's architecture with random weights (offline tokenizers)."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sdcore.loading import SD1_SCHEDULER_CONFIG
    from sdcore.tokenizer import build_offline_tokenizer, offline_vocab_size

    torch.manual_seed(0)
    vocab = offline_vocab_size()
    special = {"bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": vocab - 1}
    clip_l = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        hidden_act="quick_gelu",
        **special,
    )
    clip_g = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=32,
        num_attention_heads=20,
        hidden_act="gelu",
        projection_dim=1280,
        **special,
    )
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=1024,
            scaling_factor=0.13025,
        ),
        text_encoder=CLIPTextModel(clip_l),
        text_encoder_2=CLIPTextModelWithProjection(clip_g),
        tokenizer=build_offline_tokenizer(),
        tokenizer_2=build_offline_tokenizer(),
        unet=UNet2DConditionModel(**SDXL_UNET_CONFIG),  # type: ignore[arg-type]
        scheduler=EulerDiscreteScheduler(**SD1_SCHEDULER_CONFIG),  # type: ignore[arg-type]
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_pipeline(
    *, full_size: bool, device: str, dtype: torch.dtype, family: str = "sd1"
) -> StableDiffusionPipeline:
    """Tiny model, or full-size random weights, of ``family``; on ``device`` in ``dtype``."""
    if family == "sdxl":
        from sdcore.tiny_xl import build_tiny_sdxl_pipeline

        pipe = _full_size_sdxl() if full_size else build_tiny_sdxl_pipeline(seed=0)
        pipe = pipe.to(device, dtype)  # type: ignore[attr-defined]
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            getattr(pipe, name).requires_grad_(False)
        return pipe  # type: ignore[no-any-return]
    if not full_size:
        pipe = build_tiny_pipeline(seed=0)
    else:
        from diffusers import (
            AutoencoderKL,
            EulerDiscreteScheduler,
            StableDiffusionPipeline,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextConfig, CLIPTextModel

        from sdcore.loading import SD1_SCHEDULER_CONFIG
        from sdcore.tokenizer import build_offline_tokenizer, offline_vocab_size

        torch.manual_seed(0)
        vocab = offline_vocab_size()
        pipe = StableDiffusionPipeline(
            vae=AutoencoderKL(
                block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2,
                latent_channels=4,
                sample_size=512,
            ),
            text_encoder=CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=vocab,
                    hidden_size=768,
                    intermediate_size=3072,
                    num_hidden_layers=12,
                    num_attention_heads=12,
                    hidden_act="quick_gelu",
                    bos_token_id=vocab - 2,
                    eos_token_id=vocab - 1,
                    pad_token_id=vocab - 1,
                )
            ),
            tokenizer=build_offline_tokenizer(),
            unet=UNet2DConditionModel(
                sample_size=64, cross_attention_dim=768, attention_head_dim=8
            ),
            scheduler=EulerDiscreteScheduler(**SD1_SCHEDULER_CONFIG),  # type: ignore[arg-type]
            safety_checker=None,
            feature_extractor=None,  # type: ignore[arg-type]
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device, dtype)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    return pipe


@dataclass
class BenchData:
    scan: DatasetScan
    cache: LatentCache
    cache_seconds: float


def prepare_data(
    pipe: StableDiffusionPipeline,
    *,
    work: Path,
    n_images: int,
    resolution: int,
    device: str,
    family: str = "sd1",
) -> BenchData:
    folder = generate_synthetic_dataset(
        work / "dataset", n_images=n_images, seed=1, resolution=resolution
    )
    scan = read_dataset(folder)
    started = time.perf_counter()
    cache = build_latent_cache(
        pipe,
        scan,
        cache_dir=work / "cache",
        resolution=resolution,
        model_hash="bench",
        family=family,
    )
    return BenchData(scan, cache.to(device), time.perf_counter() - started)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median(values: list[float]) -> float:
    return statistics.median(values)


def dump(result: dict[str, object], out: Path | None) -> None:
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
