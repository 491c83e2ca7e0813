"""The release check on a data owner's node: does the final LoRA reproduce my images?

Before a trained LoRA is published, the ServerApp sends the final adapter to every node that
trained in the job (a query message, ``action = "release-check"``). The node answers one word,
``allow`` or ``veto`` (with a coarse reason code). Nothing else leaves the node: no score, no
image, no caption, no index.

**What is measured: reproduction relative to the base alone**, as the extraction literature
defines a copy (Carlini et al. 2023, "Extracting training data from diffusion models": a
generation is a copy when it is much closer to one training image than chance makes it). For
each checked sample the node takes one of its own captions and a seed, and draws two pictures
with the same prompt and seed: one with the base model and the adapter, one with the base alone.
Let ``x`` be the private image nearest the adapter's sample ``a``; its **copy margin** is

    sim(a, x) - max(sim(b, x), sim(a, y))

where ``b`` is the base-alone sample and ``y`` the node's next-nearest *other* image (a different
picture: near-identical files count as one). The sample is a copy when the margin reaches
:data:`COPY_MARGIN`: the adapter brought the picture closer to one private image than the base
alone draws it *and* closer to that image than to any other of the node's images. The first term
discounts what the prompt alone gives (a plain background of the caption's colour, a figure the
base already draws: the absolute score rewarded those, so that the base alone outscored a LoRA
that memorised); the second discounts a style or concept that the LoRA learnt from all the images
alike, which is what a LoRA is for. A LoRA equal to the base scores 0 copies by construction.

The node's **reproduction score** is the share of its samples that are copies, 0 to 1; it vetoes
when the score is above its owner's threshold (``release-threshold`` in the node file
``node.json``, read at each check, or in the node config; default :data:`DEFAULT_THRESHOLD`: more
than a quarter of the samples copy; 0: any copy vetoes; 1: never veto). The node keeps what
it found (score, copies, the best margin, which of its images, the threshold) in
``<cache-dir>/jobs/<job>/release-check.json`` for its owner; that file never leaves the node.

The similarity ``sim`` is fixed here, deterministic and needs no download: both images are
converted to RGB and resized to :data:`COMPARE_SIZE` pixels square (PIL's box filter, exact and
the same on every machine), then the structural similarity (SSIM, Wang et al. 2004, constants
K1 = 0.01, K2 = 0.03, a 7x7 uniform window as scikit-image's default) is averaged over the
window positions and the three colour channels and clipped to [0, 1]. 1 means "the same picture
at thumbnail size" (position, size, shape and colours of what is drawn); unrelated pictures score
near 0. A learned network feature (LPIPS, DINO) would judge "same subject" better, but it cannot
be downloaded here and a fixed, explainable number is what an owner sets a threshold on.

Pure Python, no Flower, no Django. The node's side (drawing the samples with the job's base
model, with and without the adapter) is :mod:`federated.engine.flower.release_node`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from federated.engine.errors import ConfigError

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "ACTION",
    "COMPARE_SIZE",
    "COPY_MARGIN",
    "DEFAULT_SAMPLES",
    "DEFAULT_THRESHOLD",
    "MAX_SAMPLES",
    "MIN_THRESHOLD",
    "REASONS",
    "SAME_PICTURE",
    "VERDICTS",
    "ReleaseVerdict",
    "Reproduction",
    "same_pictures",
    "copy_margin",
    "check_threshold",
    "release_settings",
    "reproduction",
    "similarity",
    "thumbnail",
    "vetoes",
]

logger = logging.getLogger(__name__)

ACTION = "release-check"  # the query message's action
VERDICTS = ("allow", "veto")
# Coarse reason codes, the only other thing a node says: "ok" (nothing reproduced),
# "reproduced" (the share of copies reached the threshold), "no_captions" (nothing to prompt).
REASONS = ("ok", "reproduced", "no_captions")

COMPARE_SIZE = 32
WINDOW = 7
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
# A sample is a copy when it is this much closer (SSIM) to one private image than both the base
# alone at the same prompt and seed and the node's other images are (see the module doc). About
# twice the largest margin chance gave in the audit (0.048 over 16 samples of a DP job); a
# memorising job's copies reach 0.2 to 0.24 (bench/RESULTS-privacy.md).
COPY_MARGIN = 0.1
# Two private images this alike are one picture (a duplicated file) for the "other images" term.
SAME_PICTURE = 0.9
# The owner's threshold: the node vetoes when the share of samples that are copies is above it
# (0: any copy vetoes, the strictest; 1: never veto).
DEFAULT_THRESHOLD = 0.25
MIN_THRESHOLD = 0.0
DEFAULT_SAMPLES = 8
MAX_SAMPLES = 64
STEPS = 20
GUIDANCE = 4.0


def thumbnail(image: Image) -> np.ndarray:
    """``image`` as a float64 array of shape (COMPARE_SIZE, COMPARE_SIZE, 3), values 0..255."""
    from PIL import Image as PILImage

    small = image.convert("RGB").resize((COMPARE_SIZE, COMPARE_SIZE), PILImage.Resampling.BOX)
    return np.asarray(small, dtype=np.float64)


def _window_means(x: np.ndarray) -> np.ndarray:
    """Means over every WINDOW x WINDOW window (valid positions), per channel."""
    view = np.lib.stride_tricks.sliding_window_view(x, (WINDOW, WINDOW), axis=(0, 1))
    return view.mean(axis=(-2, -1))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = _window_means(a), _window_means(b)
    n = WINDOW * WINDOW
    cov = n / (n - 1)  # sample (co)variances, as scikit-image
    var_a = (_window_means(a * a) - mu_a**2) * cov
    var_b = (_window_means(b * b) - mu_b**2) * cov
    cov_ab = (_window_means(a * b) - mu_a * mu_b) * cov
    num = (2 * mu_a * mu_b + _C1) * (2 * cov_ab + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2)
    return float(np.mean(num / den))


def _similarity_arrays(a: np.ndarray, b: np.ndarray) -> float:
    return min(1.0, max(0.0, _ssim(a, b)))


def similarity(a: Image, b: Image) -> float:
    """How alike two pictures are at thumbnail size, 0 (unrelated) to 1 (the same)."""
    return _similarity_arrays(thumbnail(a), thumbnail(b))


@dataclass(frozen=True)
class Reproduction:
    """What the node found over its samples (all of it stays on the node)."""

    score: float  # the share of samples that are copies, 0 to 1: what the threshold is on
    copies: int
    samples: int
    best_margin: float  # the largest copy margin over the samples
    matched: int  # the private image of the best margin (-1 if no private image)
    margins: tuple[float, ...]  # per sample


def copy_margin(
    sample: np.ndarray,
    base_sample: np.ndarray,
    private: Sequence[np.ndarray],
    same: dict[int, np.ndarray] | None = None,
) -> tuple[float, int]:
    """(copy margin, index of the nearest private image) of one adapter sample; see the module
    doc. ``same`` memoises :func:`same_pictures` rows across the samples of one check."""
    if not private:
        return 0.0, -1
    sims = np.asarray([_similarity_arrays(sample, image) for image in private])
    nearest = int(np.argmax(sims))
    if same is None:
        same = {}
    if nearest not in same:
        same[nearest] = same_pictures(private, nearest)
    row = same[nearest]
    others = [float(sims[j]) for j in range(len(private)) if not row[j]]
    reference = max([_similarity_arrays(base_sample, private[nearest]), *others])
    return float(sims[nearest]) - reference, nearest


def same_pictures(private: Sequence[np.ndarray], index: int) -> np.ndarray:
    """``out[j]``: private image ``j`` is the same picture as image ``index`` (SSIM >=
    SAME_PICTURE, or j == index). One row, not the whole matrix: a check needs the rows of the
    images its samples land nearest, and the matrix of a 256-image dataset is 32,640 SSIMs
    (124 s at 3.8 ms each; it was most of the demo job's 136 s release check)."""
    out = np.zeros(len(private), dtype=bool)
    for j, image in enumerate(private):
        out[j] = j == index or _similarity_arrays(private[index], image) >= SAME_PICTURE
    return out


def reproduction(
    samples: Sequence[np.ndarray],
    base_samples: Sequence[np.ndarray],
    private: Sequence[np.ndarray],
) -> Reproduction:
    """The reproduction score of adapter ``samples`` against the node's ``private`` images;
    ``base_samples[k]`` is drawn by the base alone with sample k's prompt and seed."""
    if len(samples) != len(base_samples):
        raise ValueError("every adapter sample needs its base-alone twin")
    same: dict[int, np.ndarray] = {}
    margins: list[float] = []
    best, matched = -1.0, -1
    for sample, base_sample in zip(samples, base_samples, strict=True):
        margin, nearest = copy_margin(sample, base_sample, private, same)
        margins.append(margin)
        if nearest >= 0 and margin > best:
            best, matched = margin, nearest
    copies = sum(m >= COPY_MARGIN for m in margins)
    return Reproduction(
        score=copies / len(margins) if margins else 0.0,
        copies=copies,
        samples=len(margins),
        best_margin=max(margins) if margins else 0.0,
        matched=matched,
        margins=tuple(margins),
    )


@dataclass(frozen=True)
class ReleaseSettings:
    """The owner's settings (``--node-config``): when to veto, how many samples to draw."""

    threshold: float = DEFAULT_THRESHOLD
    samples: int = DEFAULT_SAMPLES


def _node_file_settings(node_config: Mapping[str, object]) -> dict[str, object]:
    """``release-threshold`` / ``release-samples`` in the node file (``node.json``), read at
    each check: the owner changes them there without restarting the node."""
    path = str(node_config.get("node-file", "") or "")
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in ("release-threshold", "release-samples") if k in data}


def vetoes(score: float, threshold: float) -> bool:
    """The node's rule: veto when the share of copies is above the owner's threshold."""
    return score > threshold


def check_threshold(value: object, *, name: str = "release-threshold") -> float:
    """The owner's threshold as a number from MIN_THRESHOLD to 1, or a ConfigError that says
    what it means."""
    try:
        threshold = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{name} must be a number: the share of release-check samples that may copy one "
            f"of your images before your node vetoes ({MIN_THRESHOLD:g} to 1), got {value!r}"
        ) from exc
    if not MIN_THRESHOLD <= threshold <= 1.0:  # also refuses nan
        raise ConfigError(
            f"{name} must be between {MIN_THRESHOLD:g} and 1 (the share of release-check "
            f"samples that may copy one of your images: {MIN_THRESHOLD:g} vetoes on any copy, "
            f"1 never vetoes), got {threshold:g}"
        )
    return threshold


def release_settings(node_config: Mapping[str, object]) -> ReleaseSettings:
    """``release-threshold`` (MIN_THRESHOLD to 1: the node vetoes when the share of samples that
    are copies is above it) and ``release-samples`` (1 to MAX_SAMPLES), from the node file when
    it has them, else the node config."""
    node_config = {**node_config, **_node_file_settings(node_config)}
    raw_threshold = node_config.get("release-threshold", "")
    raw_samples = node_config.get("release-samples", "")
    threshold = (
        check_threshold(raw_threshold) if raw_threshold not in ("", None) else DEFAULT_THRESHOLD
    )
    try:
        samples = int(raw_samples) if raw_samples not in ("", None) else DEFAULT_SAMPLES  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise ConfigError("the node config's release-samples must be a whole number") from exc
    if not 1 <= samples <= MAX_SAMPLES:
        raise ConfigError(f"release-samples must be 1 to {MAX_SAMPLES}, got {samples}")
    return ReleaseSettings(threshold=threshold, samples=samples)


@dataclass(frozen=True)
class ReleaseVerdict:
    """What the node decided. Only ``verdict`` and ``reason`` are sent to the server."""

    verdict: str  # "allow" or "veto"
    reason: str  # one of REASONS
    score: float  # the share of samples that are copies (what the threshold is on)
    copies: int
    best_margin: float  # the largest copy margin (COPY_MARGIN and above: a copy)
    matched: str  # the private image of the best margin ("" if none): stays local
    threshold: float
    samples: int
    seconds: float

    @property
    def vetoed(self) -> bool:
        return self.verdict == "veto"

    def reply(self) -> dict[str, str]:
        """The whole answer the node sends."""
        return {"verdict": self.verdict, "reason": self.reason}


def _pick_prompts(captions: Sequence[str], count: int, job_id: str) -> list[str]:
    """``count`` of the node's captions, chosen by a seed drawn from the job id (another job
    checks other images); every caption when there are no more than ``count``."""
    unique = list(dict.fromkeys(c.strip() for c in captions if c.strip()))
    if len(unique) <= count:
        return unique
    seed = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    return [unique[i] for i in sorted(rng.choice(len(unique), size=count, replace=False))]
