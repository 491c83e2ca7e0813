"""Reading a private image dataset on the owner's disk, and the manifest that describes it.

Two layouts are read:

- kohya: image files with same-named ``.txt`` captions (``cat.png`` + ``cat.txt``), in the
  folder or any subfolder;
- Hugging Face imagefolder: a ``metadata.jsonl`` at the top with one JSON object per line,
  ``{"file_name": "cat.png", "text": "..."}`` (``file_name`` relative to the folder).

Nothing here is fatal for a single file: unreadable, truncated or oversized images, non-image
files, missing or empty captions and bad metadata lines become :class:`DatasetIssue` entries
and the file is skipped. Only a missing path, a path that is not a folder, or a folder with no
usable example raises :class:`~federated.engine.errors.DatasetError`.

The :class:`DatasetManifest` is the only thing ever published about a private dataset. It
holds aggregates that do not single out one image: the count, coarse buckets of image sizes
and caption lengths (never min/max, which are one image's value), a median rounded to a
coarse grid, and one content hash over the sorted per-example hashes (it lets whoever already
holds the exact whole dataset recognise it, and nothing else). No file names, no caption text,
no per-image hash (which would let anyone test whether a known image is in the dataset).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from federated.engine import constants
from federated.engine.errors import DatasetError

__all__ = [
    "DatasetIssue",
    "DatasetManifest",
    "DatasetScan",
    "Example",
    "IssueKind",
    "caption_words",
    "load_pixels",
    "load_pixels_cropped",
    "oriented_size",
    "read_dataset",
]

# Files that belong to a dataset's layout and are not examples.
_LAYOUT_FILES = frozenset({constants.METADATA_FILE, "manifest.json", "report.txt", ".DS_Store"})


class IssueKind(StrEnum):
    NOT_AN_IMAGE = "not_an_image"
    UNREADABLE_IMAGE = "unreadable_image"
    TRUNCATED_IMAGE = "truncated_image"
    OVERSIZED_IMAGE = "oversized_image"
    MISSING_CAPTION = "missing_caption"
    EMPTY_CAPTION = "empty_caption"
    UNREADABLE_CAPTION = "unreadable_caption"
    BAD_METADATA = "bad_metadata"
    MISSING_IMAGE = "missing_image"
    OUTSIDE_DATASET = "outside_dataset"


@dataclass(frozen=True)
class DatasetIssue:
    """One skipped file and why; shown to the owner only (it names files)."""

    kind: IssueKind
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class Example:
    """One usable image and its caption."""

    path: Path
    relpath: str
    caption: str
    width: int
    height: int
    sha256: str

    @property
    def caption_sha256(self) -> str:
        return hashlib.sha256(self.caption.encode("utf-8")).hexdigest()


def caption_words(caption: str) -> list[str]:
    """Words of a caption (commas separate tags as well as spaces)."""
    return caption.replace(",", " ").split()


def _bucket(value: float, edges: tuple[int, ...]) -> str:
    """``edges=(256, 512)`` gives buckets ``<256``, ``256-511``, ``512+``."""
    if value < edges[0]:
        return f"<{edges[0]}"
    for low, high in zip(edges, edges[1:], strict=False):
        if value < high:
            return f"{low}-{high - 1}"
    return f"{edges[-1]}+"


_SIZE_EDGES = (256, 512, 768, 1024, 2048)
_WORD_EDGES = (5, 10, 20, 40, 75)


@dataclass(frozen=True)
class DatasetManifest:
    """What may be published about a private dataset: aggregates only (see module doc)."""

    count: int
    content_hash: str
    short_side_buckets: dict[str, int]
    median_short_side: int
    aspect_buckets: dict[str, int]
    caption_word_buckets: dict[str, int]
    mean_caption_words: float
    schema: str = constants.MANIFEST_SCHEMA

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the same manifest gives the same text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def manifest_hash(self) -> str:
        """SHA-256 of the canonical JSON: the dataset's identity in caches and LoRA metadata."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> DatasetManifest:
        return cls(**data)  # type: ignore[arg-type]  # a dict written by to_dict()


@dataclass(frozen=True)
class DatasetScan:
    """The result of reading a dataset folder: usable examples and skipped files."""

    root: Path
    layout: str
    examples: tuple[Example, ...]
    issues: tuple[DatasetIssue, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.examples)

    def manifest(self) -> DatasetManifest:
        examples = self.examples
        pairs = sorted(f"{e.sha256}:{e.caption_sha256}" for e in examples)
        content_hash = hashlib.sha256("\n".join(pairs).encode("ascii")).hexdigest()
        short_sides = [min(e.width, e.height) for e in examples]
        aspects = Counter(
            "square"
            if abs(math.log(e.width / e.height)) < 0.1
            else ("landscape" if e.width > e.height else "portrait")
            for e in examples
        )
        words = [len(caption_words(e.caption)) for e in examples]
        return DatasetManifest(
            count=len(examples),
            content_hash=content_hash,
            short_side_buckets=dict(
                sorted(Counter(_bucket(s, _SIZE_EDGES) for s in short_sides).items())
            ),
            # Rounded to 64 px so that it does not pin one image's exact size.
            median_short_side=int(64 * round(statistics.median(short_sides) / 64)),
            aspect_buckets=dict(sorted(aspects.items())),
            caption_word_buckets=dict(
                sorted(Counter(_bucket(w, _WORD_EDGES) for w in words).items())
            ),
            mean_caption_words=round(statistics.fmean(words), 1),
        )


def _inspect_image(
    path: Path, rel: str, *, max_bytes: int, max_pixels: int
) -> tuple[int, int, str] | DatasetIssue:
    """(width, height, sha256) of a decodable image, or the issue that rules it out."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return DatasetIssue(IssueKind.UNREADABLE_IMAGE, rel, f"cannot be read ({exc.strerror})")
    if size > max_bytes:
        return DatasetIssue(
            IssueKind.OVERSIZED_IMAGE, rel, f"{size} bytes is over the limit of {max_bytes}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        return DatasetIssue(IssueKind.UNREADABLE_IMAGE, rel, f"cannot be read ({exc.strerror})")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                return DatasetIssue(
                    IssueKind.OVERSIZED_IMAGE,
                    rel,
                    f"{width}x{height} pixels is over the limit of {max_pixels}",
                )
            image.load()  # decodes everything: truncated files fail here
    except UnidentifiedImageError:
        return DatasetIssue(IssueKind.NOT_AN_IMAGE, rel, "not an image Pillow can decode")
    except Image.DecompressionBombError as exc:
        return DatasetIssue(IssueKind.OVERSIZED_IMAGE, rel, f"decompression bomb ({exc})")
    except (OSError, SyntaxError, ValueError) as exc:
        kind = IssueKind.TRUNCATED_IMAGE if "truncated" in str(exc) else IssueKind.UNREADABLE_IMAGE
        return DatasetIssue(kind, rel, f"cannot be decoded ({exc})")
    if width < 1 or height < 1:
        return DatasetIssue(IssueKind.UNREADABLE_IMAGE, rel, "has no pixels")
    return width, height, hashlib.sha256(data).hexdigest()


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True


def _read_metadata(root: Path, issues: list[DatasetIssue]) -> dict[str, str]:
    """``file_name`` (relative, normalised) -> caption, from ``metadata.jsonl``."""
    captions: dict[str, str] = {}
    meta_path = root / constants.METADATA_FILE
    try:
        lines = meta_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        issues.append(
            DatasetIssue(IssueKind.BAD_METADATA, constants.METADATA_FILE, f"cannot be read ({exc})")
        )
        return captions
    for number, line in enumerate(lines, start=1):
        where = f"{constants.METADATA_FILE}:{number}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            issues.append(DatasetIssue(IssueKind.BAD_METADATA, where, f"not JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            issues.append(DatasetIssue(IssueKind.BAD_METADATA, where, "no file_name string"))
            continue
        text = row.get("text", row.get("caption"))
        if not isinstance(text, str):
            issues.append(DatasetIssue(IssueKind.BAD_METADATA, where, "no text string"))
            continue
        name = Path(row["file_name"]).as_posix()
        if not _inside(root, root / name):
            issues.append(
                DatasetIssue(IssueKind.OUTSIDE_DATASET, where, f"{name} is outside the dataset")
            )
            continue
        if not (root / name).is_file():
            issues.append(DatasetIssue(IssueKind.MISSING_IMAGE, where, f"{name} does not exist"))
            continue
        captions[name] = text
    return captions


def _read_caption_file(path: Path, rel: str) -> str | DatasetIssue:
    caption_path = path.with_suffix(constants.CAPTION_EXTENSION)
    if not caption_path.is_file():
        return DatasetIssue(IssueKind.MISSING_CAPTION, rel, f"no {caption_path.name} next to it")
    try:
        return caption_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return DatasetIssue(IssueKind.UNREADABLE_CAPTION, rel, f"caption unreadable ({exc})")


def read_dataset(
    path: Path,
    *,
    max_image_bytes: int = constants.MAX_IMAGE_BYTES,
    max_image_pixels: int = constants.MAX_IMAGE_PIXELS,
) -> DatasetScan:
    """Read a dataset folder (kohya or imagefolder layout); skip and report bad files.

    Raises :class:`DatasetError` if ``path`` does not exist, is not a folder, or holds no
    usable example (the message then summarises the issues found).
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset folder {path} does not exist", details={"path": str(path)})
    if not path.is_dir():
        raise DatasetError(f"dataset path {path} is not a folder", details={"path": str(path)})
    root = path.resolve()
    issues: list[DatasetIssue] = []
    layout = "imagefolder" if (root / constants.METADATA_FILE).is_file() else "kohya"
    metadata = _read_metadata(root, issues) if layout == "imagefolder" else {}

    examples: list[Example] = []
    for file in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = file.relative_to(root).as_posix()
        if any(part.startswith(".") for part in file.relative_to(root).parts):
            continue  # hidden files and folders (.cache, .DS_Store...)
        suffix = file.suffix.lower()
        if file.name in _LAYOUT_FILES or (layout == "kohya" and suffix == ".txt"):
            continue
        if not _inside(root, file):
            issues.append(DatasetIssue(IssueKind.OUTSIDE_DATASET, rel, "links outside the dataset"))
            continue
        if suffix not in constants.IMAGE_EXTENSIONS:
            if layout == "imagefolder" and suffix == ".txt":
                continue
            issues.append(
                DatasetIssue(
                    IssueKind.NOT_AN_IMAGE, rel, f"not an image file ({suffix or 'no extension'})"
                )
            )
            continue
        if layout == "imagefolder":
            caption: str | DatasetIssue = (
                metadata[rel]
                if rel in metadata
                else DatasetIssue(
                    IssueKind.MISSING_CAPTION, rel, f"not listed in {constants.METADATA_FILE}"
                )
            )
        else:
            caption = _read_caption_file(file, rel)
        if isinstance(caption, DatasetIssue):
            issues.append(caption)
            continue
        caption = " ".join(caption.split())
        if not caption:
            issues.append(DatasetIssue(IssueKind.EMPTY_CAPTION, rel, "the caption is empty"))
            continue
        inspected = _inspect_image(
            file, rel, max_bytes=max_image_bytes, max_pixels=max_image_pixels
        )
        if isinstance(inspected, DatasetIssue):
            issues.append(inspected)
            continue
        width, height, digest = inspected
        examples.append(Example(file, rel, caption, width, height, digest))

    if not examples:
        summary = Counter(issue.kind.value for issue in issues)
        detail = ", ".join(f"{n} {kind}" for kind, n in sorted(summary.items())) or "no files"
        raise DatasetError(
            f"dataset folder {path} has no usable image with a caption ({detail})",
            details={"path": str(path), "issues": dict(summary)},
        )
    return DatasetScan(root=root, layout=layout, examples=tuple(examples), issues=tuple(issues))


def _open_rgb(example: Example) -> Image.Image:
    """The image with EXIF orientation applied and transparency composited on white."""
    with Image.open(example.path) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        return image.convert("RGB")


def oriented_size(example: Example) -> tuple[int, int]:
    """(width, height) as the image is shown: EXIF orientations 5-8 turn it 90 degrees."""
    with Image.open(example.path) as image:
        if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            return example.height, example.width
    return example.width, example.height


def load_pixels_cropped(
    example: Example, width: int, height: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """The image covering ``width`` x ``height``, centre-cropped, and the crop's (top, left).

    Resized (Lanczos) by the smallest factor that covers the target in both directions, so
    only the longer direction is cropped; ``(top, left)`` is in the resized image's pixels,
    as SDXL's ``crop_coords_top_left`` conditioning expects. Float32 ``[3, height, width]``
    in ``[-1, 1]``.
    """
    image = _open_rgb(example)
    scale = max(width / image.width, height / image.height)
    size = (
        max(width, round(image.width * scale)),
        max(height, round(image.height * scale)),
    )
    image = image.resize(size, Image.Resampling.LANCZOS)
    left = (image.width - width) // 2
    top = (image.height - height) // 2
    image = image.crop((left, top, left + width, top + height))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(array.transpose(2, 0, 1)), (top, left)


def load_pixels(example: Example, resolution: int) -> np.ndarray:
    """The image as float32 ``[3, resolution, resolution]`` in ``[-1, 1]``.

    EXIF orientation applied, transparency composited on white, shorter side resized to
    ``resolution`` (Lanczos), then centre-cropped, as diffusers' training scripts do.
    """
    return load_pixels_cropped(example, resolution, resolution)[0]
