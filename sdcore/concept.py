"""A fixed, deterministic concept score: which colour and shape an image shows.

No learned weights: every pixel is given the nearest colour of the palette of
:mod:`sdcore.shapes` (the shape colours and the grey background); the background is the
commonest label along the border; the figure is every other non-grey pixel, and its commonest
label is the image's colour. The shape comes from the largest connected region of that colour:
an apex-up triangle has much less area in the top half of its bounding box than in the bottom
half; a square fills its bounding box, a circle about pi/4 of it.

:func:`concept_score` is the fraction of images that show a given colour (and shape).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from sdcore.shapes import BACKGROUNDS, COLOURS

__all__ = ["Detection", "concept_score", "detect"]

_NAMES: tuple[str, ...] = tuple(COLOURS) + tuple(b for b in BACKGROUNDS if b not in COLOURS)
_PALETTE = np.asarray(
    [COLOURS.get(name, BACKGROUNDS.get(name)) for name in _NAMES], dtype=np.float32
)
_NOT_A_FIGURE = {"grey"}
MIN_FIGURE_FRACTION = 0.01  # below this, nothing is drawn
TRIANGLE_MAX_TOP_BOTTOM = 0.6  # area in the top half / bottom half of the bounding box
SQUARE_MIN_FILL = 0.88  # area / bounding-box area


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` saw in one image (``colour``/``shape`` ``None``: no figure)."""

    colour: str | None
    shape: str | None
    background: str
    figure_fraction: float
    fill: float
    top_bottom: float


def _labels(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    distances = ((pixels[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(axis=-1)
    return distances.argmin(axis=-1)


def detect(image: Image.Image) -> Detection:
    """The colour, shape and background of the figure in ``image`` (deterministic)."""
    labels = _labels(image)
    border = np.concatenate(
        [labels[:2].ravel(), labels[-2:].ravel(), labels[:, :2].ravel(), labels[:, -2:].ravel()]
    )
    background = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    figure = labels != background
    for name in _NOT_A_FIGURE:
        figure &= labels != _NAMES.index(name)
    fraction = float(figure.mean())
    if fraction < MIN_FIGURE_FRACTION:
        return Detection(None, None, _NAMES[background], fraction, 0.0, 0.0)
    colour = int(np.bincount(labels[figure], minlength=len(_NAMES)).argmax())
    regions, count = ndimage.label(labels == colour)
    sizes = ndimage.sum_labels(np.ones_like(regions), regions, index=range(1, count + 1))
    mask = regions == (int(np.argmax(sizes)) + 1)
    rows, cols = np.nonzero(mask)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    box = mask[top : bottom + 1, left : right + 1]
    fill = float(box.mean())
    half = box.shape[0] // 2
    upper = float(box[:half].sum())
    lower = float(box[box.shape[0] - half :].sum())
    top_bottom = upper / max(lower, 1.0)
    if top_bottom < TRIANGLE_MAX_TOP_BOTTOM:
        shape = "triangle"
    elif fill >= SQUARE_MIN_FILL:
        shape = "square"
    else:
        shape = "circle"
    return Detection(_NAMES[colour], shape, _NAMES[background], fraction, fill, top_bottom)


def concept_score(
    images: Iterable[Image.Image], *, colour: str | None = None, shape: str | None = None
) -> float:
    """The fraction of ``images`` whose figure has ``colour`` and ``shape`` (each if given)."""
    hits = total = 0
    for image in images:
        found = detect(image)
        total += 1
        hits += (colour is None or found.colour == colour) and (
            shape is None or found.shape == shape
        )
    if total == 0:
        raise ValueError("concept_score needs at least one image")
    return hits / total
