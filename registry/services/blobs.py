"""Content-addressed storage: the same bytes are stored once, under their SHA-256."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.db import IntegrityError, transaction

from core.errors import ApplicationError
from registry.models import Blob
from sdcore.hashes import FileHashes

log = logging.getLogger(__name__)


def blob_storage() -> Storage:
    """Where model and dataset files live: private, apart from public media ("default")."""
    return storages["blobs"]


def blob_stored_path(blob: Blob) -> Path | None:
    """The blob's file when the storage is a local folder, else None (object storage)."""
    try:
        return Path(blob_storage().path(blob.storage_name))
    except NotImplementedError:
        return None


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


@dataclass(frozen=True)
class BlobMoveReport:
    moved: int = 0
    already: int = 0
    missing: tuple[str, ...] = ()  # SHA-256 of blobs in neither storage
    conflicts: tuple[str, ...] = ()  # old files left in place: the private copy differs


def _same_place(source: Storage, target: Storage) -> bool:
    """Both storages name one bucket and prefix (S3), so every key is already in place."""
    if not hasattr(source, "bucket_name") or not hasattr(target, "bucket_name"):
        return False
    return all(getattr(source, k) == getattr(target, k) for k in ("bucket_name", "location"))


def _move_local_tree(source: FileSystemStorage, target: FileSystemStorage) -> BlobMoveReport:
    root = Path(source.location)
    old = root / "blobs"
    moved = already = 0
    conflicts: list[str] = []
    for path in sorted(p for p in old.rglob("*") if p.is_file()) if old.is_dir() else []:
        dest = Path(target.path(str(path.relative_to(root))))
        if dest.exists():
            if dest.is_file() and dest.stat().st_size == path.stat().st_size:
                path.unlink()  # content-addressed: the same name holds the same bytes
                already += 1
            else:
                conflicts.append(str(path))
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(dest))  # a rename on one file system
        moved += 1
    for folder in sorted((p for p in old.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if old.is_dir() and not any(old.iterdir()):
        old.rmdir()
    return BlobMoveReport(moved=moved, already=already, conflicts=tuple(conflicts))


def blobs_move_private(*, source: Storage) -> BlobMoveReport:
    """Move blobs stored by older versions in ``source`` (public media) to the private storage.

    Idempotent: a blob already in the private storage is left there (and its old copy
    removed); running it again moves nothing. Blobs in neither are reported as missing.
    """
    target = blob_storage()
    if _same_place(source, target):
        return BlobMoveReport()
    if isinstance(source, FileSystemStorage) and isinstance(target, FileSystemStorage):
        return _move_local_tree(source, target)
    moved = already = 0
    missing: list[str] = []
    for blob in Blob.objects.order_by("pk").iterator():
        name = blob.storage_name
        in_old = source.exists(name)
        if target.exists(name):
            already += 1
        elif in_old:
            with source.open(name, "rb") as fh:
                stored = target.save(name, fh)
            if stored != name or target.size(name) != blob.size:
                raise ApplicationError(
                    f"Copying {name} to the private storage gave {stored} "
                    f"({target.size(stored)} bytes, expected {blob.size}).",
                    code="storage_error",
                    status=500,
                )
            moved += 1
        else:
            missing.append(blob.sha256)
            continue
        if in_old:
            source.delete(name)
    return BlobMoveReport(moved=moved, already=already, missing=tuple(missing))
