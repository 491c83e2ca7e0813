"""A fixed, deterministic concept score: which colour and shape an image shows.

No learned weights: every pixel is given the nearest colour of the palette of
:mod:`sdcore.shapes` (the shape colours and the grey background); the background is the
commonest label along the border; the figure is every other non-grey pixel, and its commonest
label is the image's colour. The shape comes from the largest connected region of that colour:
an apex-up triangle has much less area in the top half of its bounding box than in the bottom
half; a square fills its bounding box, a circle about pi/4 of it.

:func:`concept_score` is the fraction of images that show a given colour (and shape);
:func:`measure_concept` draws fixed prompts with fixed seeds from a pipeline and scores them
(the number the utility benchmark and the demo report).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from sdcore.shapes import BACKGROUNDS, COLOURS, CONCEPT_COLOUR, SHAPES, concept_prompts

__all__ = [
    "CONCEPT_GUIDANCE",
    "CONCEPT_SEEDS",
    "CONCEPT_STEPS",
    "ConceptMeasure",
    "Detection",
    "concept_score",
    "detect",
    "draw_images",
    "measure_concept",
]

# The fixed sampling of the concept score: every prompt with every seed, 20 Euler steps,
# guidance 4, at the pipeline's native resolution.
CONCEPT_SEEDS: tuple[int, ...] = (0, 1, 2, 3)
CONCEPT_STEPS = 20
CONCEPT_GUIDANCE = 4.0

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


def _labels(image: Image.Image, allowed: np.ndarray | None = None) -> np.ndarray:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    distances = ((pixels[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(axis=-1)
    if allowed is not None:
        distances[:, :, ~allowed] = np.inf
    return distances.argmin(axis=-1)


def detect(image: Image.Image, *, colours: Sequence[str] | None = None) -> Detection:
    """The colour, shape and background of the figure in ``image`` (deterministic).

    ``colours`` limits the figure colours the pixels are matched to (the backgrounds are always
    candidates): ``BASE_COLOURS`` asks "which of the trained colours is it?". The base model
    draws red as a red-orange, which the whole palette reads as orange (the concept colour).
    """
    allowed = None
    if colours is not None:
        unknown = sorted(set(colours) - set(COLOURS))
        if unknown:
            raise ValueError(f"unknown colours {unknown}; known: {list(COLOURS)}")
        allowed = np.asarray([n in colours or n in BACKGROUNDS for n in _NAMES])
    labels = _labels(image, allowed)
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


@dataclass(frozen=True)
class ConceptMeasure:
    """What :func:`measure_concept` found: ``score`` is the fraction showing the colour."""

    colour: str
    images: int
    colour_hits: int
    shape_hits: int  # images whose figure has the shape the prompt names
    both_hits: int
    colours_seen: dict[str, int]

    @property
    def score(self) -> float:
        return self.colour_hits / self.images

    @property
    def shape_accuracy(self) -> float:
        return self.shape_hits / self.images

    def to_dict(self) -> dict[str, object]:
        return {
            "colour": self.colour,
            "images": self.images,
            "score": round(self.score, 4),
            "shape_accuracy": round(self.shape_accuracy, 4),
            "colour_and_shape": round(self.both_hits / self.images, 4),
            "colours_seen": dict(self.colours_seen),
        }


def draw_images(
    pipe: Any,
    prompt: str,
    seeds: Sequence[int],
    *,
    steps: int = CONCEPT_STEPS,
    guidance: float = CONCEPT_GUIDANCE,
) -> list[Image.Image]:
    """``pipe`` draws ``prompt`` once per seed (each its own CPU generator), natively sized."""
    import torch

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    with torch.no_grad():
        out = pipe(
            [prompt] * len(seeds),
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators,
            height=size,
            width=size,
        )
    return list(out.images)


def measure_concept(
    pipe: Any,
    *,
    colour: str = CONCEPT_COLOUR,
    prompts: Sequence[str] | None = None,
    seeds: Sequence[int] = CONCEPT_SEEDS,
    steps: int = CONCEPT_STEPS,
    guidance: float = CONCEPT_GUIDANCE,
    on_image: Callable[[str, int, Image.Image, Detection], None] | None = None,
) -> ConceptMeasure:
    """Draw every prompt with every seed and count the images whose figure is ``colour``.

    Deterministic for a given pipeline (CPU generators, fixed prompts and seeds). The default
    prompts are :func:`sdcore.shapes.concept_prompts` (the trigger word with each shape and
    background); the shape a prompt names is checked too. ``on_image(prompt, seed, image,
    detection)`` sees every image as it is scored (prompts in order, seeds in order), e.g. to
    keep them for a grid.
    """
    prompts = list(prompts) if prompts is not None else concept_prompts()
    if not prompts or not seeds:
        raise ValueError("measure_concept needs at least one prompt and one seed")
    images = colour_hits = shape_hits = both = 0
    seen: dict[str, int] = {}
    for prompt in prompts:
        named = next((s for s in SHAPES if s in prompt.split()), None)
        drawn = draw_images(pipe, prompt, seeds, steps=steps, guidance=guidance)
        for seed, image in zip(seeds, drawn, strict=True):
            found = detect(image)
            if on_image is not None:
                on_image(prompt, int(seed), image, found)
            key = found.colour or "none"
            seen[key] = seen.get(key, 0) + 1
            images += 1
            colour_ok = found.colour == colour
            shape_ok = named is not None and found.shape == named
            colour_hits += colour_ok
            shape_hits += shape_ok
            both += colour_ok and shape_ok
    return ConceptMeasure(colour, images, colour_hits, shape_hits, both, seen)
