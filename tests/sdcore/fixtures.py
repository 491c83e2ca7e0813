"""Helpers that build synthetic Stable Diffusion files: headers, safetensors, archives.

Tensor specs map a name to ``(dtype, shape)``; data is zeros unless given. Headers for
detection tests are built in memory (`header_of`), so real shapes cost nothing.
"""

from __future__ import annotations

import io
import json
import math
import struct
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from sdcore.safetensors_header import DTYPE_BITS, SafetensorsHeader, TensorInfo

Spec = Mapping[str, tuple[str, tuple[int, ...]]]


def nbytes_of(dtype: str, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * DTYPE_BITS[dtype] // 8


def header_of(spec: Spec, metadata: Mapping[str, str] | None = None) -> SafetensorsHeader:
    """A header object with contiguous offsets, without any file or data."""
    tensors: dict[str, TensorInfo] = {}
    offset = 0
    for name, (dtype, shape) in spec.items():
        size = nbytes_of(dtype, shape)
        tensors[name] = TensorInfo(name, dtype, tuple(shape), offset, offset + size)
        offset += size
    return SafetensorsHeader(header_size=2, tensors=tensors, metadata=dict(metadata or {}))


def header_json(spec: Spec, metadata: Mapping[str, str] | None = None) -> dict[str, object]:
    obj: dict[str, object] = {}
    if metadata is not None:
        obj["__metadata__"] = dict(metadata)
    offset = 0
    for name, (dtype, shape) in spec.items():
        size = nbytes_of(dtype, shape)
        obj[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    return obj


def raw_file_bytes(header: Mapping[str, object] | bytes | str, data: bytes = b"") -> bytes:
    """``[len][header][data]`` with the header given as an object, text or raw bytes."""
    if isinstance(header, bytes):
        body = header
    elif isinstance(header, str):
        body = header.encode()
    else:
        body = json.dumps(dict(header), separators=(",", ":")).encode()
    return struct.pack("<Q", len(body)) + body + data


def safetensors_bytes(
    spec: Spec,
    metadata: Mapping[str, str] | None = None,
    data: Mapping[str, bytes] | None = None,
) -> bytes:
    """A valid safetensors file for any dtype (zeros unless `data` gives a tensor's bytes)."""
    body = json.dumps(header_json(spec, metadata), separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    chunks = []
    for name, (dtype, shape) in spec.items():
        raw = (data or {}).get(name, bytes(nbytes_of(dtype, shape)))
        assert len(raw) == nbytes_of(dtype, shape)
        chunks.append(raw)
    return struct.pack("<Q", len(body)) + body + b"".join(chunks)


def write_bytes(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# --- Stable Diffusion key sets (a few representative tensors each) ------------------------


def sd1_checkpoint_spec(
    context_dim: int = 768, in_channels: int = 4
) -> dict[str, tuple[str, tuple[int, ...]]]:
    text_encoder = (
        {"cond_stage_model.transformer.text_model.final_layer_norm.weight": ("F16", (768,))}
        if context_dim == 768
        else {"cond_stage_model.model.ln_final.weight": ("F16", (1024,))}
    )
    return {
        "model.diffusion_model.input_blocks.0.0.weight": ("F16", (320, in_channels, 3, 3)),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (
            "F16",
            (320, context_dim),
        ),
        "model.diffusion_model.out.2.weight": ("F16", (4, 320, 3, 3)),
        "first_stage_model.decoder.conv_in.weight": ("F16", (512, 4, 3, 3)),
        **text_encoder,
    }


def sdxl_checkpoint_spec() -> dict[str, tuple[str, tuple[int, ...]]]:
    return {
        "model.diffusion_model.input_blocks.0.0.weight": ("F16", (320, 4, 3, 3)),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (
            "F16",
            (640, 2048),
        ),
        "model.diffusion_model.label_emb.0.0.weight": ("F16", (1280, 2816)),
        "first_stage_model.decoder.conv_in.weight": ("F16", (512, 4, 3, 3)),
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": ("F16", (768,)),
        "conditioner.embedders.1.model.ln_final.weight": ("F16", (1280,)),
    }


def kohya_lora_spec(
    *, rank: int = 8, context_dim: int = 768, text_width: int = 768, sdxl: bool = False
) -> dict[str, tuple[str, tuple[int, ...]]]:
    unet = (
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
        if sdxl
        else "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    )
    te = (
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
        if sdxl
        else "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    )
    spec: dict[str, tuple[str, tuple[int, ...]]] = {
        f"{unet}.alpha": ("F16", ()),
        f"{unet}.lora_down.weight": ("F16", (rank, context_dim)),
        f"{unet}.lora_up.weight": ("F16", (320, rank)),
        f"{te}.alpha": ("F16", ()),
        f"{te}.lora_down.weight": ("F16", (rank, text_width)),
        f"{te}.lora_up.weight": ("F16", (text_width, rank)),
    }
    if sdxl:
        te2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
        spec[f"{te2}.lora_down.weight"] = ("F16", (rank, 1280))
        spec[f"{te2}.lora_up.weight"] = ("F16", (1280, rank))
    return spec


# --- archives ----------------------------------------------------------------------------


def make_zip(
    path: Path, members: Mapping[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name), content, compress_type=compression)
    return path


def make_tar(path: Path, members: Mapping[str, bytes], *, gz: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path


def add_tar_member(path: Path, info: tarfile.TarInfo, content: bytes = b"") -> Path:
    """Append one hand-made member (a link, a device...) to a plain tar."""
    with tarfile.open(path, "a") as archive:
        archive.addfile(info, io.BytesIO(content) if content else None)
    return path
