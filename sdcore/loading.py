"""Loading Stable Diffusion pipelines from local files, and writing original single files.

``load_pipeline`` takes either a diffusers folder (``model_index.json``) or a single-file
original checkpoint (``.safetensors``: ``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.*`` keys) and never reaches the network (``local_files_only=True``).

For a single file, diffusers' ``from_single_file`` needs a diffusers config folder. Unless the
caller gives one (``config=``), it is written to a temporary folder from what the file says:
the architecture comes from the tensor shapes (widths, depths, attention levels, text-encoder
size), the resolution from ``modelspec.resolution`` metadata, everything else from the
family's defaults. That works for every SD 1.x checkpoint with a CLIP ViT-L text encoder
(given the CLIP tokenizer, see :func:`load_pipeline`) and for the tiny model, whose offline
tokenizer is recognised by its vocabulary size.

Families (``sd1``, ``sd2``, ``sdxl``) live in a small registry, :data:`FAMILIES`, with the
pipeline class and defaults, so another family plugs in with one entry; single-file config
inference is implemented for ``sd1``, the others need ``config=``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sdcore.errors import SdcoreError

if TYPE_CHECKING:
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )

__all__ = [
    "FAMILIES",
    "SD1_SCHEDULER_CONFIG",
    "ModelFamily",
    "ModelLoadError",
    "UnsupportedModelError",
    "detect_family",
    "detect_family_from_keys",
    "diffusers_to_original_state_dict",
    "infer_sd1_configs",
    "load_pipeline",
    "read_single_file_header",
    "save_original_single_file",
    "unet_ldm_prefix_map",
    "write_safetensors",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."
SDXL_PREFIX = "conditioner.embedders."
CLIP_VIT_L_VOCAB = 49408
CLIP_TOKENIZER_REPO = "openai/clip-vit-large-patch14"

# SD 1.x noise schedule, as in the v1-5 scheduler config.
SD1_SCHEDULER_CONFIG: dict[str, object] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}


class ModelLoadError(SdcoreError):
    """A model file or folder cannot be loaded; the message says why."""

    default_code = "model_load_failed"


class UnsupportedModelError(ModelLoadError):
    """The file is a model, but of a family or layout this loader does not handle."""

    default_code = "model_unsupported"


@dataclass(frozen=True)
class ModelFamily:
    """What differs between Stable Diffusion families, for loading and training."""

    key: str
    pipeline_class_name: str
    modelspec_architecture: str
    default_resolution: int
    cross_attention_dim: int
    # UNet attention_head_dim default (SD 1.x calls the head count "attention_head_dim").
    attention_head_dim: int | tuple[int, ...]
    # Whether the UNet also takes pooled text embeddings and time ids (SDXL).
    needs_added_cond: bool = False
    single_file_inference: bool = False

    def pipeline_class(self) -> type[DiffusionPipeline]:
        import diffusers

        cls: type[DiffusionPipeline] = getattr(diffusers, self.pipeline_class_name)
        return cls


FAMILIES: dict[str, ModelFamily] = {
    "sd1": ModelFamily(
        key="sd1",
        pipeline_class_name="StableDiffusionPipeline",
        modelspec_architecture="stable-diffusion-v1",
        default_resolution=512,
        cross_attention_dim=768,
        attention_head_dim=8,
        single_file_inference=True,
    ),
    "sd2": ModelFamily(
        key="sd2",
        pipeline_class_name="StableDiffusionPipeline",
        modelspec_architecture="stable-diffusion-v2-768-v",
        default_resolution=768,
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
    ),
    "sdxl": ModelFamily(
        key="sdxl",
        pipeline_class_name="StableDiffusionXLPipeline",
        modelspec_architecture="stable-diffusion-xl-v1-base",
        default_resolution=1024,
        cross_attention_dim=2048,
        attention_head_dim=(5, 10, 20),
        needs_added_cond=True,
    ),
}


# --------------------------------------------------------------------------------------
# Reading a single file's header and telling the family
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SingleFileHeader:
    """Tensor names and shapes of a safetensors file, and its string metadata."""

    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str]


def read_single_file_header(path: Path) -> SingleFileHeader:
    """Read names, shapes and metadata of a ``.safetensors`` file without loading tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
            metadata = dict(handle.metadata() or {})
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path.name}: not a readable safetensors file ({exc})") from exc
    except Exception as exc:  # safetensors raises its own SafetensorError (not exported)
        raise ModelLoadError(f"{path.name}: not a readable safetensors file ({exc})") from exc
    return SingleFileHeader(shapes=shapes, metadata=metadata)


def detect_family_from_keys(keys: Iterable[str]) -> ModelFamily:
    """Tell the family of an original-layout checkpoint from its tensor names."""
    keys = set(keys)
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        raise UnsupportedModelError(
            "no model.diffusion_model.* tensors: not a full Stable Diffusion checkpoint "
            "(a LoRA, VAE or embedding file cannot be loaded as a base model)"
        )
    if any(k.startswith(SDXL_PREFIX) for k in keys):
        return FAMILIES["sdxl"]
    if any(k.startswith(OPEN_CLIP_PREFIX) for k in keys):
        return FAMILIES["sd2"]
    if any(k.startswith(CLIP_PREFIX) for k in keys):
        return FAMILIES["sd1"]
    raise UnsupportedModelError("UNet found but no known text encoder (cond_stage_model.*)")


def detect_family(path: Path) -> ModelFamily:
    """Tell the family of a diffusers folder or an original single file."""
    path = Path(path)
    if path.is_dir():
        index_path = path / "model_index.json"
        if not index_path.is_file():
            raise ModelLoadError(f"{path}: a folder without model_index.json is not a pipeline")
        index = json.loads(index_path.read_text(encoding="utf-8"))
        class_name = index.get("_class_name", "")
        if "XL" in class_name:
            return FAMILIES["sdxl"]
        unet_config_path = path / "unet" / "config.json"
        if unet_config_path.is_file():
            unet_config = json.loads(unet_config_path.read_text(encoding="utf-8"))
            if unet_config.get("cross_attention_dim") == FAMILIES["sd2"].cross_attention_dim:
                return FAMILIES["sd2"]
        return FAMILIES["sd1"]
    if path.is_file():
        return detect_family_from_keys(read_single_file_header(path).shapes)
    raise ModelLoadError(f"{path}: no such file or folder")


# --------------------------------------------------------------------------------------
# Config inference for SD 1.x single files
# --------------------------------------------------------------------------------------


def _indices(shapes: Mapping[str, tuple[int, ...]], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    found = {int(m.group(1)) for key in shapes if (m := regex.match(key))}
    return sorted(found)


def _resolution(metadata: Mapping[str, str], family: ModelFamily) -> int:
    spec = metadata.get("modelspec.resolution", "")
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", spec)
    return int(match.group(1)) if match else family.default_resolution


def _clip_heads(hidden: int) -> int:
    """CLIP uses 64-wide heads (ViT-L: 768 -> 12); toy widths use 8-wide heads (32 -> 4)."""
    return hidden // 64 if hidden >= 64 else max(1, hidden // 8)


def infer_sd1_configs(header: SingleFileHeader) -> dict[str, dict[str, object]]:
    """Diffusers configs of an SD 1.x single file, from its tensor shapes and metadata."""
    s = header.shapes
    family = FAMILIES["sd1"]
    u = UNET_PREFIX
    try:
        input_ids = _indices(s, re.escape(u) + r"input_blocks\.(\d+)\.")
        downsample_ids = [i for i in input_ids if f"{u}input_blocks.{i}.0.op.weight" in s]
        layers_per_block = (downsample_ids[0] - 1) if downsample_ids else len(input_ids) - 1
        n_levels = len(downsample_ids) + 1
        block_out: list[int] = []
        down_types: list[str] = []
        for level in range(n_levels):
            first = 1 + level * (layers_per_block + 1)
            block_out.append(s[f"{u}input_blocks.{first}.0.in_layers.2.weight"][0])
            has_attn = f"{u}input_blocks.{first}.1.proj_in.weight" in s
            down_types.append("CrossAttnDownBlock2D" if has_attn else "DownBlock2D")
        up_types = [t.replace("Down", "Up") for t in reversed(down_types)]
        proj_in = s[f"{u}middle_block.1.proj_in.weight"]
        cross_dim = s[f"{u}middle_block.1.transformer_blocks.0.attn2.to_k.weight"][1]
        resolution = _resolution(header.metadata, family)
        unet = {
            "_class_name": "UNet2DConditionModel",
            "sample_size": resolution // 8,
            "in_channels": s[f"{u}input_blocks.0.0.weight"][1],
            "out_channels": s[f"{u}out.2.weight"][0],
            "layers_per_block": layers_per_block,
            "block_out_channels": block_out,
            "down_block_types": down_types,
            "up_block_types": up_types,
            "cross_attention_dim": cross_dim,
            "attention_head_dim": family.attention_head_dim,
            "use_linear_projection": len(proj_in) == 2,
            "norm_num_groups": 32,
        }

        v = VAE_PREFIX
        vae_levels = _indices(s, re.escape(v) + r"encoder\.down\.(\d+)\.")
        vae_layers = len(_indices(s, re.escape(v) + r"encoder\.down\.0\.block\.(\d+)\."))
        vae = {
            "_class_name": "AutoencoderKL",
            "sample_size": resolution,
            "in_channels": s[f"{v}encoder.conv_in.weight"][1],
            "out_channels": s[f"{v}decoder.conv_out.weight"][0],
            "latent_channels": s[f"{v}quant_conv.weight"][0] // 2,
            "layers_per_block": vae_layers,
            "block_out_channels": [
                s[f"{v}encoder.down.{i}.block.0.conv1.weight"][0] for i in vae_levels
            ],
            "down_block_types": ["DownEncoderBlock2D"] * len(vae_levels),
            "up_block_types": ["UpDecoderBlock2D"] * len(vae_levels),
            "norm_num_groups": 32,
            "scaling_factor": 0.18215,
        }

        t = CLIP_PREFIX + "text_model."
        vocab, hidden = s[f"{t}embeddings.token_embedding.weight"]
        text = {
            "architectures": ["CLIPTextModel"],
            "model_type": "clip_text_model",
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": s[f"{t}encoder.layers.0.mlp.fc1.weight"][0],
            "num_hidden_layers": len(_indices(s, re.escape(t) + r"encoder\.layers\.(\d+)\.")),
            "num_attention_heads": _clip_heads(hidden),
            "max_position_embeddings": s[f"{t}embeddings.position_embedding.weight"][0],
            "hidden_act": "quick_gelu",
            "projection_dim": hidden,
            "bos_token_id": vocab - 2,
            "eos_token_id": vocab - 1,
            "pad_token_id": vocab - 1,
        }
    except (KeyError, IndexError, ValueError) as exc:
        raise UnsupportedModelError(
            f"an SD 1.x checkpoint is missing the tensor {exc}; it may be damaged or pruned"
        ) from exc
    return {"unet": unet, "vae": vae, "text_encoder": text, "scheduler": SD1_SCHEDULER_CONFIG}


def _write_config_folder(
    folder: Path,
    configs: Mapping[str, Mapping[str, object]],
    *,
    vocab_size: int,
    tokenizer_dir: Path | None,
) -> None:
    """Write a diffusers config folder (no weights) for ``from_single_file(config=...)``."""
    from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTokenizer

    from sdcore.tokenizer import build_offline_tokenizer, offline_vocab_size

    index = {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    for name in ("unet", "vae"):
        (folder / name).mkdir()
        (folder / name / "config.json").write_text(json.dumps(configs[name]), encoding="utf-8")
    text_config = {k: v for k, v in configs["text_encoder"].items() if k != "model_type"}
    text_encoder_config = CLIPTextConfig(**text_config)  # type: ignore[arg-type]  # kwargs dict
    text_encoder_config.save_pretrained(str(folder / "text_encoder"))
    EulerDiscreteScheduler(**configs["scheduler"]).save_pretrained(str(folder / "scheduler"))

    if tokenizer_dir is not None:
        tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    elif vocab_size == offline_vocab_size():
        tokenizer = build_offline_tokenizer()
    elif vocab_size == CLIP_VIT_L_VOCAB:
        try:
            tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_REPO, local_files_only=True)
        except OSError as exc:
            raise ModelLoadError(
                f"this checkpoint needs the CLIP ViT-L tokenizer ({CLIP_TOKENIZER_REPO}), which "
                "is not in the local Hugging Face cache; pass tokenizer_dir= or config="
            ) from exc
    else:
        raise UnsupportedModelError(f"no tokenizer known for a text encoder of {vocab_size} tokens")
    if len(tokenizer) != vocab_size:
        raise ModelLoadError(
            f"the tokenizer has {len(tokenizer)} tokens but the text encoder {vocab_size}"
        )
    tokenizer.save_pretrained(str(folder / "tokenizer"))


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_pipeline(
    path: Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    config: Path | None = None,
    tokenizer_dir: Path | None = None,
) -> StableDiffusionPipeline:
    """Load a Stable Diffusion pipeline from a diffusers folder or a single ``.safetensors`` file.

    Offline only. ``config`` is a diffusers folder whose configs (not weights) describe a
    single file; without it the configs are inferred (SD 1.x). ``tokenizer_dir`` gives the
    CLIP tokenizer for a real SD 1.x single file when the Hugging Face cache lacks it.
    The safety checker is never loaded. Raises :class:`ModelLoadError` with a message.
    """
    path = Path(path)
    family = detect_family(path)
    pipeline_cls = family.pipeline_class()
    common: dict[str, object] = {"dtype": dtype, "local_files_only": True}
    if family.key in ("sd1", "sd2"):
        common |= {"safety_checker": None, "requires_safety_checker": False}

    if path.is_dir():
        try:
            pipe = pipeline_cls.from_pretrained(str(path), **common)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{path}: cannot load the diffusers folder ({exc})") from exc
    else:
        if path.suffix.lower() != ".safetensors":
            raise UnsupportedModelError(
                f"{path.name}: only .safetensors single files are loaded (pickle formats "
                "such as .ckpt are never unpickled)"
            )
        if config is not None:
            pipe = _from_single_file(pipeline_cls, path, Path(config), common)
        elif not family.single_file_inference:
            raise UnsupportedModelError(
                f"{path.name}: a {family.key} single file needs config=<diffusers folder>"
            )
        else:
            header = read_single_file_header(path)
            configs = infer_sd1_configs(header)
            vocab = int(configs["text_encoder"]["vocab_size"])  # type: ignore[call-overload]
            with tempfile.TemporaryDirectory(prefix="atelier-sdconfig-") as tmp:
                _write_config_folder(
                    Path(tmp), configs, vocab_size=vocab, tokenizer_dir=tokenizer_dir
                )
                pipe = _from_single_file(pipeline_cls, path, Path(tmp), common)
    if torch.device(device) != torch.device("cpu"):
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe  # type: ignore[return-value]  # SD pipeline classes share the interface used


def _from_single_file(
    pipeline_cls: type[DiffusionPipeline],
    path: Path,
    config: Path,
    kwargs: Mapping[str, object],
) -> DiffusionPipeline:
    # Every SD family pipeline mixes in FromSingleFileMixin; DiffusionPipeline itself does not.
    from_single_file = pipeline_cls.from_single_file  # type: ignore[attr-defined]
    try:
        pipe: DiffusionPipeline = from_single_file(str(path), config=str(config), **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"{path.name}: cannot load the single file ({exc})") from exc
    return pipe


# --------------------------------------------------------------------------------------
# Writing an original (LDM) single file from a diffusers pipeline
# --------------------------------------------------------------------------------------

_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "time_emb_proj.": "emb_layers.1.",
    "conv_shortcut.": "skip_connection.",
}
_VAE_ATTENTION = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}


def unet_ldm_prefix_map(config: Mapping[str, object]) -> dict[str, str]:
    """Diffusers module prefix -> LDM prefix, for blocks (resnets need inner renames too)."""
    layers = int(config["layers_per_block"])  # type: ignore[call-overload]
    n_levels = len(config["block_out_channels"])  # type: ignore[arg-type]
    up_types = list(config["up_block_types"])  # type: ignore[call-overload]
    mapping: dict[str, str] = {}
    idx = 1
    for i in range(n_levels):
        for j in range(layers):
            mapping[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{idx}.0."
            mapping[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{idx}.1."
            idx += 1
        if i < n_levels - 1:
            mapping[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{idx}.0.op."
            idx += 1
    mapping["mid_block.resnets.0."] = "middle_block.0."
    mapping["mid_block.attentions.0."] = "middle_block.1."
    mapping["mid_block.resnets.1."] = "middle_block.2."
    idx = 0
    for i in range(n_levels):
        for j in range(layers + 1):
            mapping[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{idx}.0."
            mapping[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{idx}.1."
            if j == layers and i < n_levels - 1:
                slot = 2 if "CrossAttn" in up_types[i] else 1
                mapping[f"up_blocks.{i}.upsamplers.0.conv."] = f"output_blocks.{idx}.{slot}.conv."
            idx += 1
    return mapping


def _rename(key: str, prefixes: Mapping[str, str]) -> tuple[str, str] | None:
    for old, new in prefixes.items():
        if key.startswith(old):
            return new, key[len(old) :]
    return None


def _unet_to_original(
    state: Mapping[str, torch.Tensor], config: Mapping[str, object]
) -> dict[str, torch.Tensor]:
    blocks = unet_ldm_prefix_map(config)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if (top := _rename(key, _UNET_TOP)) is not None:
            out[UNET_PREFIX + top[0] + top[1]] = tensor
            continue
        found = _rename(key, blocks)
        if found is None:
            raise UnsupportedModelError(f"unet tensor {key} has no SD 1.x original name")
        prefix, rest = found
        if ".resnets." in key.split(rest)[0] or key.startswith("mid_block.resnets"):
            inner = _rename(rest, _UNET_RESNET)
            rest = inner[0] + inner[1] if inner else rest
        out[UNET_PREFIX + prefix + rest] = tensor
    return out


def _vae_to_original(
    state: Mapping[str, torch.Tensor], config: Mapping[str, object]
) -> dict[str, torch.Tensor]:
    n_levels = len(config["block_out_channels"])  # type: ignore[arg-type]
    prefixes: dict[str, str] = {
        "encoder.conv_norm_out.": "encoder.norm_out.",
        "decoder.conv_norm_out.": "decoder.norm_out.",
    }
    for side in ("encoder", "decoder"):
        prefixes[f"{side}.mid_block.resnets.0."] = f"{side}.mid.block_1."
        prefixes[f"{side}.mid_block.resnets.1."] = f"{side}.mid.block_2."
        prefixes[f"{side}.mid_block.attentions.0."] = f"{side}.mid.attn_1."
    for i in range(n_levels):
        prefixes[f"encoder.down_blocks.{i}.resnets."] = f"encoder.down.{i}.block."
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        up = n_levels - 1 - i
        prefixes[f"decoder.up_blocks.{i}.resnets."] = f"decoder.up.{up}.block."
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{up}.upsample."
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        found = _rename(key, prefixes)
        if found is None:
            out[VAE_PREFIX + key] = tensor  # conv_in, conv_out, quant convs keep their names
            continue
        prefix, rest = found
        if ".mid.attn_1." in prefix:
            inner = _rename(rest, _VAE_ATTENTION)
            rest = inner[0] + inner[1] if inner else rest
            if rest.endswith(".weight") and tensor.ndim == 2:
                tensor = tensor[:, :, None, None]  # original attention uses 1x1 convolutions
        rest = rest.replace("conv_shortcut.", "nin_shortcut.")
        out[VAE_PREFIX + prefix + rest] = tensor
    return out


def diffusers_to_original_state_dict(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    """The pipeline's weights under original SD 1.x single-file names."""
    text_state = pipe.text_encoder.state_dict()
    text: dict[str, torch.Tensor] = {}
    for key, tensor in text_state.items():
        name = key if key.startswith("text_model.") else "text_model." + key
        text[CLIP_PREFIX + name] = tensor
    return {
        **_unet_to_original(pipe.unet.state_dict(), pipe.unet.config),
        **_vae_to_original(pipe.vae.state_dict(), pipe.vae.config),
        **text,
    }


def save_original_single_file(
    pipe: StableDiffusionPipeline,
    path: Path,
    *,
    family: str = "sd1",
    resolution: int | None = None,
    title: str = "",
) -> Path:
    """Write ``pipe`` as one original-layout ``.safetensors`` file with ``modelspec.*`` metadata."""
    spec = FAMILIES[family]
    if spec.key != "sd1":
        raise UnsupportedModelError("only SD 1.x pipelines are written as original single files")
    size = resolution or spec.default_resolution
    state = diffusers_to_original_state_dict(pipe)
    metadata = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": spec.modelspec_architecture,
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.resolution": f"{size}x{size}",
        "modelspec.title": title or "Stable Diffusion 1.x",
    }
    write_safetensors(Path(path), state, metadata)
    return Path(path)


_SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write_safetensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a ``.safetensors`` file whose bytes depend only on its content.

    ``safetensors.torch.save_file`` orders the ``__metadata__`` keys differently from run to
    run (a hash map), so the same model would hash differently. Here the header is built
    with sorted keys and tensors are laid out in name order; the file is written atomically.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: dtype {tensor.dtype} cannot be written to safetensors")
        blob = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for blob in blobs:
            handle.write(blob)
    os.replace(tmp, path)
    return path
