"""A file's format from its first bytes, and whether its name agrees.

`sniff_format` looks only at magic numbers (and, for safetensors, at a plausible header
length followed by ``{``). Pass at least `SNIFF_BYTES` (512) bytes: a tar archive is only
recognizable by the ``ustar`` mark at offset 257.
"""

from __future__ import annotations

import struct

from sdcore.errors import FormatMismatchError

__all__ = [
    "ALLOWED_FORMATS",
    "FORMAT_NAMES",
    "SNIFF_BYTES",
    "check_extension",
    "extension_of",
    "sniff_format",
]

SNIFF_BYTES = 512
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024

ALLOWED_FORMATS: dict[str, frozenset[str]] = {
    ".safetensors": frozenset({"safetensors"}),
    ".ckpt": frozenset({"zip", "pickle"}),
    ".pt": frozenset({"zip", "pickle"}),
    ".pth": frozenset({"zip", "pickle"}),
    ".bin": frozenset({"zip", "pickle"}),
    ".gguf": frozenset({"gguf"}),
    ".zip": frozenset({"zip"}),
    # A tar is only recognizable from 512 bytes on; archive inspection checks it fully.
    ".tar": frozenset({"tar", "unknown"}),
    ".tar.gz": frozenset({"gzip"}),
    ".tgz": frozenset({"gzip"}),
}
"""For each allowed extension, the sniffed formats its bytes may have."""

FORMAT_NAMES = {
    "safetensors": "a safetensors file",
    "zip": "a zip archive (a PyTorch checkpoint or a zip file)",
    "pickle": "a Python pickle (a legacy PyTorch checkpoint)",
    "gguf": "a GGUF file",
    "tar": "a tar archive",
    "gzip": "gzip-compressed data",
    "unknown": "of no format we recognize",
}


def sniff_format(prefix: bytes, file_size: int) -> str:
    """``"safetensors"``, ``"zip"``, ``"pickle"``, ``"gguf"``, ``"tar"``, ``"gzip"`` or
    ``"unknown"``, from the first bytes of a file of `file_size` bytes."""
    head = bytes(prefix[:SNIFF_BYTES])
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    # Safetensors first: a header length whose low byte is 0x80 (640-1535 bytes, common for
    # small LoRAs and embeddings) would otherwise read as a pickle protocol mark.
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n < _MAX_SAFETENSORS_HEADER and 8 + n <= file_size:
            return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head[257:262] == b"ustar":
        return "tar"
    return "unknown"


def extension_of(filename: str) -> str:
    """The lowercase extension that decides the format: ``.tar.gz`` counts as one."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].lower()
    if name.endswith(".tar.gz"):
        return ".tar.gz"
    dot = name.rfind(".")
    return name[dot:] if dot > 0 else ""


def check_extension(filename: str, sniffed: str) -> str:
    """Check that `filename`'s extension allows the sniffed format; return the extension.

    Raises `FormatMismatchError` with code ``extension_not_allowed`` for an extension the
    registry does not take, and ``format_mismatch`` when the bytes are something else, e.g.
    a ``.safetensors`` name on a pickle.
    """
    extension = extension_of(filename)
    allowed = ALLOWED_FORMATS.get(extension)
    if allowed is None:
        known = ", ".join(sorted(ALLOWED_FORMATS))
        raise FormatMismatchError(
            f"{filename!r}: the extension {extension or '(none)'!r} is not allowed; "
            f"allowed: {known}",
            code="extension_not_allowed",
            details={"filename": filename, "extension": extension},
        )
    if sniffed not in allowed:
        expected = " or ".join(FORMAT_NAMES[f] for f in sorted(allowed) if f != "unknown")
        hint = ""
        if extension == ".safetensors" and sniffed in ("zip", "pickle"):
            hint = " Name it .ckpt (or convert it to safetensors) and upload it again."
        raise FormatMismatchError(
            f"{filename!r} is named {extension} but its bytes are "
            f"{FORMAT_NAMES.get(sniffed, sniffed)}, not {expected}.{hint}",
            code="format_mismatch",
            details={"filename": filename, "extension": extension, "sniffed": sniffed},
        )
    return extension
