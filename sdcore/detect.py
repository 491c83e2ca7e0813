"""What a safetensors file is, from its tensor names and shapes (never the tensor data).

`detect` tells the kind (checkpoint, LoRA, LyCORIS, embedding, VAE, ControlNet) and the
architecture (SD 1.x, SD 2.x, SDXL; SD3 and Flux when they show plainly), and for
adapters the rank, alpha and key format. The architecture of the UNet family comes from
the cross-attention context width, the in-features of any ``attn2.to_k`` weight: 768 for
SD 1.x (CLIP ViT-L), 1024 for SD 2.x (OpenCLIP ViT-H), 2048 for SDXL (both encoders
concatenated), 1280 for the SDXL refiner. When the shapes say nothing, kohya's
``ss_base_model_version`` / ``ss_v2`` and ``modelspec.architecture`` metadata decide.

`summarize_metadata` turns the metadata strings into a JSON-able summary, and
`read_lora_alpha` reads the one small ``.alpha`` scalar kohya files keep alpha in.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sdcore.safetensors_header import SafetensorsHeader, TensorInfo

__all__ = [
    "ARCHITECTURES",
    "KINDS",
    "LORA_FORMATS",
    "Detection",
    "CIVITAI_BASE_MODELS",
    "architecture_from_metadata",
    "civitai_base_model",
    "detect",
    "read_lora_alpha",
    "summarize_metadata",
]

KINDS = ("checkpoint", "lora", "lycoris", "embedding", "vae", "controlnet", "unknown")
ARCHITECTURES = ("sd1", "sd2", "sdxl", "sd3", "flux", "unknown")
LORA_FORMATS = ("kohya", "diffusers", "peft")

_CONTEXT_DIM_ARCH = {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl"}
_EMBEDDING_DIM_ARCH = {768: "sd1", 1024: "sd2"}


@dataclass(frozen=True)
class Detection:
    """The kind and architecture of a file, with adapter facts and JSON-able details."""

    kind: str
    architecture: str
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_format: str | None = None
    embedding_vectors: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def detect(header: SafetensorsHeader) -> Detection:
    """Tell what the file whose header this is holds, from names and shapes only."""
    tensors = header.tensors
    metadata = header.metadata
    for detector in (_detect_adapter, _detect_embedding, _detect_controlnet, _detect_model):
        found = detector(tensors, metadata)
        if found is not None:
            return found
    return Detection(
        kind="unknown",
        architecture=architecture_from_metadata(metadata) or "unknown",
        details={"tensor_count": len(tensors)},
    )


# --- architecture helpers -----------------------------------------------------------------


def architecture_from_metadata(metadata: Mapping[str, str]) -> str | None:
    """The architecture kohya or modelspec metadata declares, or None."""
    spec = metadata.get("modelspec.architecture", "").lower()
    if spec:
        for prefix, arch in (
            ("stable-diffusion-xl", "sdxl"),
            ("stable-diffusion-v1", "sd1"),
            ("stable-diffusion-v2", "sd2"),
            ("stable-diffusion-v3", "sd3"),
            ("stable-diffusion-3", "sd3"),
            ("flux", "flux"),
        ):
            if spec.startswith(prefix):
                return arch
    base = metadata.get("ss_base_model_version", "").lower()
    if base:
        for prefix, arch in (
            ("sdxl", "sdxl"),
            ("sd_v1", "sd1"),
            ("sd_v2", "sd2"),
            ("sd3", "sd3"),
            ("flux", "flux"),
        ):
            if base.startswith(prefix):
                return arch
    if metadata.get("ss_v2", "").lower() == "true":
        return "sd2"
    if metadata.get("ss_v2", "").lower() == "false":
        return "sd1"
    return None


# --- base-model names as Civitai writes them -----------------------------------------------

# Civitai's base-model names per family; the first is the family's default. The family
# (``sd1``, ``sdxl``...) decides what loads with what; the name is what people read and filter.
CIVITAI_BASE_MODELS: dict[str, tuple[str, ...]] = {
    "sd1": ("SD 1.5", "SD 1.4", "SD 1.5 LCM"),
    "sd2": ("SD 2.1", "SD 2.0"),
    "sdxl": (
        "SDXL 1.0",
        "Pony",
        "Illustrious",
        "NoobAI",
        "SDXL Turbo",
        "SDXL Lightning",
        "SDXL 0.9",
    ),
    "sd3": ("SD 3", "SD 3.5"),
    "flux": ("Flux.1 D", "Flux.1 S"),
    "other": ("Other",),
    "unknown": ("Other",),
}
# Words in names or metadata that say which descendant a file is, most specific first
# (NoobAI is trained from Illustrious; a NoobAI name may mention both).
_NAME_HINTS: dict[str, tuple[tuple[str, str], ...]] = {
    "sdxl": (
        ("noobai", "NoobAI"),
        ("noob", "NoobAI"),
        ("illustrious", "Illustrious"),
        ("pony", "Pony"),
        ("turbo", "SDXL Turbo"),
        ("lightning", "SDXL Lightning"),
        ("sdxl_base_v0-9", "SDXL 0.9"),
    ),
    "sd1": (("lcm", "SD 1.5 LCM"), ("v1-4", "SD 1.4"), ("sd 1.4", "SD 1.4"), ("sd_v1-4", "SD 1.4")),
    "sd2": (("v2-0", "SD 2.0"), ("sd 2.0", "SD 2.0"), ("512-base", "SD 2.0")),
    "sd3": (("3.5", "SD 3.5"), ("3-5", "SD 3.5")),
    "flux": (("schnell", "Flux.1 S"),),
}
# Metadata keys whose values name the file's base model (kohya, modelspec).
_NAME_KEYS = (
    "modelspec.architecture",
    "modelspec.title",
    "ss_base_model_version",
    "ss_sd_model_name",
    "ss_output_name",
)


def civitai_base_model(
    family: str, metadata: Mapping[str, str] | None = None, names: Iterable[str] = ()
) -> str:
    """The base model as Civitai names it (``SD 1.5``, ``SDXL 1.0``, ``Pony``, ``Illustrious``,
    ``NoobAI``...), for a file of ``family``: from its metadata (``modelspec.*``,
    ``ss_base_model_version``, ``ss_sd_model_name``...) and ``names`` (file and model names),
    else the family's default. Never a name of another family."""
    family = family if family in CIVITAI_BASE_MODELS else "unknown"
    texts = [str(v).lower() for k, v in (metadata or {}).items() if k in _NAME_KEYS]
    texts += [str(n).lower() for n in names]
    for word, label in _NAME_HINTS.get(family, ()):
        if any(word in text for text in texts):
            return label
    return CIVITAI_BASE_MODELS[family][0]


def _context_dim(tensors: Mapping[str, TensorInfo], *, within: str = "") -> int | None:
    """In-features of the first cross-attention key projection under `within`."""
    for name in sorted(tensors):
        if not name.startswith(within):
            continue
        if name.endswith(("attn2.to_k.weight", "attn2_to_k.weight")):
            shape = tensors[name].shape
            if len(shape) == 2:
                return shape[1]
    return None


def _with_arch(
    architecture: str | None, metadata: Mapping[str, str], details: dict[str, Any]
) -> str:
    """Shapes first; metadata when shapes say nothing; note any disagreement."""
    declared = architecture_from_metadata(metadata)
    if architecture is not None:
        details["architecture_source"] = "shapes"
        if declared is not None and declared != architecture:
            details["metadata_architecture"] = declared
        return architecture
    if declared is not None:
        details["architecture_source"] = "metadata"
        return declared
    return "unknown"


# --- adapters: LoRA, LoCon, LyCORIS -------------------------------------------------------

_LORA_DOWN_SUFFIXES = (
    ".lora_down.weight",
    ".lora_A.weight",
    ".lora.down.weight",
    "_lora.down.weight",
    ".lora_linear_layer.down.weight",
)
_LORA_UP_SUFFIXES = (
    ".lora_up.weight",
    ".lora_B.weight",
    ".lora.up.weight",
    "_lora.up.weight",
    ".lora_linear_layer.up.weight",
)
_LYCORIS_ALGOS = (
    (".hada_w1_a", "loha"),
    (".lokr_w1", "lokr"),
    (".lokr_w1_a", "lokr"),
    (".lokr_w2", "lokr"),
    (".lokr_w2_a", "lokr"),
    (".oft_blocks", "oft"),
    (".oft_diag", "oft"),
    (".diff", "full"),
)
_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_")


def _detect_adapter(
    tensors: Mapping[str, TensorInfo], metadata: Mapping[str, str]
) -> Detection | None:
    downs = {n: t for n, t in tensors.items() if n.endswith(_LORA_DOWN_SUFFIXES)}
    ups = [n for n in tensors if n.endswith(_LORA_UP_SUFFIXES)]
    algos = sorted({algo for n in tensors for sfx, algo in _LYCORIS_ALGOS if n.endswith(sfx)})
    if not downs and not ups and not algos:
        return None
    details: dict[str, Any] = {}
    names = list(tensors)
    lora_format = _lora_format(names)
    ranks = _adapter_ranks(tensors, downs)
    rank = _typical(ranks)
    if ranks:
        details["ranks"] = sorted(set(ranks))
    details["modules"] = len({_module_of(n) for n in names if not n.endswith(".alpha")})
    conv = [n for n, t in downs.items() if len(t.shape) == 4 and tuple(t.shape[2:]) != (1, 1)]
    if conv:
        details["locon"] = True
        details["conv_modules"] = len(conv)
        details["conv_rank"] = _typical([downs[n].shape[0] for n in conv])
    if any(n.endswith(".dora_scale") or "lora_magnitude_vector" in n for n in names):
        details["dora"] = True
    if algos:
        details["algorithm"] = "+".join(algos)
    elif conv:
        details["algorithm"] = "locon"
    else:
        details["algorithm"] = "lora"
    details["targets"] = _adapter_targets(names)
    if any(n.endswith(".alpha") for n in names):
        details["has_alpha_tensors"] = True
    network_args = _json_or_none(metadata.get("ss_network_args"))
    if isinstance(network_args, dict):
        details["network_args"] = network_args
    kind = "lycoris" if algos else "lora"
    return Detection(
        kind=kind,
        architecture=_with_arch(_adapter_architecture(tensors, downs), metadata, details),
        lora_rank=rank,
        lora_alpha=_float_or_none(metadata.get("ss_network_alpha")),
        lora_format=lora_format,
        details=details,
    )


def _module_of(name: str) -> str:
    markers = (".lora", "_lora.", ".hada_", ".lokr_", ".oft_", ".diff", ".alpha", ".dora_scale")
    for marker in markers:
        index = name.find(marker)
        if index > 0:
            return name[:index]
    return name.rsplit(".", 1)[0]


def _lora_format(names: Iterable[str]) -> str | None:
    names = list(names)
    if any(n.startswith(_KOHYA_PREFIXES) for n in names):
        return "kohya"
    if any(n.startswith("base_model.model.") for n in names):
        return "peft"
    if any(n.startswith(("unet.", "text_encoder", "transformer.")) for n in names):
        return "diffusers"
    if any(".lora_A." in n or ".lora_B." in n for n in names):
        return "peft"
    if any(".lora.down." in n or "_lora.down." in n for n in names):
        return "diffusers"
    return None


def _adapter_ranks(tensors: Mapping[str, TensorInfo], downs: Mapping[str, TensorInfo]) -> list[int]:
    ranks = [t.shape[0] for t in downs.values() if t.shape]
    for name, info in tensors.items():
        if name.endswith((".hada_w1_b", ".lokr_w1_b", ".lokr_w2_b")) and info.shape:
            ranks.append(info.shape[0])
    return ranks


def _typical(values: list[int]) -> int | None:
    """The most common value; the largest among equally common ones."""
    if not values:
        return None
    counts = Counter(values)
    return max(counts, key=lambda v: (counts[v], v))


def _adapter_targets(names: list[str]) -> list[str]:
    targets = set()
    for name in names:
        if name.startswith(("lora_unet_", "unet.", "base_model.model.", "transformer.")):
            targets.add("unet")
        elif name.startswith(("lora_te", "text_encoder")):
            targets.add("text_encoder")
    return sorted(targets)


def _adapter_architecture(
    tensors: Mapping[str, TensorInfo], downs: Mapping[str, TensorInfo]
) -> str | None:
    names = list(tensors)
    if any(n.startswith("lora_unet_joint_blocks") for n in names):
        return "sd3"
    if any(
        n.startswith(("lora_unet_double_blocks", "lora_unet_single_blocks"))
        or "single_transformer_blocks." in n
        for n in names
    ):
        return "flux"
    for name, info in sorted(downs.items()):
        if name.startswith("transformer.transformer_blocks.") and len(info.shape) == 2:
            # Flux's hidden width is 3072; SD3's is 1536 (medium) or 2432 (3.5 large).
            return "flux" if info.shape[1] == 3072 else "sd3"
    if any(n.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for n in names):
        return "sdxl"
    for name, info in sorted(downs.items()):
        is_cross_key = any(m in name for m in ("attn2_to_k", "attn2.to_k", "attn2.processor.to_k"))
        if is_cross_key and len(info.shape) == 2 and info.shape[1] in _CONTEXT_DIM_ARCH:
            return _CONTEXT_DIM_ARCH[info.shape[1]]
    for name, info in sorted(downs.items()):
        is_te_attn = name.startswith(("lora_te_", "text_encoder.")) and "self_attn" in name
        if is_te_attn and "out_proj" not in name and len(info.shape) == 2:
            width = info.shape[1]
            if width in _EMBEDDING_DIM_ARCH:
                return _EMBEDDING_DIM_ARCH[width]
    return None


def read_lora_alpha(path: str | os.PathLike[str], header: SafetensorsHeader) -> float | None:
    """Alpha from the first ``.alpha`` scalar in the file (kohya keeps it in tensors).

    Reads only that scalar's few bytes; None when the file has no usable ``.alpha``.
    """
    candidates = sorted(
        (t for n, t in header.tensors.items() if n.endswith(".alpha") and t.numel == 1),
        key=lambda t: (t.start, t.name),
    )
    for info in candidates:
        if info.dtype not in _SCALAR_FORMATS and info.dtype != "BF16":
            continue
        with open(path, "rb") as fh:
            fh.seek(header.data_offset + info.start)
            raw = fh.read(info.nbytes)
        if len(raw) != info.nbytes:
            return None
        value = _decode_scalar(info.dtype, raw)
        if value is not None and math.isfinite(value):
            return value
    return None


_SCALAR_FORMATS = {
    "F16": "<e",
    "F32": "<f",
    "F64": "<d",
    "I8": "<b",
    "U8": "<B",
    "I16": "<h",
    "U16": "<H",
    "I32": "<i",
    "U32": "<I",
    "I64": "<q",
    "U64": "<Q",
}


def _decode_scalar(dtype: str, raw: bytes) -> float | None:
    if dtype == "BF16":
        (bits,) = struct.unpack("<H", raw)
        (value,) = struct.unpack("<f", struct.pack("<I", bits << 16))
        return float(value)
    fmt = _SCALAR_FORMATS.get(dtype)
    if fmt is None:
        return None
    (value,) = struct.unpack(fmt, raw)
    return float(value)


# --- textual-inversion embeddings ----------------------------------------------------------


def _detect_embedding(
    tensors: Mapping[str, TensorInfo], metadata: Mapping[str, str]
) -> Detection | None:
    names = set(tensors)
    details: dict[str, Any] = {}
    if names and names <= {"clip_l", "clip_g"}:
        first = tensors["clip_l"] if "clip_l" in names else tensors["clip_g"]
        details["layout"] = "sdxl"
        details["dims"] = {n: _vector_dim(tensors[n].shape) for n in sorted(names)}
        arch = "sdxl" if names == {"clip_l", "clip_g"} else None
        return Detection(
            kind="embedding",
            architecture=_with_arch(arch, metadata, details),
            embedding_vectors=_vector_count(first.shape),
            details=details,
        )
    if names == {"emb_params"}:
        info = tensors["emb_params"]
        details["layout"] = "emb_params"
    elif names and all(n.startswith("string_to_param.") for n in names) and len(names) == 1:
        info = tensors[next(iter(names))]
        details["layout"] = "string_to_param"
        details["token"] = info.name.split(".", 1)[1]
    else:
        return None
    if len(info.shape) not in (1, 2):
        return None
    dim = _vector_dim(info.shape)
    details["dim"] = dim
    return Detection(
        kind="embedding",
        architecture=_with_arch(_EMBEDDING_DIM_ARCH.get(dim), metadata, details),
        embedding_vectors=_vector_count(info.shape),
        details=details,
    )


def _vector_count(shape: tuple[int, ...]) -> int:
    return shape[0] if len(shape) == 2 else 1


def _vector_dim(shape: tuple[int, ...]) -> int:
    return shape[-1] if shape else 0


# --- ControlNet --------------------------------------------------------------------------


def _detect_controlnet(
    tensors: Mapping[str, TensorInfo], metadata: Mapping[str, str]
) -> Detection | None:
    names = list(tensors)
    if any(n.startswith("control_model.") for n in names):
        layout, within = "ldm", "control_model."
    elif any("input_hint_block." in n for n in names):
        layout, within = "ldm", ""
    elif any(
        n.startswith(("controlnet_cond_embedding.", "controlnet_down_blocks.")) for n in names
    ):
        layout, within = "diffusers", ""
    else:
        return None
    details: dict[str, Any] = {"layout": layout}
    context = _context_dim(tensors, within=within)
    if context is not None:
        details["context_dim"] = context
    arch = _CONTEXT_DIM_ARCH.get(context) if context is not None else None
    if arch is None and any(n.startswith(("add_embedding.", "label_emb.")) for n in names):
        arch = "sdxl"
    return Detection(
        kind="controlnet", architecture=_with_arch(arch, metadata, details), details=details
    )


# --- full models: checkpoints, UNets, VAEs -----------------------------------------------

_UNET_PREFIX = "model.diffusion_model."


def _detect_model(
    tensors: Mapping[str, TensorInfo], metadata: Mapping[str, str]
) -> Detection | None:
    names = list(tensors)
    has = _prefix_checker(names)
    if has(_UNET_PREFIX):
        return _single_file_checkpoint(tensors, metadata, has)
    if has("double_blocks.") and has("single_blocks."):
        details: dict[str, Any] = {"layout": "flux", "components": ["unet"]}
        return Detection(
            kind="checkpoint", architecture=_with_arch("flux", metadata, details), details=details
        )
    if has("joint_blocks."):
        details = {"layout": "sd3", "components": ["unet"]}
        return Detection(
            kind="checkpoint", architecture=_with_arch("sd3", metadata, details), details=details
        )
    if has("input_blocks.") and has("middle_block."):
        return _unet_only(tensors, metadata, layout="ldm", conv_in="input_blocks.0.0.weight")
    if has("down_blocks.") and "conv_in.weight" in tensors and has("time_embedding."):
        return _unet_only(tensors, metadata, layout="diffusers", conv_in="conv_in.weight")
    for prefix in ("first_stage_model.", "vae.", ""):
        vae = _vae(tensors, metadata, prefix)
        if vae is not None:
            return vae
    return None


def _prefix_checker(names: list[str]) -> Callable[[str], bool]:
    def has(prefix: str) -> bool:
        return any(n.startswith(prefix) for n in names)

    return has


def _single_file_checkpoint(
    tensors: Mapping[str, TensorInfo], metadata: Mapping[str, str], has: Callable[[str], bool]
) -> Detection:
    components = ["unet"]
    if has("first_stage_model."):
        components.append("vae")
    if has("cond_stage_model.") or has("conditioner."):
        components.append("text_encoder")
    details: dict[str, Any] = {"layout": "ldm", "components": components}
    arch: str | None = None
    if has(_UNET_PREFIX + "joint_blocks."):
        arch = "sd3"
    elif has(_UNET_PREFIX + "double_blocks."):
        arch = "flux"
    else:
        context = _context_dim(tensors, within=_UNET_PREFIX)
        if context is not None:
            details["context_dim"] = context
            arch = _CONTEXT_DIM_ARCH.get(context)
            if context == 1280:
                details["variant"] = "refiner"
        if arch is None:
            if has("conditioner.embedders.1.model."):
                arch = "sdxl"
            elif has("cond_stage_model.model."):
                arch = "sd2"
            elif has("cond_stage_model.transformer."):
                arch = "sd1"
        _unet_variant(tensors, _UNET_PREFIX + "input_blocks.0.0.weight", details)
    if "v_pred" in tensors:
        details["prediction"] = "v"
    if "edm_vpred.sigma_max" in tensors or "edm_vpred.sigma_min" in tensors:
        details["prediction"] = "v_edm"
    return Detection(
        kind="checkpoint", architecture=_with_arch(arch, metadata, details), details=details
    )


def _unet_variant(tensors: Mapping[str, TensorInfo], conv_in: str, details: dict[str, Any]) -> None:
    info = tensors.get(conv_in)
    if info is None or len(info.shape) != 4:
        return
    channels = info.shape[1]
    details["in_channels"] = channels
    if channels == 9:
        details["variant"] = "inpainting"
    elif channels == 8:
        details["variant"] = "instruct_pix2pix"


def _unet_only(
    tensors: Mapping[str, TensorInfo], metadata: Mapping[str, str], *, layout: str, conv_in: str
) -> Detection:
    details: dict[str, Any] = {"layout": layout, "components": ["unet"]}
    context = _context_dim(tensors)
    arch: str | None = None
    if context is not None:
        details["context_dim"] = context
        arch = _CONTEXT_DIM_ARCH.get(context)
        if context == 1280:
            details["variant"] = "refiner"
    _unet_variant(tensors, conv_in, details)
    return Detection(
        kind="checkpoint", architecture=_with_arch(arch, metadata, details), details=details
    )


def _vae(
    tensors: Mapping[str, TensorInfo], metadata: Mapping[str, str], prefix: str
) -> Detection | None:
    names = [n[len(prefix) :] for n in tensors if n.startswith(prefix)]
    if not names or (prefix and len(names) != len(tensors)):
        return None
    roots = {n.split(".", 1)[0] for n in names}
    if not roots <= {"encoder", "decoder", "quant_conv", "post_quant_conv"}:
        return None
    if "decoder" not in roots and "encoder" not in roots:
        return None
    if any(n.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for n in names):
        layout = "diffusers"
    elif any(n.startswith(("encoder.down.", "decoder.up.")) for n in names):
        layout = "ldm"
    else:
        return None
    details: dict[str, Any] = {"layout": layout}
    conv_in = tensors.get(prefix + "decoder.conv_in.weight")
    if conv_in is not None and len(conv_in.shape) == 4:
        details["latent_channels"] = conv_in.shape[1]
    # The SD 1.x, 2.x and SDXL VAEs share one architecture: shapes cannot tell them apart.
    return Detection(kind="vae", architecture=_with_arch(None, metadata, details), details=details)


# --- metadata ----------------------------------------------------------------------------

_KOHYA_INTS = {
    "ss_network_dim",
    "ss_num_train_images",
    "ss_num_reg_images",
    "ss_num_batches_per_epoch",
    "ss_num_epochs",
    "ss_epoch",
    "ss_steps",
    "ss_max_train_steps",
    "ss_lr_warmup_steps",
    "ss_gradient_accumulation_steps",
    "ss_clip_skip",
    "ss_seed",
    "ss_max_token_length",
    "ss_total_batch_size",
    "ss_training_started_at_step",
}
_KOHYA_FLOATS = {
    "ss_network_alpha",
    "ss_learning_rate",
    "ss_unet_lr",
    "ss_text_encoder_lr",
    "ss_noise_offset",
    "ss_min_snr_gamma",
    "ss_max_grad_norm",
    "ss_training_started_at",
    "ss_training_finished_at",
    "ss_prior_loss_weight",
    "ss_scale_weight_norms",
    "ss_multires_noise_discount",
    "ss_adaptive_noise_scale",
}
_KOHYA_BOOLS = {
    "ss_v2",
    "ss_cache_latents",
    "ss_color_aug",
    "ss_flip_aug",
    "ss_enable_bucket",
    "ss_full_fp16",
    "ss_gradient_checkpointing",
    "ss_shuffle_caption",
    "ss_random_crop",
    "ss_zero_terminal_snr",
}
_KOHYA_JSON = {
    "ss_tag_frequency",
    "ss_dataset_dirs",
    "ss_reg_dataset_dirs",
    "ss_network_args",
    "ss_datasets",
    "ss_bucket_info",
    "ss_optimizer_args",
}
_MODELSPEC_PREFIX = "modelspec."


def summarize_metadata(metadata: Mapping[str, str]) -> dict[str, Any]:
    """A JSON-able summary of safetensors metadata; never raises on bad values.

    Returns ``{"kohya": {...}, "modelspec": {...}, "other": {...}}`` plus, when present,
    ``"top_tags"`` (the 20 most frequent training tags) and ``"trigger_phrase"``. Kohya keys
    lose their ``ss_`` prefix (``ss_network_dim`` -> ``network_dim``) and get their type:
    numbers, booleans, JSON (``tag_frequency``, ``network_args``...); kohya writes ``"None"``
    for unset values, which becomes null; a value that does not parse stays a string.
    Modelspec keys lose their ``modelspec.`` prefix. Every other key goes to ``"other"``.
    """
    kohya: dict[str, Any] = {}
    modelspec: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(value, str):
            value = str(value)
        if key.startswith("ss_"):
            kohya[key[3:]] = _kohya_value(key, value)
        elif key.startswith("sshs_"):
            kohya[key] = value
        elif key.startswith(_MODELSPEC_PREFIX):
            modelspec[key[len(_MODELSPEC_PREFIX) :]] = value
        else:
            other[key] = value
    summary: dict[str, Any] = {"kohya": kohya, "modelspec": modelspec, "other": other}
    tags = _top_tags(kohya.get("tag_frequency"))
    if tags:
        summary["top_tags"] = tags
    trigger = modelspec.get("trigger_phrase")
    if isinstance(trigger, str) and trigger.strip():
        summary["trigger_phrase"] = trigger.strip()
    arch = architecture_from_metadata(metadata)
    if arch is not None:
        summary["architecture"] = arch
    return summary


def _kohya_value(key: str, value: str) -> Any:
    if value in ("None", "null"):
        return None
    if key in _KOHYA_INTS:
        number = _float_or_none(value)
        if number is not None and number.is_integer():
            return int(number)
        return value
    if key in _KOHYA_FLOATS:
        number = _float_or_none(value)
        return value if number is None else number
    if key in _KOHYA_BOOLS:
        lowered = value.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return value
    if key in _KOHYA_JSON:
        parsed = _json_or_none(value)
        return value if parsed is None else parsed
    return value


def _float_or_none(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _json_or_none(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number


_TAG_SPLIT = re.compile(r"\s+")


def _top_tags(frequency: Any, limit: int = 20) -> list[dict[str, Any]]:
    """The most frequent tags over every dataset folder of ``ss_tag_frequency``."""
    if not isinstance(frequency, dict):
        return []
    counts: Counter[str] = Counter()
    for folder in frequency.values():
        if not isinstance(folder, dict):
            continue
        for tag, count in folder.items():
            if isinstance(tag, str) and isinstance(count, int) and not isinstance(count, bool):
                cleaned = _TAG_SPLIT.sub(" ", tag).strip()
                if cleaned:
                    counts[cleaned] += count
    return [{"tag": t, "count": c} for t, c in counts.most_common(limit)]
