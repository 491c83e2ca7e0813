"""ML-side settings of the node engine, read once from the environment at import.

Every variable is optional; the defaults suit a data owner's laptop. Like
``huggingface_hub.constants``, other modules read these names, never ``os.environ``.

- ``ATELIER_ENGINE_CACHE``: where latent/embedding caches and model fingerprints go
  (default ``~/.cache/atelier/engine``).
- ``ATELIER_LEDGER_PATH``: the node's privacy ledger (SQLite; default
  ``~/.local/share/atelier/privacy-ledger.sqlite3``).
- ``ATELIER_DEVICE``: ``cpu``, ``cuda``, ``cuda:1``... (default: ``cuda`` when available).
- ``ATELIER_MAX_IMAGE_BYTES``: larger image files are skipped (default 50 MiB).
- ``ATELIER_MAX_IMAGE_PIXELS``: images with more pixels are skipped before decoding (default
  64 megapixels, below Pillow's decompression-bomb limit).
- ``ATELIER_DP_SECURE_MODE``: ``1`` makes opacus draw noise from a cryptographically secure
  generator (slower; no reproducibility). Default ``0``.

The engine never downloads: ``HF_HUB_OFFLINE`` defaults to ``1`` when this module loads.
"""

from __future__ import annotations

import os
from pathlib import Path


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {value!r}") from exc


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value in {"1", "true", "yes", "on"}


os.environ.setdefault("HF_HUB_OFFLINE", "1")

ENGINE_CACHE_DIR: Path = _env_path("ATELIER_ENGINE_CACHE", Path.home() / ".cache/atelier/engine")
LEDGER_PATH: Path = _env_path(
    "ATELIER_LEDGER_PATH", Path.home() / ".local/share/atelier/privacy-ledger.sqlite3"
)
DEVICE: str = os.environ.get("ATELIER_DEVICE", "").strip()  # "" means: pick at run time
MAX_IMAGE_BYTES: int = _env_int("ATELIER_MAX_IMAGE_BYTES", 50 * 1024 * 1024)
MAX_IMAGE_PIXELS: int = _env_int("ATELIER_MAX_IMAGE_PIXELS", 64_000_000)
DP_SECURE_MODE: bool = _env_flag("ATELIER_DP_SECURE_MODE", False)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
CAPTION_EXTENSION = ".txt"
METADATA_FILE = "metadata.jsonl"
MANIFEST_SCHEMA = "atelier.dataset-manifest/1"


def default_device() -> str:
    """``ATELIER_DEVICE`` if set, else ``cuda`` when a GPU is visible, else ``cpu``."""
    if DEVICE:
        return DEVICE
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
