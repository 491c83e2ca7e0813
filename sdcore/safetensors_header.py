"""Read and validate a safetensors header without reading a single tensor.

A safetensors file is ``[n: u64 little-endian][n bytes of UTF-8 JSON][data]``. The JSON
maps tensor names to ``{"dtype", "shape", "data_offsets": [start, end]}`` (offsets relative
to the data section) plus an optional ``"__metadata__"`` object of strings. This module
checks everything the format promises (the rules of the reference implementation and a
few stricter ones: no duplicate keys, no unknown fields), so that code after it can trust
names, shapes and offsets. Every failure is a `HeaderError` with a specific `code`.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from sdcore.errors import HeaderError

__all__ = [
    "DTYPE_BITS",
    "MAX_HEADER_BYTES",
    "METADATA_KEY",
    "SafetensorsHeader",
    "TensorInfo",
    "header_size_from_prefix",
    "parse_header_bytes",
    "read_header",
]

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""Default bound on the JSON header length n: a header must be strictly smaller."""

METADATA_KEY = "__metadata__"

DTYPE_BITS: Mapping[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
"""Every dtype of the safetensors format (as of safetensors 0.8) and its size in bits."""

_TENSOR_FIELDS = frozenset({"dtype", "shape", "data_offsets"})
_MAX_NUMEL = 2**64  # the reference implementation computes sizes in usize
_MAX_DIMS = 64


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it; `start` and `end` are relative to the data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: the JSON length, the tensors by name, and the metadata."""

    header_size: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data_offset(self) -> int:
        """Absolute file offset of the data section (tensor offsets are relative to it)."""
        return 8 + self.header_size

    @property
    def data_size(self) -> int:
        return max((t.end for t in self.tensors.values()), default=0)

    @property
    def total_size(self) -> int:
        """The size the file must have: the 8-byte length, the header, then the data."""
        return self.data_offset + self.data_size


def header_size_from_prefix(prefix: bytes, *, max_header_bytes: int = MAX_HEADER_BYTES) -> int:
    """Return n, the JSON header length, from the first 8 bytes of a file.

    Raises `HeaderError` with code ``header_truncated`` when fewer than 8 bytes are given,
    ``header_size_zero`` or ``header_too_large`` when n is 0 or not below the bound.
    """
    if len(prefix) < 8:
        raise HeaderError(
            f"file is too short to be safetensors: {len(prefix)} bytes, the 8-byte header "
            "length alone needs 8",
            code="header_truncated",
            details={"size": len(prefix)},
        )
    n = int.from_bytes(prefix[:8], "little")
    if n == 0:
        raise HeaderError(
            "safetensors header length is 0: the header must hold at least '{}'",
            code="header_size_zero",
        )
    if n >= max_header_bytes:
        raise HeaderError(
            f"safetensors header length {n} bytes is over the limit of {max_header_bytes} bytes",
            code="header_too_large",
            details={"header_size": n, "max_header_bytes": max_header_bytes},
        )
    return n


def parse_header_bytes(
    prefix: bytes,
    file_size: int | None,
    *,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> SafetensorsHeader:
    """Validate a header from the first bytes of a file held in memory.

    `prefix` must hold at least the 8-byte length and the whole JSON (more is ignored).
    With `file_size`, offsets are also checked against the real size of the data section.
    A prefix that stops inside the header raises code ``header_incomplete`` when the file
    may be longer (the caller should read more), ``header_past_end`` when it cannot be.
    """
    n = header_size_from_prefix(prefix, max_header_bytes=max_header_bytes)
    if file_size is not None and 8 + n > file_size:
        raise HeaderError(
            f"safetensors header length {n} goes past the end of the file ({file_size} bytes)",
            code="header_past_end",
            details={"header_size": n, "file_size": file_size},
        )
    if len(prefix) < 8 + n:
        raise HeaderError(
            f"only {len(prefix)} bytes given, the header needs {8 + n}",
            code="header_incomplete",
            details={"header_size": n, "have": len(prefix), "need": 8 + n},
        )
    raw = bytes(prefix[8 : 8 + n])
    return _validate(n, _decode_json(raw), file_size)


def read_header(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    file_size: int | None = None,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> SafetensorsHeader:
    """Read and validate the header of a safetensors file, never reading the tensors.

    `source` is a path or a binary file object positioned at the start of the safetensors
    bytes. The file size, when not given, is taken from the path, or from a seekable file
    object (measured from its current position); a non-seekable stream is checked without
    it (offsets are then only checked for consistency among themselves).
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            on_disk = os.fstat(fh.fileno()).st_size if file_size is None else file_size
            return _read_from(fh, on_disk, max_header_bytes)
    size = file_size if file_size is not None else _stream_size(source)
    return _read_from(source, size, max_header_bytes)


def _stream_size(fh: BinaryIO) -> int | None:
    try:
        if not fh.seekable():
            return None
        here = fh.tell()
        end = fh.seek(0, io.SEEK_END)
        fh.seek(here)
    except (OSError, ValueError):
        return None
    return end - here


def _read_exact(fh: IO[bytes], count: int) -> bytes:
    parts: list[bytes] = []
    left = count
    while left > 0:
        chunk = fh.read(min(left, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _read_from(fh: IO[bytes], file_size: int | None, max_header_bytes: int) -> SafetensorsHeader:
    length = _read_exact(fh, 8)
    n = header_size_from_prefix(length, max_header_bytes=max_header_bytes)
    if file_size is not None and 8 + n > file_size:
        raise HeaderError(
            f"safetensors header length {n} goes past the end of the file ({file_size} bytes)",
            code="header_past_end",
            details={"header_size": n, "file_size": file_size},
        )
    raw = _read_exact(fh, n)
    if len(raw) < n:
        raise HeaderError(
            f"file ends inside the safetensors header: {len(raw)} of {n} header bytes",
            code="header_truncated",
            details={"header_size": n, "have": len(raw)},
        )
    return _validate(n, _decode_json(raw), file_size)


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_json(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderError(
            f"safetensors header is not valid UTF-8 (byte {exc.start} of the header)",
            code="header_not_utf8",
        ) from None
    if not text.startswith("{"):
        raise HeaderError(
            f"safetensors header must start with '{{' (it starts with {text[:10]!r})",
            code="header_bad_start",
        )
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except _DuplicateKeyError as exc:
        raise HeaderError(
            f"safetensors header has the key {exc.key!r} more than once",
            code="header_duplicate_key",
            details={"key": exc.key},
        ) from None
    except (ValueError, RecursionError) as exc:
        raise HeaderError(
            f"safetensors header is not valid JSON: {_short(str(exc))}",
            code="header_invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise HeaderError(
            f"safetensors header must be a JSON object, not {type(value).__name__}",
            code="header_not_object",
        )
    return value


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(n: int, obj: dict[str, Any], file_size: int | None) -> SafetensorsHeader:
    metadata = _validate_metadata(obj.get(METADATA_KEY))
    tensors: dict[str, TensorInfo] = {}
    for name, entry in obj.items():
        if name == METADATA_KEY:
            continue
        tensors[name] = _validate_tensor(name, entry)
    _validate_layout(n, tensors, file_size)
    return SafetensorsHeader(header_size=n, tensors=tensors, metadata=metadata)


def _validate_metadata(value: object) -> dict[str, str]:
    if value is None:  # absent, or null as the reference implementation also accepts
        return {}
    if not isinstance(value, dict):
        raise HeaderError(
            f"'{METADATA_KEY}' must be an object of strings, not {type(value).__name__}",
            code="metadata_invalid",
        )
    for key, item in value.items():
        if not isinstance(item, str):
            raise HeaderError(
                f"'{METADATA_KEY}' value for {key!r} must be a string, not {type(item).__name__}",
                code="metadata_invalid",
                details={"key": key},
            )
    return dict(value)


def _tensor_error(name: str, code: str, problem: str) -> HeaderError:
    return HeaderError(
        f"tensor {_short(name, 120)!r}: {problem}", code=code, details={"tensor": name}
    )


def _validate_tensor(name: str, entry: object) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _tensor_error(
            name, "tensor_entry_invalid", f"entry must be an object, not {type(entry).__name__}"
        )
    keys = set(entry)
    if keys != _TENSOR_FIELDS:
        missing = sorted(_TENSOR_FIELDS - keys)
        extra = sorted(keys - _TENSOR_FIELDS)
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(_short(k, 40) for k in extra)}")
        raise _tensor_error(name, "tensor_entry_invalid", "; ".join(parts))
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise _tensor_error(name, "tensor_dtype_unknown", f"unknown dtype {_short(repr(dtype))}")
    shape = entry["shape"]
    if not isinstance(shape, list) or len(shape) > _MAX_DIMS:
        raise _tensor_error(
            name, "tensor_shape_invalid", f"shape must be a list of at most {_MAX_DIMS} integers"
        )
    numel = 1
    for dim in shape:
        if not _is_int(dim) or dim < 0:
            raise _tensor_error(
                name,
                "tensor_shape_invalid",
                f"shape must hold non-negative integers, got {_short(repr(shape))}",
            )
        numel *= dim
        if numel > _MAX_NUMEL:
            raise _tensor_error(
                name, "tensor_shape_invalid", f"shape {_short(repr(shape))} is too large"
            )
    offsets = entry["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) and o >= 0 for o in offsets)
    ):
        raise _tensor_error(
            name,
            "tensor_offsets_invalid",
            f"data_offsets must be two non-negative integers, got {_short(repr(offsets))}",
        )
    start, end = offsets
    if start > end:
        raise _tensor_error(
            name, "tensor_offsets_invalid", f"data_offsets start {start} is after end {end}"
        )
    bits = numel * DTYPE_BITS[dtype]
    if bits % 8:
        raise _tensor_error(
            name,
            "tensor_size_mismatch",
            f"{numel} elements of {dtype} do not fill a whole number of bytes",
        )
    if end - start != bits // 8:
        raise _tensor_error(
            name,
            "tensor_size_mismatch",
            f"data_offsets span {end - start} bytes but shape {shape} of {dtype} needs {bits // 8}",
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), start=start, end=end)


def _validate_layout(n: int, tensors: dict[str, TensorInfo], file_size: int | None) -> None:
    data_size = None if file_size is None else file_size - 8 - n
    expected = 0
    for info in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        if info.start > expected:
            raise _tensor_error(
                info.name,
                "tensor_gap",
                f"starts at data offset {info.start} but the previous tensor ends at "
                f"{expected}: {info.start - expected} bytes are not covered",
            )
        if info.start < expected:
            raise _tensor_error(
                info.name,
                "tensor_overlap",
                f"starts at data offset {info.start}, inside the previous tensor "
                f"(which ends at {expected})",
            )
        if data_size is not None and info.end > data_size:
            raise _tensor_error(
                info.name,
                "tensor_out_of_range",
                f"ends at data offset {info.end} but the file has only {data_size} bytes "
                "of data (the file is truncated)",
            )
        expected = info.end
    if data_size is not None and expected != data_size:
        raise HeaderError(
            f"the file has {data_size} bytes of data but its tensors cover {expected}: "
            f"{data_size - expected} bytes are trailing after the last tensor",
            code="trailing_data",
            details={"data_size": data_size, "covered": expected},
        )
