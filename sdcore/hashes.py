"""Every hash the Stable Diffusion world identifies a file by, in one streaming pass.

Definitions, as A1111, kohya's sd-scripts and Civitai use them (all stored lowercase hex;
lookups should compare case-insensitively, since Civitai shows them uppercase):

- ``sha256``: SHA-256 of the whole file (64 hex).
- ``autov1``: A1111's old ``model_hash``: SHA-256 of the 0x10000 bytes at offset 0x100000,
  first 8 hex. A1111 reads whatever exists there, so for a file shorter than 0x110000 it is
  the hash of the bytes in ``[0x100000, size)``, and of no bytes at all (``e3b0c442``) for a
  file of 1 MiB or less. This is also kohya's ``sshs_legacy_hash``.
- ``autov2``: A1111's new short hash: the first 10 hex of ``sha256``.
- ``autov3``: for safetensors files only, SHA-256 of the bytes after the header (from
  ``8 + n`` to the end), as kohya's ``sshs_model_hash`` computes it, which stays the same when
  only the metadata changes. Civitai shows its first 12 hex (``autov3``); the full 64 hex is
  ``autov3_full``. ``None`` for files that are not safetensors.
- ``crc32``: CRC-32 (zlib's polynomial) of the whole file, 8 hex (Civitai shows uppercase).
- ``blake3``: BLAKE3 of the whole file, 64 hex.

`MultiHasher` takes chunks of any size (constant memory); on machines with two cores or
more, large chunks are hashed on two threads (hashlib, zlib and blake3 release the GIL).
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import blake3 as _blake3

__all__ = [
    "AUTOV1_LENGTH",
    "AUTOV1_OFFSET",
    "DEFAULT_CHUNK_SIZE",
    "HASH_TYPES",
    "FileHashes",
    "MultiHasher",
    "hash_file",
]

HASH_TYPES = ("sha256", "autov1", "autov2", "autov3", "crc32", "blake3")
AUTOV1_OFFSET = 0x100000
AUTOV1_LENGTH = 0x10000
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
_PARALLEL_MIN_CHUNK = 256 * 1024
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = max(2, min(8, os.cpu_count() or 1))
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sdcore-hash")
        return _pool


def _forget_pool_in_child() -> None:
    # Threads do not survive fork (gunicorn, Celery prefork): a child must start its own.
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


@dataclass(frozen=True)
class FileHashes:
    """The hashes of one file, lowercase hex (see the module docstring for definitions)."""

    sha256: str
    autov1: str
    autov2: str
    autov3: str | None
    crc32: str
    blake3: str
    size: int
    autov3_full: str | None = None

    def get(self, hash_type: str) -> str | None:
        """The value for one of `HASH_TYPES` (case-insensitive name)."""
        name = hash_type.lower()
        if name not in HASH_TYPES:
            raise KeyError(f"unknown hash type {hash_type!r}; known: {', '.join(HASH_TYPES)}")
        value: str | None = getattr(self, name)
        return value

    def as_dict(self) -> dict[str, str | int | None]:
        return {
            "sha256": self.sha256,
            "autov1": self.autov1,
            "autov2": self.autov2,
            "autov3": self.autov3,
            "autov3_full": self.autov3_full,
            "crc32": self.crc32,
            "blake3": self.blake3,
            "size": self.size,
        }


class MultiHasher:
    """Streaming SHA-256, AutoV1/V2/V3, CRC32 and BLAKE3 over chunks of any size.

    ``safetensors=None`` (the default) detects a safetensors file from its first bytes
    (a plausible little-endian header length followed by ``{``) and computes AutoV3 only
    then; ``True``/``False`` force it on or off (``True`` still needs a plausible length).
    ``parallel=None`` hashes large chunks on two threads when the machine has two cores;
    the chunk is never copied, and `update` returns only when it is fully hashed, so the
    caller may reuse its buffer at once. One hasher is fed by one thread at a time.
    """

    def __init__(self, *, safetensors: bool | None = None, parallel: bool | None = None) -> None:
        self._sha256 = hashlib.sha256()
        self._data_sha256: hashlib._Hash | None = None
        self._autov1 = hashlib.sha256()
        self._blake3 = _blake3.blake3()
        self._crc32 = 0
        self._size = 0
        self._prefix = bytearray()  # the first 9 bytes: header length and first JSON byte
        self._data_start: int | None = None
        self._safetensors_mode = safetensors
        self._looks_safetensors = safetensors is not False
        self._parallel = (os.cpu_count() or 1) >= 2 if parallel is None else parallel

    @classmethod
    def resume_from(
        cls,
        path: str | os.PathLike[str],
        offset: int,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        safetensors: bool | None = None,
        parallel: bool | None = None,
    ) -> MultiHasher:
        """A hasher in the state it had after the first `offset` bytes of `path`.

        For resumed uploads: hashlib cannot export its state, so the state is rebuilt by
        reading those bytes again. Raises `ValueError` when the file is shorter.
        """
        hasher = cls(safetensors=safetensors, parallel=parallel)
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        with open(path, "rb") as fh:
            left = offset
            buf = bytearray(min(chunk_size, max(offset, 1)))
            view = memoryview(buf)
            while left > 0:
                got = fh.readinto(view[: min(left, len(buf))])
                if not got:
                    raise ValueError(
                        f"cannot resume at byte {offset}: {os.fspath(path)!r} has only "
                        f"{offset - left} bytes"
                    )
                hasher.update(view[:got])
                left -= got
        return hasher

    @property
    def size(self) -> int:
        """Bytes hashed so far."""
        return self._size

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Hash the next bytes of the file."""
        view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        length = len(view)
        if not length:
            return
        start = self._size
        end = start + length
        if start < 9:
            self._take_prefix(view[: 9 - start])
        window_lo = max(start, AUTOV1_OFFSET)
        window_hi = min(end, AUTOV1_OFFSET + AUTOV1_LENGTH)
        if window_lo < window_hi:
            self._autov1.update(view[window_lo - start : window_hi - start])
        data_view: memoryview | None = None
        if (
            self._data_sha256 is not None
            and self._data_start is not None
            and end > self._data_start
        ):
            data_view = view[max(0, self._data_start - start) :]
        self._size = end
        if self._parallel and length >= _PARALLEL_MIN_CHUNK:
            self._update_parallel(view, data_view)
        else:
            self._sha256.update(view)
            self._crc32 = zlib.crc32(view, self._crc32)
            self._blake3.update(view)
            if data_view is not None and self._data_sha256 is not None:
                self._data_sha256.update(data_view)

    def _update_parallel(self, view: memoryview, data_view: memoryview | None) -> None:
        # Two balanced halves: SHA-256 of the file and CRC32 on a worker thread, the
        # AutoV3 SHA-256 and BLAKE3 here. Both release the GIL on large buffers.
        future: Future[int] = _shared_pool().submit(
            _sha_and_crc, self._sha256.update, view, self._crc32
        )
        try:
            if data_view is not None and self._data_sha256 is not None:
                self._data_sha256.update(data_view)
            self._blake3.update(view)
        finally:
            self._crc32 = future.result()

    def _take_prefix(self, head: memoryview) -> None:
        self._prefix += head
        if self._data_start is None and len(self._prefix) >= 8 and self._looks_safetensors:
            (n,) = struct.unpack("<Q", bytes(self._prefix[:8]))
            if 0 < n < _MAX_SAFETENSORS_HEADER:
                self._data_start = 8 + n
                self._data_sha256 = hashlib.sha256()
            else:
                self._looks_safetensors = False
        if self._safetensors_mode is None and len(self._prefix) >= 9 and self._prefix[8:9] != b"{":
            self._looks_safetensors = False

    def _autov3_full(self) -> str | None:
        if (
            not self._looks_safetensors
            or self._data_sha256 is None
            or self._data_start is None
            or self._size < self._data_start
        ):
            return None
        return self._data_sha256.hexdigest()

    def hexdigests(self) -> FileHashes:
        """The hashes of everything fed so far; the hasher can go on being updated."""
        sha256 = self._sha256.hexdigest()
        autov3_full = self._autov3_full()
        return FileHashes(
            sha256=sha256,
            autov1=self._autov1.hexdigest()[:8],
            autov2=sha256[:10],
            autov3=None if autov3_full is None else autov3_full[:12],
            crc32=f"{self._crc32 & 0xFFFFFFFF:08x}",
            blake3=self._blake3.hexdigest(),
            size=self._size,
            autov3_full=autov3_full,
        )


def _sha_and_crc(sha_update: Callable[[memoryview], None], view: memoryview, crc: int) -> int:
    sha_update(view)
    return zlib.crc32(view, crc)


def hash_file(
    path: str | os.PathLike[str],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    safetensors: bool | None = None,
    parallel: bool | None = None,
) -> FileHashes:
    """All hashes of a file on disk, read once in `chunk_size` pieces into one buffer."""
    hasher = MultiHasher(safetensors=safetensors, parallel=parallel)
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            got = fh.readinto(view)
            if not got:
                break
            hasher.update(view[:got])
    return hasher.hexdigests()
