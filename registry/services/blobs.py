"""Content-addressed storage: the same bytes are stored once, under their SHA-256."""

from __future__ import annotations

import logging
from pathlib import Path

from django.core.files import File
from django.core.files.storage import Storage, storages
from django.db import IntegrityError, transaction

from core.errors import ApplicationError
from registry.models import Blob
from sdcore.hashes import FileHashes

log = logging.getLogger(__name__)


def blob_storage() -> Storage:
    return storages["default"]


def blob_storage_name(sha256: str) -> str:
    return f"blobs/sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


class _LocalFile(File):
    """A file already on local disk; FileSystemStorage moves it instead of copying it."""

    def __init__(self, path: Path) -> None:
        super().__init__(open(path, "rb"), name=path.name)
        self._path = path

    def temporary_file_path(self) -> str:
        return str(self._path)


def blob_store_file(*, path: Path, hashes: FileHashes) -> Blob:
    """Store the file at ``path`` (which is consumed) and return its blob.

    When the bytes are already stored, the existing blob is returned and ``path`` removed.
    """
    existing = Blob.objects.filter(pk=hashes.sha256).first()
    storage = blob_storage()
    if existing is not None and storage.exists(existing.storage_name):
        path.unlink(missing_ok=True)
        return existing
    wanted = blob_storage_name(hashes.sha256)
    local = _LocalFile(path)
    try:
        stored_name = storage.save(wanted, local)
    except OSError as exc:  # for example ENOSPC: keep the part (the client may retry)
        local.close()
        if existing is None and storage.exists(wanted):
            storage.delete(wanted)  # no partial blob stays under the content's name
        raise ApplicationError(
            "The server's storage is full or failing; the file was not stored. "
            "Try completing the upload again later.",
            code="storage_error",
            status=507,
        ) from exc
    except BaseException:
        local.close()
        path.unlink(missing_ok=True)
        raise
    local.close()
    path.unlink(missing_ok=True)
    fields = {
        "size": hashes.size,
        "storage_name": stored_name,
        "autov1": hashes.autov1,
        "autov2": hashes.autov2,
        "autov3": hashes.autov3 or "",
        "crc32": hashes.crc32,
        "blake3": hashes.blake3,
    }
    try:
        with transaction.atomic():
            blob, created = Blob.objects.update_or_create(pk=hashes.sha256, defaults=fields)
    except IntegrityError:  # a concurrent upload of the same bytes won the race
        blob, created = Blob.objects.get(pk=hashes.sha256), False
    if not created and blob.storage_name != stored_name:
        storage.delete(stored_name)
    return blob


def blob_open(blob: Blob) -> File:
    return blob_storage().open(blob.storage_name, "rb")
