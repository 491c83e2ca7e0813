"""Registry files on the worker's local disk, where diffusers can load them.

Blobs live in the storage under their SHA-256 without an extension; the loaders want real
file names (``.safetensors``) and, for a diffusers folder, the folder's layout. Each file is
made available once under ``ATELIER_MODEL_CACHE_DIR``:

- ``files/<sha256>/<file name>``: a symbolic link to the stored blob when the storage is a
  local folder, else a copy downloaded from the storage (S3-compatible);
- ``folders/<key>/<path>``: a diffusers folder whose files link to the above; ``key`` is a
  hash of the (path, SHA-256) pairs, so the same content is the same folder.

Names are content-addressed, so a link that has gone stale (the storage moved) is made again
and two workers writing the same entry write the same thing (each write is atomic).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from core.errors import ApplicationError
from registry.models import Blob, ModelFile
from registry.services.blobs import blob_open, blob_stored_path

COPY_CHUNK = 4 * 1024 * 1024


def model_cache_dir() -> Path:
    return Path(settings.ATELIER_MODEL_CACHE_DIR)


def _safe_name(name: str) -> str:
    cleaned = Path(name.replace("\\", "/")).name.strip()
    if cleaned in ("", ".", ".."):
        raise ApplicationError(f"Bad file name {name!r}.", code="bad_path")
    return cleaned


def _stored_path(blob: Blob) -> Path | None:
    """The blob's path when the storage is a local folder, else None."""
    path = blob_stored_path(blob)
    return path if path is not None and path.is_file() else None


def _atomic_link_or_copy(target: Path, blob: Blob) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    source = _stored_path(blob)
    try:
        if source is not None:
            tmp.symlink_to(source)
        else:
            with blob_open(blob) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, COPY_CHUNK)
            if tmp.stat().st_size != blob.size:
                raise ApplicationError(
                    f"The stored file {blob.sha256[:12]} is truncated.", code="blob_damaged"
                )
        os.replace(tmp, target)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def blob_local_path(*, blob: Blob, filename: str) -> Path:
    """A local path named ``filename`` holding the blob's bytes."""
    target = model_cache_dir() / "files" / blob.sha256 / _safe_name(filename)
    if not target.exists():  # follows links: a dangling link is made again
        _atomic_link_or_copy(target, blob)
    return target


def _folder_key(files: Iterable[ModelFile]) -> str:
    pairs = sorted((f.path, f.blob_id) for f in files)
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:24]


def diffusers_folder_local_path(*, files: Iterable[ModelFile]) -> Path:
    """A local diffusers folder holding ``files`` at their paths (with ``model_index.json``)."""
    files = list(files)
    folder = model_cache_dir() / "folders" / _folder_key(files)
    root = folder.resolve()
    for model_file in files:
        relative = Path(model_file.path)
        if relative.is_absolute() or ".." in relative.parts:
            raise ApplicationError(f"Bad file path {model_file.path!r}.", code="bad_path")
        dest = folder / relative
        if not dest.resolve().is_relative_to(root):
            raise ApplicationError(f"Bad file path {model_file.path!r}.", code="bad_path")
        if dest.exists():
            continue
        source = blob_local_path(blob=model_file.blob, filename=relative.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        tmp.symlink_to(source.resolve())
        os.replace(tmp, dest)
    if not (folder / "model_index.json").is_file():
        raise ApplicationError(
            "The diffusers folder has no model_index.json.", code="no_usable_file"
        )
    return folder
