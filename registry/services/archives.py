"""A diffusers-layout (multi-file) version as one zip file, as Civitai shows such models.

Civitai lists a diffusers folder as one file of format ``Diffusers``; Atelier stores the
folder's files one by one, so the Civitai routes describe and serve a zip of them built on the
fly. The zip is *stored* (no compression: weights do not compress), its members are sorted by
path, with fixed timestamps and each member's CRC-32 taken from its blob, so the same files
always give the same bytes:

- its size is known without reading anything (headers are computed, data is the blobs');
- a byte range is served by skipping to it, so downloads resume;
- its hashes are computed once, by streaming it, and cached by *content* (the members' paths,
  sizes and SHA-256) in Django's cache, where a lost entry is only computed again. The same
  entry records which versions hold that archive, so ``by-hash`` finds it by its own hashes.

Zip64 records are written only where a size or an offset needs them (files over 4 GiB).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from django.core.cache import cache
from django.urls import reverse
from django.utils.text import slugify

from registry.models import Blob, FileLayout, ModelFile, ModelVersion
from registry.services.blobs import blob_open
from registry.services.downloads import link_query, link_verify
from sdcore.hashes import FileHashes, MultiHasher

ZIP32_LIMIT = 0xFFFFFFFF
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01, the earliest a zip can say
_DOS_TIME = 0
_UTF8_NAMES = 0x0800
_CHUNK = 1024 * 1024
_CACHE_PREFIX = "civitai-archive:v2"
ARCHIVE_FORMAT = "Diffusers"


@dataclass(frozen=True)
class VersionArchive:
    """The zip of a version's files: its name, size and the pieces its bytes are made of."""

    version_id: int
    filename: str
    size: int
    content_key: str
    segments: tuple[bytes | Blob, ...]


def is_archived(version: ModelVersion) -> bool:
    """Whether the Civitai routes show the version as one archive (a diffusers folder)."""
    return version.layout == FileLayout.DIFFUSERS


def archive_filename(version: ModelVersion) -> str:
    """Unique per version: the model's slug, the version's name and id."""
    stem = "-".join(
        part
        for part in (version.model.slug or slugify(version.model.name), slugify(version.name))
        if part
    )
    return f"{stem or 'model'}-{version.pk}-diffusers.zip"


def _zip64_extra(*values: int) -> bytes:
    return struct.pack("<HH", 0x0001, 8 * len(values)) + b"".join(
        struct.pack("<Q", v) for v in values
    )


def _local_header(name: bytes, crc: int, size: int, limit: int) -> bytes:
    big = size >= limit
    extra = _zip64_extra(size, size) if big else b""
    stored = ZIP32_LIMIT if big else size
    return (
        struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            45 if big else 20,
            _UTF8_NAMES,
            0,  # stored
            _DOS_TIME,
            _DOS_DATE,
            crc,
            stored,
            stored,
            len(name),
            len(extra),
        )
        + name
        + extra
    )


def _central_header(name: bytes, crc: int, size: int, offset: int, limit: int) -> bytes:
    values: list[int] = []
    if size >= limit:
        values += [size, size]
    if offset >= limit:
        values.append(offset)
    extra = _zip64_extra(*values) if values else b""
    needed = 45 if values else 20
    return (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            needed,
            needed,
            _UTF8_NAMES,
            0,
            _DOS_TIME,
            _DOS_DATE,
            crc,
            ZIP32_LIMIT if size >= limit else size,
            ZIP32_LIMIT if size >= limit else size,
            len(name),
            len(extra),
            0,  # comment
            0,  # disk
            0,  # internal attributes
            0,  # external attributes
            ZIP32_LIMIT if offset >= limit else offset,
        )
        + name
        + extra
    )


def _end_records(count: int, cd_offset: int, cd_size: int, limit: int) -> bytes:
    out = b""
    big = count >= 0xFFFF or cd_offset >= limit or cd_size >= limit
    if big:
        zip64_end_offset = cd_offset + cd_size
        out += struct.pack(
            "<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size, cd_offset
        )
        out += struct.pack("<IIQI", 0x07064B50, 0, zip64_end_offset, 1)
    out += struct.pack(
        "<IHHHHIIH",
        0x06054B50,
        0,
        0,
        min(count, 0xFFFF),
        min(count, 0xFFFF),
        min(cd_size, ZIP32_LIMIT),
        min(cd_offset, ZIP32_LIMIT),
        0,
    )
    return out


def version_archive(
    *,
    version: ModelVersion,
    files: Sequence[ModelFile] | None = None,
    zip64_limit: int = ZIP32_LIMIT,
) -> VersionArchive:
    """The archive of ``version``'s files (``files``: already fetched, with their blobs).

    ``zip64_limit`` is the size from which Zip64 records are written (only tests lower it).
    """
    members = sorted(
        files if files is not None else version.files.select_related("blob"), key=lambda f: f.path
    )
    segments: list[bytes | Blob] = []
    central = b""
    offset = 0
    content = hashlib.sha256()
    for member in members:
        name = member.path.encode()
        blob = member.blob
        crc = int(blob.crc32, 16)
        header = _local_header(name, crc, blob.size, zip64_limit)
        central += _central_header(name, crc, blob.size, offset, zip64_limit)
        segments += [header, blob]
        offset += len(header) + blob.size
        content.update(f"{member.path}\0{blob.sha256}\0{blob.size}\n".encode())
    segments.append(central + _end_records(len(members), offset, len(central), zip64_limit))
    size = offset + len(segments[-1])  # type: ignore[arg-type]  # the last one is bytes
    return VersionArchive(
        version_id=version.pk,
        filename=archive_filename(version),
        size=size,
        content_key=f"{content.hexdigest()}:{zip64_limit}",
        segments=tuple(segments),
    )


def archive_iter(
    *, archive: VersionArchive, start: int = 0, end: int | None = None, chunk_size: int = _CHUNK
) -> Iterator[bytes]:
    """The archive's bytes from ``start`` to ``end`` (inclusive; the last byte by default)."""
    last = archive.size - 1 if end is None else min(end, archive.size - 1)
    position = 0
    for segment in archive.segments:
        length = len(segment) if isinstance(segment, bytes) else segment.size
        seg_start, seg_end = position, position + length  # [seg_start, seg_end)
        position = seg_end
        if seg_end <= start:
            continue
        if seg_start > last:
            return
        lo, hi = max(start, seg_start) - seg_start, min(last + 1, seg_end) - seg_start
        if isinstance(segment, bytes):
            yield segment[lo:hi]
            continue
        with blob_open(segment) as fh:
            raw = getattr(fh, "file", fh)
            raw.seek(lo)
            left = hi - lo
            while left > 0:
                chunk = raw.read(min(chunk_size, left))
                if not chunk:
                    raise OSError(f"Blob {segment.sha256} ended before its recorded size.")
                left -= len(chunk)
                yield chunk


# Hashes, cached by content -------------------------------------------------------------------


def _hashes_key(content_key: str) -> str:
    return f"{_CACHE_PREFIX}:hashes:{content_key}"


def _reverse_key(value: str) -> str:
    return f"{_CACHE_PREFIX}:by-hash:{value.lower()}"


def _lookup_values(hashes: FileHashes) -> list[str]:
    return [hashes.sha256, hashes.autov1, hashes.autov2, hashes.crc32, hashes.blake3]


def archive_hashes(*, archive: VersionArchive) -> FileHashes:
    """The archive's hashes: from the cache, or computed once by streaming it.

    The entry also lists the versions recorded under each hash value (for
    :func:`archive_versions_by_hash`), so a version already recorded costs one cache read.
    """
    key = _hashes_key(archive.content_key)
    cached = cache.get(key)
    if cached is None:
        hasher = MultiHasher(safetensors=False)
        for chunk in archive_iter(archive=archive, chunk_size=8 * _CHUNK):
            hasher.update(chunk)
        cached = {"hashes": hasher.hexdigests().as_dict(), "versions": []}
    hashes = FileHashes(**cached["hashes"])
    if archive.version_id not in cached["versions"]:
        for value in _lookup_values(hashes):
            reverse = _reverse_key(value)
            holders: list[int] = cache.get(reverse) or []
            cache.set(reverse, sorted({*holders, archive.version_id}), timeout=None)
        cached["versions"] = sorted({*cached["versions"], archive.version_id})
        cache.set(key, cached, timeout=None)
    return hashes


def archive_versions_by_hash(hash_value: str) -> list[int]:
    """Versions whose archive has that hash (among archives whose hashes were computed)."""
    found: list[int] = cache.get(_reverse_key(hash_value)) or []
    return found


# Signed URLs ---------------------------------------------------------------------------------


def archive_signed_url(*, archive: VersionArchive, user_id: int, ttl: int | None = None) -> str:
    """A site-relative URL that serves the archive to ``user_id`` until it expires."""
    query = link_query(
        purpose="archive",
        subject=str(archive.version_id),
        filename=archive.filename,
        user_id=user_id,
        ttl=ttl,
    )
    path = reverse(
        "registry:civitai-archive-file",
        kwargs={"version_id": archive.version_id, "filename": archive.filename},
    )
    return f"{path}?{query}"


def archive_signed_verify(
    *, version_id: int, filename: str, uid: str, expires: str, signature: str
) -> int:
    """The user id a valid, unexpired archive link was signed for."""
    return link_verify(
        purpose="archive",
        subject=str(version_id),
        filename=filename,
        uid=uid,
        expires=expires,
        signature=signature,
    )
