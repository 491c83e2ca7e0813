"""Safe inspection and extraction of dataset archives (zip, tar, tar.gz).

Nothing is trusted: every member name is checked (no ``..``, no absolute path, no drive
letter, no control characters, no duplicates, no file where a folder must be), only regular
files and folders are allowed (no symlinks, hardlinks, devices or FIFOs), and the member
count, the total uncompressed size and the compression ratio are bounded. Declared sizes
are checked first; then, since a zip's headers can lie (declare 1 byte for a member that
inflates to gigabytes), inspection and extraction alike decompress every member and count
the bytes it really holds, refusing as soon as it holds more than it declares or the total
goes over the cap. Extraction writes into a fresh temporary folder beside the destination
and renames it into place only when every member is written, so an error leaves nothing.

The listing pairs images with captions for dataset uploads: ``dir/0001.png`` with
``dir/0001.txt`` (or ``.caption``), or the rows of a Hugging Face style ``metadata.jsonl``
(``{"file_name": ..., "text": ...}``).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO

from sdcore.errors import ArchiveError, UnsafePathError
from sdcore.paths import safe_relative_path

__all__ = [
    "CAPTION_EXTENSIONS",
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_MAX_RATIO",
    "DEFAULT_MAX_TOTAL_UNCOMPRESSED",
    "IMAGE_EXTENSIONS",
    "ArchiveListing",
    "ArchiveMember",
    "extract_archive",
    "inspect_archive",
]

DEFAULT_MAX_MEMBERS = 100_000
DEFAULT_MAX_TOTAL_UNCOMPRESSED = 20 * 1024**3
DEFAULT_MAX_RATIO = 100.0
_RATIO_MIN_SIZE = 1024 * 1024  # smaller members may compress as well as they like
_METADATA_MAX_BYTES = 64 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
CAPTION_EXTENSIONS = frozenset({".txt", ".caption"})
_METADATA_NAMES = frozenset({"metadata.jsonl"})
_JUNK_PARTS = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db"})


@dataclass(frozen=True)
class ArchiveMember:
    """One regular file or folder of an archive; `name` is the normalized path."""

    name: str
    size: int
    compressed_size: int | None
    is_dir: bool


@dataclass
class ArchiveListing:
    """The checked contents of an archive, with its image/caption pairs and counts."""

    format: str  # "zip" | "tar" | "tar.gz"
    member_count: int
    total_uncompressed: int
    image_count: int = 0
    caption_count: int = 0
    captioned_count: int = 0  # images with a caption, from sidecar files or metadata.jsonl
    members: list[ArchiveMember] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (image, caption member)
    images_without_caption: list[str] = field(default_factory=list)
    captions_without_image: list[str] = field(default_factory=list)
    metadata_file: str | None = None
    metadata_rows: int = 0
    metadata_pairs: int = 0  # rows whose file_name is an image without a sidecar caption
    ignored: list[str] = field(default_factory=list)  # __MACOSX, .DS_Store and the like


@dataclass(frozen=True)
class _Limits:
    max_members: int
    max_total_uncompressed: int
    max_ratio: float


def inspect_archive(
    path: str | os.PathLike[str],
    *,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_total_uncompressed: int = DEFAULT_MAX_TOTAL_UNCOMPRESSED,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> ArchiveListing:
    """Check every member of a zip, tar or tar.gz and list its dataset contents.

    Raises `ArchiveError` naming the member on the first problem (see the module docstring);
    codes: ``archive_unreadable``, ``path_traversal``, ``absolute_path``, ``drive_letter``,
    ``bad_member_name``, ``link_member``, ``special_member``, ``duplicate_member``,
    ``path_conflict``, ``encrypted_member``, ``too_many_members``, ``too_large``,
    ``compression_ratio``, ``size_mismatch``.
    """
    limits = _Limits(max_members, max_total_uncompressed, max_ratio)
    with _open(path) as archive:
        members = archive.check(limits)
        archive.verify(members, limits)
        metadata = archive.read_metadata(members)
    return _listing(archive.format, members, metadata)


def extract_archive(
    path: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    *,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_total_uncompressed: int = DEFAULT_MAX_TOTAL_UNCOMPRESSED,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> ArchiveListing:
    """Check, then extract into `dest_dir` (which must not exist yet), all or nothing."""
    limits = _Limits(max_members, max_total_uncompressed, max_ratio)
    dest = os.path.abspath(os.fspath(dest_dir))
    if os.path.lexists(dest):
        raise ArchiveError(
            f"the destination {dest!r} already exists", code="dest_exists", details={"dest": dest}
        )
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.partial-", dir=parent)
    try:
        with _open(path) as archive:
            members = archive.check(limits)
            metadata = archive.read_metadata(members)
            archive.extract(members, staging, limits)
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _listing(archive.format, members, metadata)


# --- names -------------------------------------------------------------------------------


def _normalize(raw: str) -> tuple[str, bool]:
    """The checked relative path of a member name, and whether it names a folder.

    Backslashes are read as separators (zip tools on Windows write them), so that
    ``..\\..\\x`` is refused as the traversal it is.
    """
    try:
        return safe_relative_path(raw, what="member", backslash_separates=True)
    except UnsafePathError as exc:
        code = "bad_member_name" if exc.code == "bad_path_name" else exc.code
        raise ArchiveError(exc.message, code=code, details={"member": raw}) from None


class _Names:
    """Refuses duplicates, and a file used as a folder by another member (or vice versa)."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.dirs: set[str] = set()

    def add(self, name: str, is_dir: bool, raw: str) -> None:
        if name in self.files or (not is_dir and name in self.dirs):
            raise ArchiveError(
                f"member {raw!r} appears more than once in the archive",
                code="duplicate_member",
                details={"member": raw},
            )
        parents = list(PurePosixPath(name).parents)[:-1]
        for parent in parents:
            if str(parent) in self.files:
                raise ArchiveError(
                    f"member {raw!r} needs {str(parent)!r} to be a folder, but it is a file",
                    code="path_conflict",
                    details={"member": raw},
                )
        if is_dir:
            self.dirs.add(name)
        else:
            self.files.add(name)
        self.dirs.update(str(p) for p in parents)


# --- readers -----------------------------------------------------------------------------


class _Archive:
    format: str

    def check(self, limits: _Limits) -> list[ArchiveMember]:
        raise NotImplementedError

    def open_member(self, member: ArchiveMember) -> IO[bytes]:
        raise NotImplementedError

    def read_metadata(self, members: list[ArchiveMember]) -> list[dict[str, object]] | None:
        meta = _metadata_member(members)
        if meta is None:
            return None
        if meta.size > _METADATA_MAX_BYTES:
            raise ArchiveError(
                f"member {meta.name!r} is {meta.size} bytes, over the limit of "
                f"{_METADATA_MAX_BYTES} for metadata",
                code="too_large",
                details={"member": meta.name},
            )
        with self.open_member(meta) as fh:
            data = fh.read(_METADATA_MAX_BYTES + 1)
        if len(data) > _METADATA_MAX_BYTES:
            raise ArchiveError(
                f"member {meta.name!r} is larger than it declares",
                code="size_mismatch",
                details={"member": meta.name},
            )
        rows: list[dict[str, object]] = []
        for line in data.decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def verify(self, members: list[ArchiveMember], limits: _Limits) -> None:
        """Read every file member to its end, counting the bytes it really holds."""
        written = 0
        for member in members:
            if not member.is_dir:
                written = self._stream(member, limits, written, None)

    def extract(self, members: list[ArchiveMember], root: str, limits: _Limits) -> None:
        written = 0
        for member in members:
            target = os.path.join(root, *member.name.split("/"))
            if os.path.commonpath([root, os.path.abspath(target)]) != root:  # belt and braces
                raise ArchiveError(
                    f"member {member.name!r} would be written outside the folder",
                    code="path_traversal",
                    details={"member": member.name},
                )
            if member.is_dir:
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "xb") as dst:
                written = self._stream(member, limits, written, dst)

    def _stream(
        self, member: ArchiveMember, limits: _Limits, written: int, sink: IO[bytes] | None
    ) -> int:
        """Decompress ``member`` (into ``sink`` when given) and return the running total.

        Refuses a member that holds more or fewer bytes than it declares, and a running total
        over the cap, as the bytes come: a lie costs at most one chunk more than the truth.
        """
        size = 0
        with self.open_member(member) as src:
            while chunk := src.read(_COPY_CHUNK):
                size += len(chunk)
                written += len(chunk)
                if size > member.size:
                    raise ArchiveError(
                        f"member {member.name!r} holds more than the {member.size} bytes "
                        "it declares",
                        code="size_mismatch",
                        details={"member": member.name, "declared": member.size},
                    )
                if written > limits.max_total_uncompressed:
                    raise ArchiveError(
                        f"reading {member.name!r} goes over the limit of "
                        f"{limits.max_total_uncompressed} bytes in all",
                        code="too_large",
                        details={"member": member.name},
                    )
                if sink is not None:
                    sink.write(chunk)
        if size != member.size:
            raise ArchiveError(
                f"member {member.name!r} holds {size} bytes but declares {member.size}",
                code="size_mismatch",
                details={"member": member.name, "declared": member.size},
            )
        return written

    def close(self) -> None:
        raise NotImplementedError


def _check_count(count: int, limits: _Limits, raw: str) -> None:
    if count > limits.max_members:
        raise ArchiveError(
            f"the archive has more than {limits.max_members} members (refused at {raw!r})",
            code="too_many_members",
            details={"member": raw, "max_members": limits.max_members},
        )


def _check_total(total: int, limits: _Limits, raw: str) -> None:
    if total > limits.max_total_uncompressed:
        raise ArchiveError(
            f"the archive unpacks to more than {limits.max_total_uncompressed} bytes "
            f"(refused at {raw!r})",
            code="too_large",
            details={"member": raw, "max_total_uncompressed": limits.max_total_uncompressed},
        )


def _check_ratio(size: int, compressed: int, limits: _Limits, what: str) -> None:
    if size < _RATIO_MIN_SIZE:
        return
    ratio = size / max(compressed, 1)
    if ratio > limits.max_ratio:
        raise ArchiveError(
            f"{what} expands {ratio:.0f} times ({compressed} to {size} bytes), over the "
            f"limit of {limits.max_ratio:g}: this looks like a zip bomb",
            code="compression_ratio",
            details={"ratio": ratio, "max_ratio": limits.max_ratio},
        )


class _Zip(_Archive):
    format = "zip"

    def __init__(self, path: str) -> None:
        self._zip = zipfile.ZipFile(path)
        self._infos: dict[str, zipfile.ZipInfo] = {}

    def check(self, limits: _Limits) -> list[ArchiveMember]:
        names = _Names()
        members: list[ArchiveMember] = []
        total = 0
        compressed_total = 0
        for count, info in enumerate(self._zip.infolist(), start=1):
            raw = info.filename
            _check_count(count, limits, raw)
            name, is_dir = _normalize(raw)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(
                    f"member {raw!r} is a symbolic link; only files and folders are allowed",
                    code="link_member",
                    details={"member": raw},
                )
            if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveError(
                    f"member {raw!r} is a device, FIFO or socket; only files and folders are "
                    "allowed",
                    code="special_member",
                    details={"member": raw},
                )
            is_dir = is_dir or stat.S_ISDIR(mode)
            if info.flag_bits & 0x1:
                raise ArchiveError(
                    f"member {raw!r} is encrypted", code="encrypted_member", details={"member": raw}
                )
            names.add(name, is_dir, raw)
            size = 0 if is_dir else info.file_size
            total += size
            compressed_total += info.compress_size
            _check_total(total, limits, raw)
            _check_ratio(size, info.compress_size, limits, f"member {raw!r}")
            member = ArchiveMember(name, size, info.compress_size, is_dir)
            self._infos[name] = info
            members.append(member)
        _check_ratio(total, compressed_total, limits, "the archive")
        return members

    def open_member(self, member: ArchiveMember) -> IO[bytes]:
        # zipfile stops reading at the size the central directory declares (and then finds
        # the CRC wrong, or right if the liar set it for the truncated bytes): lift that stop,
        # so that the real data comes out to its end and `_stream` counts it against the
        # declaration, refusing at the first chunk past it.
        probe = copy.copy(self._infos[member.name])
        probe.file_size = sys.maxsize
        return self._zip.open(probe)

    def close(self) -> None:
        self._zip.close()


class _Tar(_Archive):
    def __init__(self, path: str, compressed: bool) -> None:
        self._compressed_size = os.path.getsize(path)
        self.format = "tar.gz" if compressed else "tar"
        self._tar = tarfile.open(path, mode="r:gz" if compressed else "r:")
        self._infos: dict[str, tarfile.TarInfo] = {}

    def check(self, limits: _Limits) -> list[ArchiveMember]:
        names = _Names()
        members: list[ArchiveMember] = []
        total = 0
        # Iterate (not getmembers) so that a flood of members is refused as it comes.
        for count, info in enumerate(self._tar, start=1):
            raw = info.name
            _check_count(count, limits, raw)
            name, is_dir = _normalize(raw)
            if info.issym() or info.islnk():
                raise ArchiveError(
                    f"member {raw!r} is a {'symbolic' if info.issym() else 'hard'} link to "
                    f"{info.linkname!r}; only files and folders are allowed",
                    code="link_member",
                    details={"member": raw},
                )
            if not (info.isreg() or info.isdir()) or info.issparse():
                raise ArchiveError(
                    f"member {raw!r} is a device, FIFO or other special file; only files and "
                    "folders are allowed",
                    code="special_member",
                    details={"member": raw},
                )
            is_dir = is_dir or info.isdir()
            names.add(name, is_dir, raw)
            size = 0 if is_dir else info.size
            total += size
            _check_total(total, limits, raw)
            if self.format == "tar.gz":  # the file's size is fixed: the ratio only grows
                _check_ratio(total, self._compressed_size, limits, f"the archive (at {raw!r})")
            self._infos[name] = info
            members.append(ArchiveMember(name, size, None, is_dir))
        return members

    def verify(self, members: list[ArchiveMember], limits: _Limits) -> None:
        """Nothing to do: a tar member's data is exactly the size its header gives (tarfile
        reads no more and no less), and the gzip stream was read through while listing."""

    def open_member(self, member: ArchiveMember) -> IO[bytes]:
        fh = self._tar.extractfile(self._infos[member.name])
        if fh is None:
            raise ArchiveError(
                f"member {member.name!r} cannot be read",
                code="archive_unreadable",
                details={"member": member.name},
            )
        return fh

    def close(self) -> None:
        self._tar.close()


@contextmanager
def _open(path: str | os.PathLike[str]) -> Iterator[_Archive]:
    name = os.fspath(path)
    with open(name, "rb") as fh:
        head = fh.read(512)
    archive: _Archive
    try:
        if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            archive = _Zip(name)
        elif head[:2] == b"\x1f\x8b":
            archive = _Tar(name, compressed=True)
        elif head[257:262] == b"ustar" or tarfile.is_tarfile(name):
            archive = _Tar(name, compressed=False)
        else:
            raise ArchiveError(
                "the file is not a zip, tar or tar.gz archive", code="archive_unreadable"
            )
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(
            f"the archive cannot be read: {exc}", code="archive_unreadable"
        ) from None
    try:
        yield archive
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"the archive is corrupt: {exc}", code="archive_unreadable") from None
    finally:
        archive.close()


# --- dataset listing ---------------------------------------------------------------------


def _is_junk(name: str) -> bool:
    parts = name.split("/")
    return any(p in _JUNK_PARTS for p in parts) or parts[-1].startswith("._")


def _metadata_member(members: list[ArchiveMember]) -> ArchiveMember | None:
    candidates = [
        m
        for m in members
        if not m.is_dir and not _is_junk(m.name) and m.name.rsplit("/", 1)[-1] in _METADATA_NAMES
    ]
    return min(candidates, key=lambda m: (m.name.count("/"), m.name)) if candidates else None


def _listing(
    fmt: str, members: list[ArchiveMember], metadata: list[dict[str, object]] | None
) -> ArchiveListing:
    listing = ArchiveListing(
        format=fmt,
        member_count=len(members),
        total_uncompressed=sum(m.size for m in members),
        members=members,
    )
    images: dict[tuple[str, str], str] = {}
    captions: dict[tuple[str, str], str] = {}
    for member in members:
        if member.is_dir:
            continue
        if _is_junk(member.name):
            listing.ignored.append(member.name)
            continue
        path = PurePosixPath(member.name)
        key = (str(path.parent), path.stem)
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            listing.images.append(member.name)
            images[key] = member.name
        elif suffix in CAPTION_EXTENSIONS and path.name not in _METADATA_NAMES:
            listing.captions.append(member.name)
            captions.setdefault(key, member.name)
    for key, image in images.items():
        caption = captions.get(key)
        if caption is None:
            listing.images_without_caption.append(image)
        else:
            listing.pairs.append((image, caption))
    listing.captions_without_image = [c for k, c in captions.items() if k not in images]
    meta = _metadata_member(members)
    if meta is not None and metadata is not None:
        listing.metadata_file = meta.name
        listing.metadata_rows = len(metadata)
        base = str(PurePosixPath(meta.name).parent)
        paired = {image for image, _caption in listing.pairs}
        image_set = set(listing.images)
        matched = 0
        for row in metadata:
            file_name = row.get("file_name")
            if not isinstance(file_name, str):
                continue
            full = file_name if base == "." else f"{base}/{file_name}"
            if full in image_set and full not in paired:
                matched += 1
        listing.metadata_pairs = matched
        if matched:
            with_meta = {
                (f"{base}/{r['file_name']}" if base != "." else r["file_name"])
                for r in metadata
                if isinstance(r.get("file_name"), str)
            }
            listing.images_without_caption = [
                i for i in listing.images_without_caption if i not in with_meta
            ]
    listing.image_count = len(listing.images)
    listing.caption_count = len(listing.captions)
    listing.captioned_count = len(listing.pairs) + listing.metadata_pairs
    return listing
