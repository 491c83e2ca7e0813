"""The release check on a data owner's node: does the final LoRA reproduce my images?

Before a trained LoRA is published, the ServerApp sends the final adapter to every node that
trained in the job (a query message, ``action = "release-check"``). The node draws samples with
the base model and that adapter from prompts it takes from its *own* captions, compares every
sample with every one of its private images, and answers one word: ``allow`` or ``veto`` (with
a coarse reason code). Nothing else leaves the node: no score, no image, no caption, no index.

The similarity is fixed here, deterministic and needs no download: both images are converted to
RGB and resized to :data:`COMPARE_SIZE` pixels square (PIL's box filter, exact and the same on
every machine), then the structural similarity (SSIM, Wang et al. 2004, constants K1 = 0.01,
K2 = 0.03, a 7x7 uniform window as scikit-image's default) is averaged over the window positions
and the three colour channels and clipped to [0, 1]. 1 means "the same picture at thumbnail
size" (position, size, shape and colours of what is drawn); unrelated pictures score near 0.
A learned network feature (LPIPS, DINO) would judge "same subject" better, but it cannot be
downloaded here and a fixed, explainable number is what an owner sets a threshold on.

A node vetoes when the best score over (sample, private image) pairs reaches its owner's
threshold (``release-threshold`` in the node file ``node.json``, read at each check, or in the
node config; default :data:`DEFAULT_THRESHOLD`, never below
:data:`MIN_THRESHOLD`: below that a plain background in the same colour counts as a copy).
The node keeps what it found (best score, which of its images, the threshold) in
``<cache-dir>/jobs/<job>/release-check.json`` for its owner; that file never leaves the node.

Pure Python, no Flower, no Django. The node's side (drawing the samples with the job's base
model and adapter) is :mod:`federated.engine.flower.release_node`.
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
    "DEFAULT_SAMPLES",
    "DEFAULT_THRESHOLD",
    "MAX_SAMPLES",
    "MIN_THRESHOLD",
    "REASONS",
    "VERDICTS",
    "ReleaseVerdict",
    "best_match",
    "release_settings",
    "similarity",
    "thumbnail",
]

logger = logging.getLogger(__name__)

ACTION = "release-check"  # the query message's action
VERDICTS = ("allow", "veto")
# Coarse reason codes, the only other thing a node says: "ok" (nothing reproduced),
# "reproduced" (a sample reached the threshold), "no_captions" (nothing to prompt with).
REASONS = ("ok", "reproduced", "no_captions")

COMPARE_SIZE = 32
WINDOW = 7
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
DEFAULT_THRESHOLD = 0.85
MIN_THRESHOLD = 0.4
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


def best_match(samples: Sequence[np.ndarray], private: Sequence[np.ndarray]) -> tuple[float, int]:
    """(best score, index of the private image) over every (sample, private image) pair."""
    best, which = 0.0, -1
    for sample in samples:
        for index, image in enumerate(private):
            score = _similarity_arrays(sample, image)
            if score > best:
                best, which = score, index
    return best, which


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


def release_settings(node_config: Mapping[str, object]) -> ReleaseSettings:
    """``release-threshold`` (MIN_THRESHOLD to 1) and ``release-samples`` (1 to MAX_SAMPLES),
    from the node file when it has them, else the node config."""
    node_config = {**node_config, **_node_file_settings(node_config)}
    raw_threshold = node_config.get("release-threshold", "")
    raw_samples = node_config.get("release-samples", "")
    try:
        threshold = float(raw_threshold) if raw_threshold not in ("", None) else DEFAULT_THRESHOLD  # type: ignore[arg-type]
        samples = int(raw_samples) if raw_samples not in ("", None) else DEFAULT_SAMPLES  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            "the node config's release-threshold must be a number and release-samples a "
            "whole number"
        ) from exc
    if not MIN_THRESHOLD <= threshold <= 1.0:
        raise ConfigError(
            f"release-threshold must be between {MIN_THRESHOLD} and 1, got {threshold:g}"
        )
    if not 1 <= samples <= MAX_SAMPLES:
        raise ConfigError(f"release-samples must be 1 to {MAX_SAMPLES}, got {samples}")
    return ReleaseSettings(threshold=threshold, samples=samples)


@dataclass(frozen=True)
class ReleaseVerdict:
    """What the node decided. Only ``verdict`` and ``reason`` are sent to the server."""

    verdict: str  # "allow" or "veto"
    reason: str  # one of REASONS
    best_score: float
    matched: str  # the private image the best sample matched ("" if none): stays local
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
