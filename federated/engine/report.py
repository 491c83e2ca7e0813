"""The dataset report shown to the owner (locally) before a dataset is listed.

It checks what makes a consistent character or style LoRA: every caption carries the trigger
word, no near-duplicate images (perceptual hashes: dHash and aHash, 64 bits each), no image
smaller than the training resolution, caption lengths CLIP can read, and the tag frequencies
(a tag present in every caption is absorbed into the trigger word). It names files: it is
for the owner's eyes and never published (the manifest is what is published).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from PIL import Image

from federated.engine.dataset import DatasetIssue, DatasetScan, Example, caption_words

__all__ = [
    "DatasetReport",
    "Finding",
    "Severity",
    "ahash",
    "build_report",
    "dhash",
    "hamming",
]

CLIP_WORD_LIMIT = 75  # CLIP reads 77 tokens with start/end; a word is at least one token


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    message: str
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetReport:
    count: int
    findings: tuple[Finding, ...]
    skipped: tuple[DatasetIssue, ...]
    tag_frequencies: tuple[tuple[str, int], ...]
    caption_words: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no check failed with severity error."""
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def by_check(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check]

    def to_text(self, *, max_paths: int = 10) -> str:
        lines = [f"{self.count} usable examples, {len(self.skipped)} files skipped"]
        for issue in self.skipped[:max_paths]:
            lines.append(f"  skipped {issue}")
        if len(self.skipped) > max_paths:
            lines.append(f"  ... and {len(self.skipped) - max_paths} more")
        for finding in self.findings:
            lines.append(f"[{finding.severity}] {finding.check}: {finding.message}")
            for path in finding.paths[:max_paths]:
                lines.append(f"    {path}")
            if len(finding.paths) > max_paths:
                lines.append(f"    ... and {len(finding.paths) - max_paths} more")
        words = self.caption_words
        if words:
            lines.append(
                f"caption words: min {words['min']:.0f}, median {words['median']:.0f}, "
                f"max {words['max']:.0f}"
            )
        top = ", ".join(f"{tag} ({n})" for tag, n in self.tag_frequencies[:15])
        lines.append(f"top tags: {top}")
        lines.append("OK" if self.ok else "NOT READY: fix the errors above")
        return "\n".join(lines)


def _grey(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    small = image.convert("L").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32)


def dhash(image: Image.Image, *, size: int = 8) -> int:
    """Difference hash: ``size*size`` bits, 1 where a pixel is brighter than its right neighbour."""
    pixels = _grey(image, (size + 1, size))
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def ahash(image: Image.Image, *, size: int = 8) -> int:
    """Average hash: ``size*size`` bits, 1 where a pixel is brighter than the mean."""
    pixels = _grey(image, (size, size))
    bits = (pixels > pixels.mean()).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _near_duplicates(
    examples: tuple[Example, ...], max_distance: int
) -> list[tuple[str, str, int]]:
    """Pairs whose dHash and aHash both differ in at most ``max_distance`` bits."""
    d_hashes: list[int] = []
    a_hashes: list[int] = []
    for example in examples:
        with Image.open(example.path) as image:
            d_hashes.append(dhash(image))
            a_hashes.append(ahash(image))
    d = np.array(d_hashes, dtype=np.uint64)
    a = np.array(a_hashes, dtype=np.uint64)
    pairs: list[tuple[str, str, int]] = []
    for i in range(len(examples) - 1):
        d_dist = np.bitwise_count(d[i] ^ d[i + 1 :])
        a_dist = np.bitwise_count(a[i] ^ a[i + 1 :])
        for offset in np.nonzero((d_dist <= max_distance) & (a_dist <= max_distance))[0]:
            j = i + 1 + int(offset)
            pairs.append((examples[i].relpath, examples[j].relpath, int(d_dist[offset])))
    return pairs


def _tags(caption: str) -> list[str]:
    return [t.strip().lower() for t in caption.split(",") if t.strip()]


def _has_word(caption: str, word: str) -> bool:
    word = word.lower()
    return any(w.lower().strip(".;:!?()[]{}\"'") == word for w in caption_words(caption))


def _trigger_findings(examples: tuple[Example, ...], trigger_word: str | None) -> list[Finding]:
    if not trigger_word:
        return []
    missing = tuple(e.relpath for e in examples if not _has_word(e.caption, trigger_word))
    if not missing:
        return []
    return [
        Finding(
            "trigger_word",
            Severity.ERROR,
            f"{len(missing)} of {len(examples)} captions lack the trigger word {trigger_word!r}",
            missing,
        )
    ]


def _duplicate_findings(examples: tuple[Example, ...], max_distance: int) -> list[Finding]:
    """Byte-identical copies, then perceptual near-duplicates that are not such copies."""
    findings: list[Finding] = []
    by_hash: dict[str, list[str]] = {}
    for example in examples:
        by_hash.setdefault(example.sha256, []).append(example.relpath)
    exact = [paths for paths in by_hash.values() if len(paths) > 1]
    if exact:
        findings.append(
            Finding(
                "exact_duplicates",
                Severity.WARNING,
                f"{sum(len(p) - 1 for p in exact)} images are byte-identical copies of another",
                tuple(" = ".join(paths) for paths in exact),
            )
        )
    near = [
        (a, b, dist)
        for a, b, dist in _near_duplicates(examples, max_distance)
        if not any(a in group and b in group for group in exact)
    ]
    if near:
        findings.append(
            Finding(
                "near_duplicates",
                Severity.WARNING,
                f"{len(near)} pairs of near-duplicate images (perceptual hash distance "
                f"<= {max_distance} of 64 bits): they overweight one picture",
                tuple(f"{a} ~ {b} (distance {d})" for a, b, d in near),
            )
        )
    return findings


def _resolution_findings(examples: tuple[Example, ...], resolution: int) -> list[Finding]:
    small = tuple(
        f"{e.relpath} ({e.width}x{e.height})"
        for e in examples
        if min(e.width, e.height) < resolution
    )
    if not small:
        return []
    return [
        Finding(
            "below_resolution",
            Severity.WARNING,
            f"{len(small)} images are smaller than the training resolution {resolution} px "
            "and will be upscaled (blurry)",
            small,
        )
    ]


def _caption_length_findings(
    examples: tuple[Example, ...], word_counts: list[int]
) -> list[Finding]:
    findings: list[Finding] = []
    too_long = tuple(
        e.relpath for e, n in zip(examples, word_counts, strict=True) if n > CLIP_WORD_LIMIT
    )
    if too_long:
        findings.append(
            Finding(
                "caption_length",
                Severity.WARNING,
                f"{len(too_long)} captions have more than {CLIP_WORD_LIMIT} words; CLIP reads "
                "77 tokens and drops the rest",
                too_long,
            )
        )
    too_short = tuple(e.relpath for e, n in zip(examples, word_counts, strict=True) if n < 2)
    if too_short:
        findings.append(
            Finding(
                "caption_length",
                Severity.INFO,
                f"{len(too_short)} captions have fewer than 2 words",
                too_short,
            )
        )
    return findings


def _tag_findings(
    examples: tuple[Example, ...], tag_counts: Counter[str], trigger_word: str | None
) -> list[Finding]:
    everywhere = sorted(
        tag
        for tag, n in tag_counts.items()
        if n == len(examples)
        and len(examples) > 1
        and not (trigger_word and _has_word(tag, trigger_word))
    )
    if not everywhere:
        return []
    return [
        Finding(
            "tag_frequency",
            Severity.INFO,
            "tags in every caption are learnt as part of the trigger word: "
            + ", ".join(everywhere),
        )
    ]


def _skipped_findings(scan: DatasetScan) -> list[Finding]:
    if not scan.issues:
        return []
    return [
        Finding(
            "skipped_files",
            Severity.WARNING,
            f"{len(scan.issues)} files were skipped (see the list above)",
            tuple(str(issue) for issue in scan.issues),
        )
    ]


def build_report(
    scan: DatasetScan,
    *,
    trigger_word: str | None,
    resolution: int,
    duplicate_distance: int = 4,
) -> DatasetReport:
    """Run every check on ``scan``; ``trigger_word=None`` skips the trigger check."""
    examples = scan.examples
    word_counts = [len(caption_words(e.caption)) for e in examples]
    tag_counts = Counter(tag for e in examples for tag in set(_tags(e.caption)))
    findings = [
        *_trigger_findings(examples, trigger_word),
        *_duplicate_findings(examples, duplicate_distance),
        *_resolution_findings(examples, resolution),
        *_caption_length_findings(examples, word_counts),
        *_tag_findings(examples, tag_counts, trigger_word),
        *_skipped_findings(scan),
    ]
    return DatasetReport(
        count=len(examples),
        findings=tuple(findings),
        skipped=scan.issues,
        tag_frequencies=tuple(sorted(tag_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        caption_words={
            "min": float(min(word_counts)),
            "median": float(statistics.median(word_counts)),
            "max": float(max(word_counts)),
        },
    )
