"""What a stored file is, found without loading tensors and without unpickling anything."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from sdcore.archives import inspect_archive
from sdcore.detect import detect, read_lora_alpha, summarize_metadata
from sdcore.pickles import assert_safe_pickle, scan_pickle_file
from sdcore.safetensors_header import read_header
from sdcore.sniff import SNIFF_BYTES, check_extension, sniff_format

MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
ARCHIVE_EXTENSIONS = (".zip", ".tar", ".tar.gz", ".tgz")
SIDE_EXTENSIONS = (".json", ".txt", ".md", ".yaml", ".model")
ARCHIVE_SAMPLE_PAIRS = 50
ALLOWED_EXTENSIONS = frozenset(MODEL_EXTENSIONS + ARCHIVE_EXTENSIONS + SIDE_EXTENSIONS)


def inspect_file(path: Path, filename: str) -> dict[str, Any]:
    """Describe the file at ``path`` as a JSON-able dict, or raise an ``SdcoreError``.

    The returned ``format`` is one of the ``FileFormat`` values.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        prefix = fh.read(SNIFF_BYTES)
    lower = filename.lower()
    if lower.endswith(SIDE_EXTENSIONS):
        return {"format": "other"}
    sniffed = sniff_format(prefix, size)
    if sniffed == "unknown" and lower.endswith(".safetensors"):
        read_header(path)  # a damaged safetensors file: raise the header's precise error code
    check_extension(filename, sniffed)
    if lower.endswith(ARCHIVE_EXTENSIONS):
        listing = _jsonable(asdict(inspect_archive(path)))
        listing.pop("members", None)  # up to 100,000 entries: keep counts and a sample
        listing["pairs"] = listing.get("pairs", [])[:ARCHIVE_SAMPLE_PAIRS]
        return {"format": "archive", "archive": listing}
    if sniffed == "safetensors":
        header = read_header(path)
        detection = detect(header)
        alpha = detection.lora_alpha
        if detection.kind in ("lora", "lycoris") and alpha is None:
            alpha = read_lora_alpha(path, header)
        return {
            "format": "safetensors",
            "kind": detection.kind,
            "architecture": detection.architecture,
            "lora_rank": detection.lora_rank,
            "lora_alpha": alpha,
            "lora_format": detection.lora_format,
            "embedding_vectors": detection.embedding_vectors,
            "tensor_count": len(header.tensors),
            "metadata": _jsonable(summarize_metadata(header.metadata)),
            "details": _jsonable(detection.details),
        }
    scan = scan_pickle_file(path)
    if not scan.safe:
        assert_safe_pickle(path)  # raises UnsafePickleError naming the import
    return {
        "format": "pickle",
        "kind": "unknown",
        "architecture": "unknown",
        "pickle_globals": _jsonable([f"{mod}.{name}" for mod, name in scan.globals]),
    }


def _jsonable(value: Any) -> Any:
    """JSON-able, and storable in PostgreSQL's jsonb, which refuses NUL characters."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_jsonable(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
