"""Pickle checkpoints converted to safetensors, outside the web process.

The web process never unpickles. A Celery worker copies the stored pickle to a temporary
file, scans it again, loads it with ``torch.load(weights_only=True)`` (which refuses any
global outside torch's allow-list), keeps the tensors, writes a safetensors file and adds it
to the same version beside the original.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from core.errors import AccessDeniedError, ApplicationError, ConflictError
from core.tasks import enqueue_on_commit
from registry.inspection import inspect_file
from registry.models import FileFormat, ModelFile
from registry.services.blobs import blob_open, blob_store_file
from sdcore.errors import SdcoreError
from sdcore.hashes import hash_file
from sdcore.pickles import assert_safe_pickle

log = logging.getLogger(__name__)

QUEUED, DONE, FAILED = "queued", "done", "failed"


def model_file_conversion_request(*, model_file: ModelFile, user: User) -> ModelFile:
    """Queue the conversion of a pickle file; the task runs after the transaction commits.

    If the broker is down, the file is marked failed (``conversion_error`` says so), so that
    the owner sees why and can ask again.
    """
    if not (user.pk == model_file.version.model.owner_id or user.is_staff):
        raise AccessDeniedError("Only the owner can convert this file.")
    if model_file.format != FileFormat.PICKLE:
        raise ApplicationError(
            "Only pickle files (.ckpt, .pt, .bin) are converted.", code="not_a_pickle"
        )
    with transaction.atomic():
        locked = ModelFile.objects.select_for_update().get(pk=model_file.pk)
        if locked.conversion_status in (QUEUED, DONE):
            raise ConflictError(
                f"The conversion is already {locked.conversion_status}.", code="conversion_exists"
            )
        locked.conversion_status, locked.conversion_error = QUEUED, ""
        locked.save(update_fields=["conversion_status", "conversion_error"])
        file_id = locked.pk
        enqueue_on_commit(
            "registry.tasks.convert_pickle_file",
            args=[file_id],
            on_failure=lambda exc: _fail_unqueued(file_id, exc),
        )
    locked.refresh_from_db(fields=["conversion_status", "conversion_error"])
    return locked


def _fail_unqueued(model_file_id: int, exc: Exception) -> None:
    """The conversion's message could not be sent: the file is no longer queued."""
    ModelFile.objects.filter(pk=model_file_id, conversion_status=QUEUED).update(
        conversion_status=FAILED,
        conversion_error=f"The conversion could not be queued ({type(exc).__name__}); try again.",
    )


def _tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
    """The tensors of a loaded checkpoint, flattened with dotted names.

    A1111 checkpoints nest them under ``state_dict``; textual-inversion ``.pt`` files under
    ``string_to_param`` (written out as ``emb_params``, the name A1111 reads).
    """
    import torch

    if isinstance(obj, torch.Tensor):
        return {prefix.rstrip("."): obj}
    if not isinstance(obj, Mapping):
        return {}
    if not prefix and "string_to_param" in obj and isinstance(obj["string_to_param"], Mapping):
        params = list(obj["string_to_param"].values())
        if len(params) == 1 and isinstance(params[0], torch.Tensor):
            return {"emb_params": params[0]}
    if not prefix and isinstance(obj.get("state_dict"), Mapping):
        return _tensors(obj["state_dict"])
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(_tensors(value, f"{prefix}{key}."))
    return out


def _fail(model_file: ModelFile, message: str) -> None:
    ModelFile.objects.filter(pk=model_file.pk).update(
        conversion_status=FAILED, conversion_error=message[:2000]
    )


def model_file_convert(*, model_file_id: int) -> ModelFile | None:
    """Convert one queued pickle file (the Celery task's body). Returns the new file."""
    import torch
    from safetensors.torch import save_file

    source = ModelFile.objects.select_related("blob", "version").get(pk=model_file_id)
    if source.conversion_status == DONE:
        return source.conversions.first()
    with tempfile.TemporaryDirectory(prefix="atelier-convert-") as tmp:
        pickled = Path(tmp) / "source.bin"
        with blob_open(source.blob) as src, open(pickled, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        try:
            assert_safe_pickle(pickled)
            loaded = torch.load(pickled, map_location="cpu", weights_only=True)
        except (SdcoreError, Exception) as exc:
            _fail(source, f"Could not load the file with weights_only=True: {exc}")
            log.info("conversion of file %s failed: %s", source.pk, exc)
            return None
        tensors = {k: v.contiguous().clone() for k, v in _tensors(loaded).items()}
        if not tensors:
            _fail(source, "The file holds no tensors.")
            return None
        name = source.path.rsplit(".", 1)[0] + ".safetensors"
        converted = Path(tmp) / Path(name).name
        save_file(tensors, str(converted), metadata={"converted_from_sha256": source.blob_id})
        inspection = inspect_file(converted, converted.name)
        blob = blob_store_file(path=converted, hashes=hash_file(converted))
    with transaction.atomic():
        target, _ = ModelFile.objects.get_or_create(
            version=source.version,
            path=name,
            defaults={
                "blob": blob,
                "format": FileFormat.SAFETENSORS,
                "detected_kind": inspection.get("kind") or "",
                "architecture": inspection.get("architecture") or "",
                "lora_rank": inspection.get("lora_rank"),
                "lora_alpha": inspection.get("lora_alpha"),
                "header_metadata": inspection.get("metadata") or {},
                "converted_from": source,
            },
        )
        ModelFile.objects.filter(pk=source.pk).update(conversion_status=DONE, conversion_error="")
    return target
