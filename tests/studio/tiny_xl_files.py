"""LoRA and embedding files for the tiny SDXL model (random weights), in the formats people
share: kohya as sd-scripts writes SDXL LoRAs (SGM block names, ``lora_te1_``/``lora_te2_``),
diffusers/PEFT, and SDXL embeddings (``clip_l`` + ``clip_g``).

Pure Python (torch, sdcore): used by the sdcore SDXL generation tests and the studio tests.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sdcore.loading import unet_ldm_prefix_map, write_safetensors
from sdcore.lora import peft_to_kohya, save_lora_diffusers
from sdcore.tiny_xl import tiny_sdxl_component_configs

ATTENTION_LEAVES = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_LEAVES = ("q_proj", "k_proj", "v_proj", "out_proj")
RANK, ALPHA = 4, 8.0  # rank and alpha differ on purpose (ENGINE-NOTES)
XL_LORA_METADATA = {
    "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
    "ss_base_model_version": "sdxl_base_v1-0",
}


def _unet_layout() -> dict[str, object]:
    return dict(tiny_sdxl_component_configs()["unet"])


def tiny_xl_lora_state(*, seed: int = 0, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """A random LoRA (peft names) on every attention projection of the tiny SDXL UNet."""
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        unet = UNet2DConditionModel(**_unet_layout())  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if name.endswith(ATTENTION_LEAVES) and isinstance(module, torch.nn.Linear):
            state[f"{name}.lora_A.weight"] = scale * torch.randn(
                RANK, module.in_features, generator=generator
            )
            state[f"{name}.lora_B.weight"] = scale * torch.randn(
                module.out_features, RANK, generator=generator
            )
    return state


def _sgm_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefixes = {d: s for d, s in unet_ldm_prefix_map(_unet_layout()).items() if ".attentions." in d}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        prefix = next(p for p in prefixes if name.startswith(p))
        out[prefixes[prefix] + name[len(prefix) :]] = tensor
    return out


def _text_lora(kohya_prefix: str, width: int, seed: int, scale: float) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for layer in range(2):
        for leaf in TEXT_LEAVES:
            module = f"{kohya_prefix}text_model_encoder_layers_{layer}_self_attn_{leaf}"
            out[f"{module}.lora_down.weight"] = scale * torch.randn(
                RANK, width, generator=generator
            )
            out[f"{module}.lora_up.weight"] = scale * torch.randn(width, RANK, generator=generator)
            out[f"{module}.alpha"] = torch.tensor(ALPHA)
    return out


def write_xl_kohya_lora(path: Path, *, seed: int = 0, text_encoders: bool = False) -> Path:
    """A kohya SDXL LoRA as sd-scripts writes it: ``lora_unet_input_blocks_4_1_...`` names,
    with ``lora_te1_``/``lora_te2_`` modules when ``text_encoders``."""
    tensors = peft_to_kohya(_sgm_names(tiny_xl_lora_state(seed=seed)), alpha=ALPHA)
    if text_encoders:
        tensors |= _text_lora("lora_te1_", 32, seed + 100, 0.5)
        tensors |= _text_lora("lora_te2_", 64, seed + 200, 0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_safetensors(path, tensors, {"format": "pt", **XL_LORA_METADATA})


def write_xl_diffusers_lora(folder: Path, *, seed: int = 0) -> Path:
    return save_lora_diffusers(
        folder, tiny_xl_lora_state(seed=seed), rank=RANK, alpha=ALPHA, metadata=XL_LORA_METADATA
    )


def write_xl_embedding(path: Path, *, seed: int = 0, vectors: int = 2) -> Path:
    """An SDXL textual-inversion file: ``clip_l`` (32 wide) and ``clip_g`` (64 wide)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        "clip_l": torch.randn(vectors, 32, generator=generator),
        "clip_g": torch.randn(vectors, 64, generator=generator),
    }
    return write_safetensors(path, tensors)
