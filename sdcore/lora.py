"""LoRA files: the diffusers/PEFT format and the kohya format, and kohya -> diffusers names.

Both writers take a UNet LoRA state under peft names
(``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight``) and write the
real alpha: diffusers' ``convert_state_dict_to_kohya`` always writes ``alpha = rank``, and a
diffusers file without adapter metadata loses alpha as well (ENGINE-NOTES), so with rank 4
and alpha 8 both would reload with the wrong scale.

- diffusers/PEFT: ``pytorch_lora_weights.safetensors`` with ``unet.``-prefixed peft keys and
  the ``lora_adapter_metadata`` JSON (``r``, ``lora_alpha``, ``target_modules``) that
  ``load_lora_weights`` reads;
- kohya (A1111, ComfyUI): ``lora_unet_<module_with_underscores>.lora_down.weight`` (A),
  ``.lora_up.weight`` (B) and a scalar ``.alpha`` per module.

Both carry the same ``ss_*`` and ``modelspec.*`` metadata strings. Files are written with
sorted headers, so the same content gives the same bytes.

:func:`kohya_to_diffusers` converts an existing kohya LoRA's names (diffusers-style
``lora_unet_down_blocks_...`` names as kohya's sd-scripts write for SD 1.x, LDM-style
``lora_unet_input_blocks_...`` names as sd-scripts writes for SDXL, and ``lora_te_``,
``lora_te1_``, ``lora_te2_`` text-encoder names) to peft names and per-module alphas. Pure
string work plus tensors; no model is needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdcore.errors import SdcoreError
from sdcore.loading import unet_ldm_prefix_map, write_safetensors

__all__ = [
    "DIFFUSERS_LORA_WEIGHT_NAME",
    "KohyaConversion",
    "LoraFormatError",
    "kohya_module_to_diffusers",
    "kohya_to_diffusers",
    "peft_to_kohya",
    "save_lora_diffusers",
    "save_lora_kohya",
]

DIFFUSERS_LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # as diffusers.loaders.lora_base

# The UNet layout of SD 1.x (v1-5), for LDM-style kohya names.
SD1_UNET_LAYOUT: dict[str, object] = {
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
}


class LoraFormatError(SdcoreError):
    """A LoRA state dict or file has names or tensors this module cannot convert."""

    default_code = "lora_format_invalid"


def _modules(state: Mapping[str, torch.Tensor]) -> list[str]:
    modules: list[str] = []
    for name in state:
        if name.endswith(".lora_A.weight"):
            modules.append(name.removesuffix(".lora_A.weight"))
        elif not name.endswith(".lora_B.weight"):
            raise LoraFormatError(f"{name} is not a peft LoRA weight name")
    for module in modules:
        if f"{module}.lora_B.weight" not in state:
            raise LoraFormatError(f"{module} has lora_A but no lora_B")
    return modules


def _metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    out = {"format": "pt"}
    for key, value in (metadata or {}).items():
        if not isinstance(value, str):
            raise LoraFormatError(f"metadata {key} must be a string (safetensors stores strings)")
        out[key] = value
    return out


def save_lora_diffusers(
    out_dir: Path,
    unet_state: Mapping[str, torch.Tensor],
    *,
    rank: int,
    alpha: float,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``out_dir/pytorch_lora_weights.safetensors``; return the file's path."""
    modules = _modules(unet_state)
    adapter_config = {
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": sorted(modules),
        "lora_dropout": 0.0,
        "bias": "none",
        "use_dora": False,
        "init_lora_weights": True,
    }
    packed = {f"unet.{k}": v for k, v in adapter_config.items()}
    meta = _metadata(metadata)
    meta[LORA_ADAPTER_METADATA_KEY] = json.dumps(packed, indent=2, sort_keys=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"unet.{k}": v.detach().float().cpu() for k, v in unet_state.items()}
    return write_safetensors(out_dir / DIFFUSERS_LORA_WEIGHT_NAME, tensors, meta)


def peft_to_kohya(
    unet_state: Mapping[str, torch.Tensor], *, alpha: float | Mapping[str, float]
) -> dict[str, torch.Tensor]:
    """Peft UNet LoRA names -> kohya names, with a real ``.alpha`` tensor per module."""
    out: dict[str, torch.Tensor] = {}
    for module in _modules(unet_state):
        kohya = "lora_unet_" + module.replace(".", "_")
        module_alpha = alpha[module] if isinstance(alpha, Mapping) else alpha
        out[f"{kohya}.lora_down.weight"] = (
            unet_state[f"{module}.lora_A.weight"].detach().float().cpu()
        )
        out[f"{kohya}.lora_up.weight"] = (
            unet_state[f"{module}.lora_B.weight"].detach().float().cpu()
        )
        out[f"{kohya}.alpha"] = torch.tensor(float(module_alpha), dtype=torch.float32)
    return out


def save_lora_kohya(
    path: Path,
    unet_state: Mapping[str, torch.Tensor],
    *,
    alpha: float,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write one kohya-format ``.safetensors`` file (A1111, ComfyUI, diffusers load it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_safetensors(path, peft_to_kohya(unet_state, alpha=alpha), _metadata(metadata))


# --------------------------------------------------------------------------------------
# kohya -> diffusers names
# --------------------------------------------------------------------------------------

_UNET_RULES: tuple[tuple[str, str], ...] = (
    (r"^(down_blocks|up_blocks)_(\d+)_", r"\1.\2."),
    (r"^mid_block_", "mid_block."),
    (r"(attentions|resnets|transformer_blocks|downsamplers|upsamplers)_(\d+)_", r"\1.\2."),
    (r"(attn[12])_", r"\1."),
    (r"to_out_0$", "to_out.0"),
    (r"ff_net_0_proj$", "ff.net.0.proj"),
    (r"ff_net_2$", "ff.net.2"),
    (r"^time_embedding_(linear_\d)$", r"time_embedding.\1"),
)
_TE_RULE = re.compile(r"^text_model_encoder_layers_(\d+)_(self_attn|mlp)_(\w+)$")
_LDM_RESNET_TAILS = {
    "in_layers_2": "conv1",
    "out_layers_3": "conv2",
    "emb_layers_1": "time_emb_proj",
    "skip_connection": "conv_shortcut",
}
_LDM_RULE = re.compile(r"^(input_blocks|middle_block|output_blocks)_(\d+)_?(\d+)?_(.+)$")


def _ldm_to_diffusers_prefixes(unet_layout: Mapping[str, object]) -> dict[str, str]:
    forward = unet_ldm_prefix_map(unet_layout)
    return {ldm: diffusers for diffusers, ldm in forward.items()}


def kohya_module_to_diffusers(
    kohya_module: str, *, unet_layout: Mapping[str, object] | None = None
) -> tuple[str, str]:
    """``lora_unet_..._to_q`` -> ``("unet", "....to_q")``; ``lora_te_``/``lora_te1_`` -> the
    (first) text encoder; ``lora_te2_`` -> SDXL's second text encoder (``text_encoder_2``).

    SDXL's UNet names from sd-scripts are SGM (LDM) block names; pass the checkpoint's UNet
    config as ``unet_layout`` to resolve them (the default is SD 1.5's layout)."""
    if kohya_module.startswith(("lora_te_", "lora_te1_", "lora_te2_")):
        target = "text_encoder_2" if kohya_module.startswith("lora_te2_") else "text_encoder"
        rest = kohya_module.split("_", 2)[2]
        match = _TE_RULE.match(rest)
        if not match:
            raise LoraFormatError(f"unknown kohya text-encoder module {kohya_module}")
        layer, block, leaf = match.groups()
        leaf = leaf if block == "self_attn" else leaf.replace("_", ".")
        return target, f"text_model.encoder.layers.{layer}.{block}.{leaf}"
    if not kohya_module.startswith("lora_unet_"):
        raise LoraFormatError(
            f"{kohya_module} is neither a lora_unet_ nor a lora_te_/lora_te1_/lora_te2_ module"
        )
    rest = kohya_module.removeprefix("lora_unet_")
    ldm = _LDM_RULE.match(rest)
    if ldm:
        block, index, sub, tail = ldm.groups()
        prefix = f"{block}.{index}." + (f"{sub}." if sub is not None else "")
        prefixes = _ldm_to_diffusers_prefixes(unet_layout or SD1_UNET_LAYOUT)
        if prefix not in prefixes:
            raise LoraFormatError(f"{kohya_module}: no diffusers block for LDM block {prefix}")
        for old, new in _LDM_RESNET_TAILS.items():
            tail = re.sub(f"^{old}$", new, tail)
        rest = prefixes[prefix].replace(".", "_") + tail
    name = rest
    for pattern, replacement in _UNET_RULES:
        name = re.sub(pattern, replacement, name)
    return "unet", name


@dataclass(frozen=True)
class KohyaConversion:
    """A kohya LoRA under peft names: per-model states, and alpha and rank per module."""

    unet: dict[str, torch.Tensor] = field(default_factory=dict)
    text_encoder: dict[str, torch.Tensor] = field(default_factory=dict)
    text_encoder_2: dict[str, torch.Tensor] = field(default_factory=dict)
    alphas: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)


def kohya_to_diffusers(
    state: Mapping[str, torch.Tensor], *, unet_layout: Mapping[str, object] | None = None
) -> KohyaConversion:
    """Convert a kohya LoRA state dict; a missing ``.alpha`` means alpha = rank (kohya's rule).

    LyCORIS variants (LoHa ``hada_*``, LoKr ``lokr_*``) are refused with a clear message.
    """
    unet: dict[str, torch.Tensor] = {}
    text: dict[str, torch.Tensor] = {}
    text_2: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    ranks: dict[str, int] = {}
    modules = sorted({name.split(".", 1)[0] for name in state})
    for module in modules:
        if any(k.startswith(module + ".hada_") or k.startswith(module + ".lokr_") for k in state):
            raise LoraFormatError(f"{module} is a LyCORIS (LoHa/LoKr) layer, not a LoRA")
        down = state.get(f"{module}.lora_down.weight")
        up = state.get(f"{module}.lora_up.weight")
        if down is None or up is None:
            raise LoraFormatError(f"{module} lacks lora_down or lora_up")
        target, name = kohya_module_to_diffusers(module, unet_layout=unet_layout)
        rank = int(down.shape[0])
        alpha_tensor = state.get(f"{module}.alpha")
        alpha = float(alpha_tensor.item()) if alpha_tensor is not None else float(rank)
        bucket = {"unet": unet, "text_encoder": text, "text_encoder_2": text_2}[target]
        bucket[f"{name}.lora_A.weight"] = down
        bucket[f"{name}.lora_B.weight"] = up
        qualified = f"{target}.{name}"
        alphas[qualified] = alpha
        ranks[qualified] = rank
    return KohyaConversion(
        unet=unet, text_encoder=text, text_encoder_2=text_2, alphas=alphas, ranks=ranks
    )
