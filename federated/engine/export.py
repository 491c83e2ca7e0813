"""Writing a trained adapter as LoRA files: diffusers/PEFT folder and kohya single file.

Both files carry the same ``ss_*`` (kohya) and ``modelspec.*`` metadata: base model, rank,
alpha, steps, resolution, the dataset manifest hashes, the DP settings and the epsilon
reached. Nothing about the private datasets beyond their manifest hashes: kohya's own
``ss_tag_frequency`` and ``ss_dataset_dirs`` would reveal captions and folder names, so they
are never written.

SDXL files say so as kohya's sd-scripts does (``ss_base_model_version`` ``sdxl_base_v1-0``,
``modelspec.architecture`` ``stable-diffusion-xl-v1-base/lora``: what A1111's network loader
and model-card readers check), and the kohya file names SDXL modules as sd-scripts writes them,
by the original (SGM) UNet's blocks: ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``
(A1111, Forge, ComfyUI and diffusers read these; SD 1.x keeps diffusers-style names).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from federated.engine.adapter import (
    AdapterSpec,
    adapter_state_dict,
    attach_adapter,
    set_adapter_arrays,
    text_encoder_lora_files,
    text_encoder_lora_state,
)
from federated.engine.dp import DPConfig
from sdcore.loading import FAMILIES, unet_ldm_prefix_map
from sdcore.lora import save_lora_diffusers, save_lora_kohya

if TYPE_CHECKING:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

__all__ = [
    "LoraFiles",
    "LoraProvenance",
    "full_adapter_state",
    "lora_metadata",
    "save_lora_files",
    "sgm_module_names",
]

KOHYA_FILE_NAME = "lora.safetensors"


@dataclass(frozen=True)
class LoraProvenance:
    """What the metadata says about how the LoRA was made."""

    base_model_name: str
    base_model_hash: str
    family: str
    resolution: int
    steps: int
    dataset_manifest_hashes: Sequence[str] = ()
    dp: DPConfig | None = None
    noise_multiplier: float | None = None
    epsilon: float | None = None
    title: str = "Atelier LoRA"
    learning_rate: float | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoraFiles:
    diffusers_dir: Path
    diffusers_file: Path
    kohya_file: Path


def lora_metadata(spec: AdapterSpec, provenance: LoraProvenance) -> dict[str, str]:
    """``ss_*`` and ``modelspec.*`` strings for both LoRA formats."""
    family = FAMILIES[provenance.family]
    dp = provenance.dp
    meta: dict[str, str] = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(spec.rank),
        "ss_network_alpha": str(spec.alpha),
        "ss_network_args": json.dumps({"mode": spec.mode, "init_seed": spec.init_seed}),
        "ss_base_model_version": {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}[
            family.key
        ],
        "ss_v2": "True" if family.key == "sd2" else "False",
        "ss_sd_model_name": provenance.base_model_name,
        "ss_new_sd_model_hash": provenance.base_model_hash,
        "ss_resolution": f"({provenance.resolution}, {provenance.resolution})",
        "ss_steps": str(provenance.steps),
        "ss_max_train_steps": str(provenance.steps),
        "ss_target_modules": json.dumps(list(spec.target_modules)),
        "ss_dataset_manifest_hashes": json.dumps(list(provenance.dataset_manifest_hashes)),
        "ss_dp_enabled": "true" if dp else "false",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{family.modelspec_architecture}/lora",
        # sd-scripts' values: SDXL files name Stability's reference implementation
        "modelspec.implementation": (
            "https://github.com/Stability-AI/generative-models"
            if family.key == "sdxl"
            else "diffusers"
        ),
        "modelspec.title": provenance.title,
        "modelspec.resolution": f"{provenance.resolution}x{provenance.resolution}",
        "modelspec.date": datetime.now(UTC).date().isoformat(),
    }
    if provenance.learning_rate is not None:
        meta["ss_learning_rate"] = str(provenance.learning_rate)
    if dp is not None:
        meta.update(
            {
                "ss_dp_accountant": dp.accountant,
                "ss_dp_max_grad_norm": str(dp.max_grad_norm),
                "ss_dp_delta": str(dp.target_delta),
                "ss_dp_noise_multiplier": str(provenance.noise_multiplier),
                "ss_dp_epsilon": "" if provenance.epsilon is None else f"{provenance.epsilon:.6g}",
            }
        )
    meta.update(provenance.extra)
    return meta


def full_adapter_state(
    unet: UNet2DConditionModel, spec: AdapterSpec, arrays: Mapping[str, np.ndarray]
) -> dict[str, torch.Tensor]:
    """Every A and B tensor of an adapter, given the base UNet and the transported arrays."""
    adapted = copy.deepcopy(unet)
    attach_adapter(adapted, spec)
    set_adapter_arrays(adapted, spec, arrays)
    return {k: v.detach().float().cpu().clone() for k, v in adapter_state_dict(adapted).items()}


def sgm_module_names(
    state: Mapping[str, torch.Tensor], unet_config: Mapping[str, object]
) -> dict[str, torch.Tensor] | None:
    """The LoRA state under original (SGM/LDM) UNet module names, as sd-scripts names SDXL's.

    ``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight`` ->
    ``input_blocks.4.1.transformer_blocks.0.attn1.to_q.lora_A.weight``. None when a module is
    outside the attention blocks (a mix of both namings would make loaders drop one half).
    """
    prefixes = {
        diffusers: sgm
        for diffusers, sgm in unet_ldm_prefix_map(unet_config).items()
        if ".attentions." in diffusers
    }
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if prefix is None:
            return None
        renamed[prefixes[prefix] + name[len(prefix) :]] = tensor
    return renamed


def save_lora_files(
    out_dir: Path,
    *,
    unet: UNet2DConditionModel,
    spec: AdapterSpec,
    arrays: Mapping[str, np.ndarray],
    provenance: LoraProvenance,
    text_encoder: torch.nn.Module | None = None,
) -> LoraFiles:
    """Write ``diffusers/pytorch_lora_weights.safetensors`` and ``lora.safetensors``.

    A text-encoder LoRA (``spec.text_encoder``) needs the base ``text_encoder``; its tensors
    are added to both files (``lora_te_*`` and ``text_encoder.*``, adapter.py).
    """
    if spec.text_encoder and text_encoder is None:
        raise ValueError("this adapter has a text-encoder LoRA: pass the base text_encoder")
    state = full_adapter_state(unet, spec, arrays)
    metadata = lora_metadata(spec, provenance)
    out_dir = Path(out_dir)
    diffusers_file = save_lora_diffusers(
        out_dir / "diffusers", state, rank=spec.rank, alpha=spec.alpha, metadata=metadata
    )
    kohya_state = state
    if provenance.family == "sdxl":
        kohya_state = sgm_module_names(state, unet.config) or state
    kohya_file = save_lora_kohya(
        out_dir / KOHYA_FILE_NAME, kohya_state, alpha=spec.alpha, metadata=metadata
    )
    if spec.text_encoder and text_encoder is not None:
        text_encoder_lora_files(
            kohya_file=kohya_file,
            diffusers_file=diffusers_file,
            te_state=text_encoder_lora_state(text_encoder, spec, arrays),
            spec=spec,
        )
    return LoraFiles(
        diffusers_dir=diffusers_file.parent, diffusers_file=diffusers_file, kohya_file=kohya_file
    )
