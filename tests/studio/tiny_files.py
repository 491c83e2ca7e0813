"""LoRA and embedding files for the tiny SD 1.x model (random weights), in both formats.

Pure Python (torch, sdcore): used by the sdcore generation tests and the studio tests.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sdcore.loading import write_safetensors
from sdcore.lora import save_lora_diffusers, save_lora_kohya
from sdcore.tiny import tiny_component_configs

ATTENTION_LEAVES = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_WIDTH = 32  # the tiny text encoder's hidden size
RANK, ALPHA = 4, 8.0  # rank and alpha differ on purpose (ENGINE-NOTES)
LORA_METADATA = {"modelspec.architecture": "stable-diffusion-v1/lora"}


def tiny_lora_state(
    *,
    seed: int = 0,
    scale: float = 0.3,
    in_width: int | None = None,
) -> dict[str, torch.Tensor]:
    """A random LoRA (peft names) on every attention projection of the tiny UNet.

    ``in_width`` forces another input width: a LoRA that does not fit the tiny model.
    """
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**tiny_component_configs()["unet"])  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if name.endswith(ATTENTION_LEAVES) and isinstance(module, torch.nn.Linear):
            width = in_width or module.in_features
            state[f"{name}.lora_A.weight"] = scale * torch.randn(RANK, width, generator=generator)
            state[f"{name}.lora_B.weight"] = scale * torch.randn(
                module.out_features, RANK, generator=generator
            )
    return state


def write_kohya_lora(path: Path, *, seed: int = 0, in_width: int | None = None) -> Path:
    return save_lora_kohya(
        path, tiny_lora_state(seed=seed, in_width=in_width), alpha=ALPHA, metadata=LORA_METADATA
    )


def write_diffusers_lora(folder: Path, *, seed: int = 0) -> Path:
    return save_lora_diffusers(
        folder, tiny_lora_state(seed=seed), rank=RANK, alpha=ALPHA, metadata=LORA_METADATA
    )


def write_embedding(
    path: Path,
    *,
    seed: int = 0,
    vectors: int = 2,
    width: int = TEXT_WIDTH,
) -> Path:
    """An A1111-style textual-inversion file (``emb_params``)."""
    generator = torch.Generator().manual_seed(seed)
    emb = torch.randn(vectors, width, generator=generator)
    return write_safetensors(path, {"emb_params": emb}, {"sd_checkpoint_name": "tiny"})


def write_lycoris(path: Path) -> Path:
    """A LoHa file: LyCORIS layers, not a LoRA."""
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = {
        f"{name}.hada_w1_a": torch.zeros(32, 2),
        f"{name}.hada_w1_b": torch.zeros(2, 32),
        f"{name}.alpha": torch.tensor(2.0),
    }
    return write_safetensors(path, tensors)
