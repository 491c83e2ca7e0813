"""Resumable, streaming uploads: constant memory whatever the size.

A client creates an upload (name and size), appends bytes at the offset the server reports,
and completes it. Bytes go to a part file under ``UPLOAD_TEMP_DIR`` while every hash is
computed on the fly; after an interruption the client asks for the offset and goes on from
there. Completion verifies the size and the client's SHA-256, inspects the file without
loading tensors (or scans a pickle without unpickling it), and moves it into content-addressed
storage. A refused file leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Sum

from core.errors import ApplicationError, ConflictError, PayloadTooLargeError
from registry.inspection import ALLOWED_EXTENSIONS, inspect_file
from registry.models import Upload, UploadStatus
from registry.services.blobs import blob_store_file
from sdcore.errors import SdcoreError
from sdcore.hashes import FileHashes, MultiHasher

log = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024
_SAFE_NAME = re.compile(r"^[\w][\w .+()\[\]-]*$")

# Hash state of uploads this process is receiving, so that consecutive parts do not re-read
# the part file. Another process (or a restart) rebuilds the state from the file.
_hashers: dict[str, tuple[int, MultiHasher]] = {}


def part_path(upload: Upload) -> Path:
    return Path(settings.UPLOAD_TEMP_DIR) / f"{upload.pk}.part"


def _validate_filename(filename: str) -> str:
    name = filename.strip()
    if not name or len(name) > 255 or not _SAFE_NAME.match(name) or ".." in name:
        raise ApplicationError(
            "The file name may use letters, digits, spaces and . _ - + ( ) [ ] only, "
            "with no folders.",
            code="bad_filename",
        )
    lower = name.lower()
    if not any(lower.endswith(ext) for ext in ALLOWED_EXTENSIONS):
        raise ApplicationError(
            f"Unsupported file type; allowed: {', '.join(sorted(ALLOWED_EXTENSIONS))}.",
            code="unsupported_type",
        )
    return name


def upload_create(*, user: User, filename: str, size: int, sha256: str = "") -> Upload:
    name = _validate_filename(filename)
    limit = settings.ATELIER_MAX_UPLOAD_BYTES
    if size <= 0:
        raise ApplicationError("The file is empty.", code="empty_file")
    if size > limit:
        raise PayloadTooLargeError(
            f"The file is {size} bytes; the limit is {limit} bytes.",
            code="too_large",
            details={"limit": limit},
        )
    sha = sha256.strip().lower()
    if sha and not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ApplicationError("sha256 must be 64 hexadecimal digits.", code="bad_sha256")
    with transaction.atomic():
        _quota_check(user=user, size=size)
        upload = Upload.objects.create(user=user, filename=name, size=size, expected_sha256=sha)
    path = part_path(upload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return upload


def upload_bytes_used(user: User) -> int:
    """Bytes counted against the user's quota: completed uploads and open ones (reserved)."""
    used = Upload.objects.filter(
        user=user, status__in=(UploadStatus.OPEN, UploadStatus.COMPLETE)
    ).aggregate(total=Sum("size"))["total"]
    return int(used or 0)


def _quota_check(*, user: User, size: int) -> None:
    """Refuse (413) an upload that would take the user past ``ATELIER_UPLOAD_QUOTA_BYTES``.

    Locks the user's row so that two uploads started at once cannot both squeeze in.
    """
    quota = settings.ATELIER_UPLOAD_QUOTA_BYTES
    if quota <= 0 or user.is_staff:
        return
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    used = upload_bytes_used(user)
    if used + size > quota:
        raise PayloadTooLargeError(
            f"This upload of {size} bytes would exceed your storage quota: "
            f"{used} of {quota} bytes are used.",
            code="quota_exceeded",
            details={"quota": quota, "used": used, "size": size},
        )


class ByteStream(Protocol):
    """What an upload reads from: a file, an uploaded file or a request body."""

    def read(self, size: int, /) -> bytes: ...


def _chunks(stream: ByteStream, limit: int) -> Iterator[bytes]:
    """Read at most ``limit`` bytes; one byte more means the client sent too much."""
    remaining = limit + 1
    while remaining > 0:
        chunk = stream.read(min(READ_CHUNK, remaining))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk


def digests_path(upload: Upload) -> Path:
    """Where the final hashes wait for completion, which another worker may handle."""
    return Path(settings.UPLOAD_TEMP_DIR) / f"{upload.pk}.hashes.json"


def _save_digests(upload: Upload, hasher: MultiHasher) -> bool:
    try:
        digests_path(upload).write_text(json.dumps(hasher.hexdigests().as_dict()))
    except OSError:
        return False
    return True


def _final_hashes(upload: Upload, path: Path) -> FileHashes:
    """The saved hashes of the complete part, else rebuilt (read again) from the part."""
    try:
        saved = FileHashes(**json.loads(digests_path(upload).read_text()))
        if saved.size == upload.size == path.stat().st_size:
            return saved
    except (OSError, ValueError, TypeError):
        pass
    return _hasher_at(upload, path).hexdigests()


def _hasher_at(upload: Upload, path: Path) -> MultiHasher:
    cached = _hashers.pop(str(upload.pk), None)
    if cached is not None and cached[0] == upload.offset:
        return cached[1]
    return MultiHasher.resume_from(path, upload.offset)


def upload_append(*, upload: Upload, offset: int, stream: ByteStream) -> Upload:
    """Append the bytes of ``stream`` at ``offset``, which must equal the upload's offset.

    An interrupted stream keeps what arrived; the client resumes from the offset reported.
    """
    if upload.status != UploadStatus.OPEN:
        raise ConflictError("This upload is already closed.", code="upload_closed")
    path = part_path(upload)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r+b" if path.exists() else "w+b") as part:
        try:
            fcntl.flock(part.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ConflictError(
                "Another request is writing this upload.", code="upload_busy"
            ) from exc
        upload.refresh_from_db(fields=["offset", "status"])
        if offset != upload.offset:
            raise ConflictError(
                f"Offset mismatch: the upload has {upload.offset} bytes, not {offset}.",
                code="offset_mismatch",
                details={"offset": upload.offset},
            )
        part.truncate(upload.offset)
        part.seek(upload.offset)
        hasher = _hasher_at(upload, path)
        remaining = upload.size - upload.offset
        written = 0
        chunks = _chunks(stream, remaining)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            except Exception:  # the client went away: keep what arrived, resume later
                log.info("upload %s interrupted at %s bytes", upload.pk, upload.offset + written)
                break
            if written + len(chunk) > remaining:
                part.truncate(upload.offset)
                raise PayloadTooLargeError(
                    f"More bytes than the declared size of {upload.size}.", code="too_large"
                )
            try:
                part.write(chunk)
            except OSError as exc:  # for example ENOSPC: drop this part's bytes
                part.truncate(upload.offset)
                raise ApplicationError(
                    "The server could not store the data; nothing of this part was kept.",
                    code="storage_error",
                    status=507,
                ) from exc
            hasher.update(chunk)
            written += len(chunk)
        part.flush()
        new_offset = upload.offset + written
        Upload.objects.filter(pk=upload.pk, offset=upload.offset).update(offset=new_offset)
        upload.offset = new_offset
        # Once the last byte is in, the hashes are final: save them beside the part, so that
        # completing on another worker process does not read the whole file again.
        if new_offset == upload.size and _save_digests(upload, hasher):
            _hashers.pop(str(upload.pk), None)
        else:
            _hashers[str(upload.pk)] = (new_offset, hasher)
    return upload


def _fail(upload: Upload, message: str) -> None:
    part_path(upload).unlink(missing_ok=True)
    digests_path(upload).unlink(missing_ok=True)
    _hashers.pop(str(upload.pk), None)
    upload.status = UploadStatus.FAILED
    upload.error = message
    upload.save(update_fields=["status", "error", "updated_at"])


def upload_complete(*, upload: Upload) -> Upload:
    """Verify, inspect and store the upload. A refused file leaves nothing in storage."""
    if upload.status == UploadStatus.COMPLETE:
        return upload
    if upload.status != UploadStatus.OPEN:
        raise ConflictError("This upload failed; start a new one.", code="upload_closed")
    if upload.offset != upload.size:
        raise ApplicationError(
            f"The upload is incomplete: {upload.offset} of {upload.size} bytes received.",
            code="upload_incomplete",
            details={"offset": upload.offset},
        )
    path = part_path(upload)
    hashes = _final_hashes(upload, path)
    if upload.expected_sha256 and hashes.sha256 != upload.expected_sha256:
        message = (
            f"SHA-256 mismatch: the client announced {upload.expected_sha256}, "
            f"the server received {hashes.sha256}."
        )
        _fail(upload, message)
        raise ApplicationError(message, code="hash_mismatch")
    try:
        inspection = inspect_file(path, upload.filename)
    except SdcoreError as exc:
        _fail(upload, str(exc))
        raise ApplicationError(str(exc), code=exc.code, status=422) from exc
    blob = blob_store_file(path=path, hashes=hashes)
    digests_path(upload).unlink(missing_ok=True)
    with transaction.atomic():
        upload.status = UploadStatus.COMPLETE
        upload.blob = blob
        upload.inspection = inspection
        upload.save(update_fields=["status", "blob", "inspection", "updated_at"])
    return upload


def upload_abort(*, upload: Upload) -> None:
    if upload.status == UploadStatus.OPEN:
        _fail(upload, "Aborted by the client.")


def upload_whole_file(
    *, user: User, filename: str, stream: ByteStream, size: int, sha256: str = ""
) -> Upload:
    """One-shot upload (the web form, management commands): create, append, complete."""
    upload = upload_create(user=user, filename=filename, size=size, sha256=sha256)
    try:
        upload_append(upload=upload, offset=0, stream=stream)
        return upload_complete(upload=upload)
    except Exception:
        if upload.status == UploadStatus.OPEN:
            _fail(upload, "The one-shot upload did not complete.")
        raise


def upload_summary(upload: Upload) -> dict[str, Any]:
    return {
        "id": str(upload.pk),
        "filename": upload.filename,
        "size": upload.size,
        "offset": upload.offset,
        "status": upload.status,
        "sha256": upload.blob_id or "",
        "inspection": upload.inspection,
        "error": upload.error,
    }
