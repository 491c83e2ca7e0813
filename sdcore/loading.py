"""Loading Stable Diffusion pipelines from local files, and writing original single files.

``load_pipeline`` takes either a diffusers folder (``model_index.json``) or a single-file
original checkpoint (``.safetensors``: ``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.*`` keys for SD 1.x; ``conditioner.embedders.0.transformer.*`` (CLIP) and
``conditioner.embedders.1.model.*`` (OpenCLIP) for SDXL) and never reaches the network
(``local_files_only=True``).

For a single file, diffusers' ``from_single_file`` needs a diffusers config folder. Unless the
caller gives one (``config=``), it is written to a temporary folder from what the file says:
the architecture comes from the tensor shapes (widths, depths, attention levels, text-encoder
size), the resolution from ``modelspec.resolution`` metadata, everything else from the
family's defaults. That works for every SD 1.x checkpoint with a CLIP ViT-L text encoder and
every SDXL base checkpoint (given the CLIP tokenizer, see :func:`load_pipeline`) and for the
tiny models (:mod:`sdcore.tiny`, :mod:`sdcore.tiny_xl`), whose offline tokenizer is recognised
by its vocabulary size. For SDXL the shapes also give the transformer depth per level, both
text encoders, the pooled-embedding width and the time-id embedding width.

Families (``sd1``, ``sd2``, ``sdxl``) live in a small registry, :data:`FAMILIES`, with the
pipeline class and defaults, so another family plugs in with one entry; single-file config
inference is implemented for ``sd1`` and ``sdxl``; ``sd2`` needs ``config=``.
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
    "SDXL_SCHEDULER_CONFIG",
    "ModelFamily",
    "ModelLoadError",
    "UnsupportedModelError",
    "detect_family",
    "detect_family_from_keys",
    "diffusers_to_original_state_dict",
    "infer_sd1_configs",
    "infer_sdxl_configs",
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
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
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

# SDXL 1.0 base ships the same Euler schedule (scaled linear betas, leading spacing).
SDXL_SCHEDULER_CONFIG: dict[str, object] = {
    **SD1_SCHEDULER_CONFIG,
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
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
        single_file_inference=True,
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


def _infer_clip_text_config(s: Mapping[str, tuple[int, ...]], t: str) -> dict[str, object]:
    """The CLIPTextModel (ViT-L layout) config of the encoder whose keys start with ``t``
    (``...text_model.``), from tensor shapes: SD 1.x's encoder and SDXL's first."""
    vocab, hidden = s[f"{t}embeddings.token_embedding.weight"]
    return {
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


def _infer_vae_config(
    s: Mapping[str, tuple[int, ...]], resolution: int, *, scaling_factor: float
) -> dict[str, object]:
    """The KL autoencoder's diffusers config from ``first_stage_model.*`` shapes (SD 1.x, SDXL)."""
    v = VAE_PREFIX
    vae_levels = _indices(s, re.escape(v) + r"encoder\.down\.(\d+)\.")
    vae_layers = len(_indices(s, re.escape(v) + r"encoder\.down\.0\.block\.(\d+)\."))
    return {
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
        "scaling_factor": scaling_factor,
    }


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

        vae = _infer_vae_config(s, resolution, scaling_factor=0.18215)

        text = _infer_clip_text_config(s, CLIP_PREFIX + "text_model.")
    except (KeyError, IndexError, ValueError) as exc:
        raise UnsupportedModelError(
            f"an SD 1.x checkpoint is missing the tensor {exc}; it may be damaged or pruned"
        ) from exc
    return {"unet": unet, "vae": vae, "text_encoder": text, "scheduler": SD1_SCHEDULER_CONFIG}


def _unet_heads(channels: int) -> int:
    """SDXL's heads are 64 wide (320 -> 5, 640 -> 10, 1280 -> 20); toy widths 8 wide."""
    return _clip_heads(channels)


def infer_sdxl_configs(header: SingleFileHeader) -> dict[str, dict[str, object]]:
    """Diffusers configs of an SDXL (SGM layout) single file, from its tensor shapes.

    Inferred: UNet widths, layers per level, which levels have attention and how many
    transformer blocks each has, cross-attention width, heads (64 wide), linear projections,
    the added text-time embedding (pooled width from ``text_projection``, the time-id
    embedding width from ``label_emb``); both text encoders' widths, depths and MLP sizes; the
    autoencoder. The resolution comes from ``modelspec.resolution`` (default 1024).
    """
    s = header.shapes
    family = FAMILIES["sdxl"]
    u = UNET_PREFIX
    try:
        input_ids = _indices(s, re.escape(u) + r"input_blocks\.(\d+)\.")
        downsample_ids = [i for i in input_ids if f"{u}input_blocks.{i}.0.op.weight" in s]
        layers_per_block = (downsample_ids[0] - 1) if downsample_ids else len(input_ids) - 1
        n_levels = len(downsample_ids) + 1
        block_out: list[int] = []
        down_types: list[str] = []
        depths: list[int] = []
        for level in range(n_levels):
            first = 1 + level * (layers_per_block + 1)
            block_out.append(s[f"{u}input_blocks.{first}.0.in_layers.2.weight"][0])
            attn = f"{u}input_blocks.{first}.1."
            has_attn = f"{attn}proj_in.weight" in s
            down_types.append("CrossAttnDownBlock2D" if has_attn else "DownBlock2D")
            pattern = re.escape(attn) + r"transformer_blocks\.(\d+)\."
            depths.append(len(_indices(s, pattern)) if has_attn else 1)
        mid_depth = len(
            _indices(s, re.escape(f"{u}middle_block.1.") + r"transformer_blocks\.(\d+)\.")
        )
        if mid_depth and mid_depth != depths[-1]:
            raise UnsupportedModelError(
                f"the middle block has {mid_depth} transformer blocks but the deepest level "
                f"{depths[-1]}: a UNet layout diffusers cannot express"
            )
        up_types = [t.replace("Down", "Up") for t in reversed(down_types)]
        proj_in = s[f"{u}middle_block.1.proj_in.weight"]
        cross_dim = s[f"{u}middle_block.1.transformer_blocks.0.attn2.to_k.weight"][1]
        added_in = s[f"{u}label_emb.0.0.weight"][1]
        o = SDXL_OPEN_CLIP_PREFIX
        pooled = s[f"{o}text_projection"][1]
        if (added_in - pooled) <= 0 or (added_in - pooled) % 6:
            raise UnsupportedModelError(
                f"the added embedding takes {added_in} inputs, which is not the pooled width "
                f"{pooled} plus six time ids: not an SDXL base UNet"
            )
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
            "transformer_layers_per_block": depths,
            "cross_attention_dim": cross_dim,
            "attention_head_dim": [_unet_heads(ch) for ch in block_out],
            "use_linear_projection": len(proj_in) == 2,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": (added_in - pooled) // 6,
            "projection_class_embeddings_input_dim": added_in,
            "norm_num_groups": 32,
        }

        vae = _infer_vae_config(s, resolution, scaling_factor=0.13025) | {"force_upcast": True}

        text = _infer_clip_text_config(s, SDXL_CLIP_PREFIX + "text_model.")
        vocab_2, hidden_2 = s[f"{o}token_embedding.weight"]
        text_2 = {
            "architectures": ["CLIPTextModelWithProjection"],
            "model_type": "clip_text_model",
            "vocab_size": vocab_2,
            "hidden_size": hidden_2,
            "intermediate_size": s[f"{o}transformer.resblocks.0.mlp.c_fc.weight"][0],
            "num_hidden_layers": len(
                _indices(s, re.escape(o) + r"transformer\.resblocks\.(\d+)\.")
            ),
            "num_attention_heads": _clip_heads(hidden_2),
            "max_position_embeddings": s[f"{o}positional_embedding"][0],
            "hidden_act": "gelu",
            "projection_dim": pooled,
            "bos_token_id": vocab_2 - 2,
            "eos_token_id": vocab_2 - 1,
            "pad_token_id": vocab_2 - 1,
        }
    except (KeyError, IndexError, ValueError) as exc:
        raise UnsupportedModelError(
            f"an SDXL checkpoint is missing the tensor {exc}; it may be damaged, pruned or a "
            "refiner (only SDXL base layouts are loaded)"
        ) from exc
    hidden = text["hidden_size"]
    if hidden == hidden_2:
        raise UnsupportedModelError(
            f"both SDXL text encoders are {hidden} wide; diffusers tells them apart by width"
        )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text,
        "text_encoder_2": text_2,
        "scheduler": SDXL_SCHEDULER_CONFIG,
    }


def _write_config_folder(
    folder: Path,
    configs: Mapping[str, Mapping[str, object]],
    *,
    vocab_size: int,
    tokenizer_dir: Path | None,
    family: str = "sd1",
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
    if family == "sdxl":
        index = {
            "_class_name": "StableDiffusionXLPipeline",
            "feature_extractor": [None, None],
            "force_zeros_for_empty_prompt": True,
            "image_encoder": [None, None],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
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
    if "text_encoder_2" in configs:
        text_2 = {k: v for k, v in configs["text_encoder_2"].items() if k != "model_type"}
        CLIPTextConfig(**text_2).save_pretrained(str(folder / "text_encoder_2"))  # type: ignore[arg-type]
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
    if "text_encoder_2" in configs:
        # SDXL's second tokenizer is the same BPE vocabulary; OpenCLIP ViT-bigG pads with "!"
        # (as stabilityai/stable-diffusion-xl-base-1.0's tokenizer_2 does), the tiny model with
        # the end token.
        if vocab_size == CLIP_VIT_L_VOCAB and tokenizer_dir is None:
            tokenizer.pad_token = "!"
        tokenizer.save_pretrained(str(folder / "tokenizer_2"))


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
            infer = infer_sdxl_configs if family.key == "sdxl" else infer_sd1_configs
            configs = infer(header)
            vocab = int(configs["text_encoder"]["vocab_size"])  # type: ignore[call-overload]
            with tempfile.TemporaryDirectory(prefix="atelier-sdconfig-") as tmp:
                _write_config_folder(
                    Path(tmp),
                    configs,
                    vocab_size=vocab,
                    tokenizer_dir=tokenizer_dir,
                    family=family.key,
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
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
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
            raise UnsupportedModelError(f"unet tensor {key} has no original (LDM) name")
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


def _open_clip_to_original(
    state: Mapping[str, torch.Tensor], prefix: str
) -> dict[str, torch.Tensor]:
    """A ``CLIPTextModelWithProjection`` state dict under OpenCLIP names (SDXL's second encoder).

    Separate q/k/v projections become one ``in_proj`` (q, k, v stacked); ``text_projection`` is
    stored transposed (``hidden x projection``), as OpenCLIP multiplies ``x @ proj``.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    layer_re = re.compile(r"(?:text_model\.)?encoder\.layers\.(\d+)\.(.+)")
    for key, tensor in state.items():
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = tensor.T.contiguous()
            continue
        name = key.removeprefix("text_model.")
        if name == "embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = tensor
        elif name == "embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = tensor
        elif name.startswith("final_layer_norm."):
            out[prefix + "ln_final." + name.removeprefix("final_layer_norm.")] = tensor
        elif (m := layer_re.fullmatch(name)) is not None:
            layer, rest = int(m.group(1)), m.group(2)
            block = f"{prefix}transformer.resblocks.{layer}."
            if (q := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)) is not None:
                qkv.setdefault((layer, q.group(2)), {})[q.group(1)] = tensor
                continue
            rest = (
                rest.replace("self_attn.out_proj.", "attn.out_proj.")
                .replace("layer_norm1.", "ln_1.")
                .replace("layer_norm2.", "ln_2.")
                .replace("mlp.fc1.", "mlp.c_fc.")
                .replace("mlp.fc2.", "mlp.c_proj.")
            )
            out[block + rest] = tensor
        else:
            raise UnsupportedModelError(f"text_encoder_2 tensor {key} has no OpenCLIP name")
    for (layer, kind), parts in qkv.items():
        stacked = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = stacked
    return out


def _clip_to_original(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = key if key.startswith("text_model.") else "text_model." + key
        out[prefix + name] = tensor
    return out


def diffusers_to_original_state_dict(pipe: DiffusionPipeline) -> dict[str, torch.Tensor]:
    """The pipeline's weights under original single-file names (SD 1.x, or SDXL's SGM layout)."""
    unet, vae = pipe.unet, pipe.vae
    if getattr(pipe, "text_encoder_2", None) is not None:
        text = {
            **_clip_to_original(pipe.text_encoder.state_dict(), SDXL_CLIP_PREFIX),
            **_open_clip_to_original(pipe.text_encoder_2.state_dict(), SDXL_OPEN_CLIP_PREFIX),
        }
    else:
        text = _clip_to_original(pipe.text_encoder.state_dict(), CLIP_PREFIX)
    return {
        **_unet_to_original(unet.state_dict(), unet.config),
        **_vae_to_original(vae.state_dict(), vae.config),
        **text,
    }


def save_original_single_file(
    pipe: DiffusionPipeline,
    path: Path,
    *,
    family: str = "sd1",
    resolution: int | None = None,
    title: str = "",
) -> Path:
    """Write ``pipe`` as one original-layout ``.safetensors`` file with ``modelspec.*`` metadata.

    ``family`` is ``sd1`` (``cond_stage_model.transformer.*``) or ``sdxl`` (SGM layout, as
    A1111, ComfyUI and Civitai's SDXL checkpoints: ``conditioner.embedders.0.transformer.*``,
    ``conditioner.embedders.1.model.*``).
    """
    spec = FAMILIES[family]
    if spec.key not in ("sd1", "sdxl"):
        raise UnsupportedModelError("only SD 1.x and SDXL pipelines are written as single files")
    has_second_encoder = getattr(pipe, "text_encoder_2", None) is not None
    if has_second_encoder != (spec.key == "sdxl"):
        raise UnsupportedModelError(f"this pipeline is not a {spec.key} pipeline")
    size = resolution or spec.default_resolution
    state = diffusers_to_original_state_dict(pipe)
    metadata = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": spec.modelspec_architecture,
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.resolution": f"{size}x{size}",
        "modelspec.title": title
        or ("Stable Diffusion XL" if spec.key == "sdxl" else "Stable Diffusion 1.x"),
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
