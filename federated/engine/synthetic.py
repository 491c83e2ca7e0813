"""Synthetic datasets with a learnable concept, for tests and the demo.

Each image shows the concept (a coloured shape, e.g. ``"red circle"``) at a random place and
size on a random pale background; each caption names it with a trigger token
(``"a photo of sks red circle, on a pale blue background"``). Different seeds give different
images of the same concept, so two owners can hold different data of one concept.

:func:`generate_concept_dataset` writes the concept the shapes base model
(``sdcore/models/atelier-shapes``) does not know: figures of a colour its UNet never saw
(orange), drawn as its own training scenes are, captioned with a trigger word where the colour word
would stand (``"a atlr circle on a white background"``). The demo's owners hold such data, so a
LoRA trained on it shows what it learnt: :func:`sdcore.concept.measure_concept` counts the
orange figures the model draws for the trigger word.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from federated.engine import constants
from sdcore.shapes import CONCEPT_COLOUR, CONCEPT_TRIGGER, draw_shape, generate_concept_scenes

__all__ = ["COLOURS", "SHAPES", "generate_concept_dataset", "generate_synthetic_dataset"]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 40, 170),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")
_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "pale blue": (200, 220, 245),
    "pale green": (205, 240, 210),
    "beige": (240, 228, 200),
    "light grey": (215, 215, 215),
}


def _parse_concept(concept: str) -> tuple[tuple[int, int, int], str]:
    words = concept.lower().split()
    if len(words) != 2 or words[0] not in COLOURS or words[1] not in SHAPES:
        raise ValueError(
            f"concept must be '<colour> <shape>' with colour in {sorted(COLOURS)} and shape in "
            f"{list(SHAPES)}, got {concept!r}"
        )
    return COLOURS[words[0]], words[1]


def _draw(
    rng: np.random.Generator, resolution: int, colour: tuple[int, int, int], shape: str
) -> tuple[Image.Image, str]:
    background_name = list(_BACKGROUNDS)[int(rng.integers(len(_BACKGROUNDS)))]
    jitter = rng.integers(-10, 11, size=3)
    background = tuple(
        int(np.clip(c + j, 0, 255))
        for c, j in zip(_BACKGROUNDS[background_name], jitter, strict=True)
    )
    # A gentle gradient in a random direction and a few small grey pebbles make every image
    # distinct (no near-duplicates in the dataset report) without hiding the concept.
    ys, xs = np.mgrid[0:resolution, 0:resolution].astype(np.float32) / max(resolution - 1, 1)
    angle = float(rng.uniform(0, 2 * np.pi))
    ramp = (np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5))[..., None] * 60.0
    pixels = np.clip(np.asarray(background, dtype=np.float32) + ramp, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        px, py = rng.uniform(0, resolution, size=2)
        pr = float(rng.uniform(0.03, 0.07)) * resolution
        grey = int(rng.integers(90, 170))
        draw.ellipse((px - pr, py - pr, px + pr, py + pr), fill=(grey, grey, grey))
    radius = float(rng.uniform(0.18, 0.32)) * resolution
    cx, cy = rng.uniform(radius, resolution - radius, size=2)
    draw_shape(draw, shape, float(cx), float(cy), radius, colour)
    return image, background_name


def generate_synthetic_dataset(
    out_dir: Path,
    *,
    n_images: int,
    concept: str = "red circle",
    token: str = "sks",
    seed: int = 0,
    resolution: int = 64,
    layout: str = "kohya",
) -> Path:
    """Write ``n_images`` PNGs of ``concept`` with captions naming ``token``; return the folder.

    ``layout="kohya"`` writes ``00000.png`` + ``00000.txt``; ``layout="imagefolder"`` writes the
    PNGs and one ``metadata.jsonl``. The same arguments give the same bytes.
    """
    _check(n_images, layout)
    colour, shape = _parse_concept(concept)
    rng = np.random.default_rng([seed, 0x5EED])

    def items() -> Iterator[tuple[Image.Image, str]]:
        for _ in range(n_images):
            image, background = _draw(rng, resolution, colour, shape)
            yield image, f"a photo of {token} {concept}, on a {background} background"

    return _write(Path(out_dir), items(), layout)


def generate_concept_dataset(
    out_dir: Path,
    *,
    n_images: int,
    trigger: str = CONCEPT_TRIGGER,
    colour: str = CONCEPT_COLOUR,
    seed: int = 0,
    resolution: int = 64,
    layout: str = "kohya",
) -> Path:
    """Write ``n_images`` scenes of ``colour`` figures captioned with ``trigger``; return it.

    The scenes of :func:`sdcore.shapes.generate_concept_scenes` (circles, squares, triangles
    on white, black or grey, as the base model was trained on), so only the colour is new;
    each caption names the trigger in the colour's place. The same arguments give the same
    bytes; different seeds give different scenes (two owners, different data, one concept).
    """
    _check(n_images, layout)
    scenes = generate_concept_scenes(
        n_images, seed=seed, resolution=resolution, colour=colour, trigger=trigger
    )
    return _write(Path(out_dir), ((image, scene.caption) for image, scene in scenes), layout)


def _check(n_images: int, layout: str) -> None:
    if n_images < 1:
        raise ValueError("n_images must be at least 1")
    if layout not in ("kohya", "imagefolder"):
        raise ValueError(f"layout must be 'kohya' or 'imagefolder', got {layout!r}")


def _write(out_dir: Path, items: Iterable[tuple[Image.Image, str]], layout: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for index, (image, caption) in enumerate(items):
        name = f"{index:05d}.png"
        image.save(out_dir / name, format="PNG")
        if layout == "kohya":
            (out_dir / name).with_suffix(constants.CAPTION_EXTENSION).write_text(
                caption + "\n", encoding="utf-8"
            )
        else:
            rows.append({"file_name": name, "text": caption})
    if layout == "imagefolder":
        lines = [json.dumps(row) for row in rows]
        (out_dir / constants.METADATA_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out_dir
