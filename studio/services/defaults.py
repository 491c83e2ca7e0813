"""A checkpoint's native generation settings: the size it was trained at and its steps.

The size comes from the model itself, never from a guess of 512: for a diffusers folder the
UNet's ``sample_size`` times the VAE's scale factor (2 to the number of VAE down blocks less
one), read from the folder's two ``config.json`` files; for a single file its
``modelspec.resolution`` metadata (``"64x64"``), else its family's default. The steps are
recorded with the version (``modelspec.inference_steps`` or ``atelier.steps`` in its files'
metadata) or else the family's default. Reads are cached per file content.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from registry.models import Blob, FileLayout, ModelVersion
from registry.services.blobs import blob_open
from sdcore.loading import FAMILIES

# Steps per family when the version records none (A1111's default for SD 1/2 and SDXL).
FAMILY_STEPS = {"sd1": 20, "sd2": 20, "sdxl": 20}
DEFAULT_STEPS = 20
DEFAULT_SIDE = 512
STEPS_KEYS = ("modelspec.inference_steps", "atelier.steps")
MAX_CONFIG_BYTES = 256 * 1024
_RESOLUTION = re.compile(r"\s*(\d{2,5})\s*x\s*(\d{2,5})\s*")


@dataclass(frozen=True)
class NativeSettings:
    """What the generation form starts from for one checkpoint."""

    width: int
    height: int
    steps: int
    source: str  # where the size was read: "unet config", "modelspec", "family default"


def _family_side(family: str) -> int:
    spec = FAMILIES.get(family)
    return spec.default_resolution if spec is not None else DEFAULT_SIDE


@functools.lru_cache(maxsize=256)
def _config(sha256: str, storage_name: str) -> dict[str, object]:
    blob = Blob(sha256=sha256, storage_name=storage_name)
    with blob_open(blob) as handle:
        raw = handle.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _folder_side(version: ModelVersion) -> int | None:
    configs: dict[str, Mapping[str, object]] = {}
    for model_file in version.files.all():
        if model_file.path in ("unet/config.json", "vae/config.json"):
            blob = model_file.blob
            try:
                configs[model_file.path] = _config(blob.sha256, blob.storage_name)
            except OSError:
                return None
    sample_size = configs.get("unet/config.json", {}).get("sample_size")
    blocks = configs.get("vae/config.json", {}).get("block_out_channels")
    if isinstance(sample_size, list | tuple) and sample_size:
        sample_size = sample_size[0]
    if not isinstance(sample_size, int) or not isinstance(blocks, list) or not blocks:
        return None
    return int(sample_size) * 2 ** (len(blocks) - 1)


def _metadata(version: ModelVersion) -> dict[str, object]:
    """The files' safetensors metadata as written (``modelspec.resolution``), from the
    inspection's summary (``{"modelspec": {"resolution": ...}, "other": {...}}``); the
    primary file wins."""
    merged: dict[str, object] = {}
    files = sorted(version.files.all(), key=lambda f: (not f.is_primary, f.path))
    for model_file in reversed(files):
        summary = model_file.header_metadata
        if not isinstance(summary, dict):
            continue
        for group, prefix in (("other", ""), ("modelspec", "modelspec.")):
            values = summary.get(group)
            if isinstance(values, dict):
                merged.update({f"{prefix}{key}": value for key, value in values.items()})
    return merged


def _steps(metadata: Mapping[str, object], family: str) -> int:
    for key in STEPS_KEYS:
        value = str(metadata.get(key, "")).strip()
        if value.isdigit() and 1 <= int(value) <= 150:
            return int(value)
    return FAMILY_STEPS.get(family, DEFAULT_STEPS)


def native_settings(version: ModelVersion) -> NativeSettings:
    """The native size and steps of a checkpoint version (its files prefetched or not)."""
    metadata = _metadata(version)
    steps = _steps(metadata, version.base_model)
    if version.layout == FileLayout.DIFFUSERS:
        side = _folder_side(version)
        if side is not None:
            return NativeSettings(side, side, steps, "unet config")
    match = _RESOLUTION.fullmatch(str(metadata.get("modelspec.resolution", "")))
    if match:
        return NativeSettings(int(match.group(1)), int(match.group(2)), steps, "modelspec")
    side = _family_side(version.base_model)
    return NativeSettings(side, side, steps, "family default")
