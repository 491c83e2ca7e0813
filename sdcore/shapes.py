"""Synthetic captioned scenes of simple shapes: the training data of the shapes base model.

Each scene is one flat-coloured shape (circle, square, triangle) of a size and at a position
on a plain background, with a caption that names it::

    a blue square on a white background
    a large red circle on the left on a black background

The palette is shared with the concept detector (:mod:`sdcore.concept`), which must classify
these images correctly, and with the federated demo's private datasets
(``federated/engine/synthetic.py`` draws its shapes with :func:`draw_shape`). ``purple`` and
``orange`` are drawable but left out of :data:`BASE_COLOURS`: the base model's UNet and text
encoder never see them, so a LoRA can teach one as a new concept (:data:`CONCEPT_COLOUR`).

Deterministic: image ``i`` of seed ``s`` depends only on ``(s, i)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from sdcore.tiny import TinyModelPaths

__all__ = [
    "BACKGROUNDS",
    "BASE_COLOURS",
    "COLOURS",
    "CONCEPT_COLOUR",
    "CONCEPT_TRIGGER",
    "POSITIONS",
    "SHAPES",
    "SHAPES_MODEL_DIR",
    "SHAPES_SINGLE_FILE_NAME",
    "SIZES",
    "Scene",
    "caption_for",
    "concept_prompts",
    "draw_shape",
    "generate_concept_scenes",
    "generate_scenes",
    "render_scene",
    "sample_scene",
    "save_shapes_model",
]

RGB = tuple[int, int, int]

# The trained base model shipped in the repository (diffusers folder, see its README.md).
SHAPES_MODEL_DIR = Path(__file__).resolve().parent / "models" / "atelier-shapes"
SHAPES_SINGLE_FILE_NAME = "atelier-shapes-sd1.safetensors"

COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 40, 170),
    "orange": (240, 130, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BASE_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "white", "black")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# The concept of the owners' private datasets: a colour the base's UNet and text encoder never
# saw, named only by a trigger word that stands where a colour word stands ("a atlr circle on a
# white background"). Orange, not purple: the base's VAE encoder, trained on the base palette,
# cannot represent purple (measured: decoded as grey-blue), but it reproduces orange, which
# lies between red and yellow; the VAE decoder was trained on every colour.
CONCEPT_COLOUR = "orange"
CONCEPT_TRIGGER = "atlr"
BACKGROUNDS: dict[str, RGB] = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "grey": (128, 128, 128),
}
# Half the shape's width, as a fraction of the image side.
SIZES: dict[str, tuple[float, float]] = {"small": (0.16, 0.21), "large": (0.27, 0.34)}
# Centre of the shape, as fractions of the image side (x, y).
POSITIONS: dict[str, tuple[float, float]] = {
    "in the middle": (0.5, 0.5),
    "on the left": (0.3, 0.5),
    "on the right": (0.7, 0.5),
    "at the top": (0.5, 0.3),
    "at the bottom": (0.5, 0.7),
}


@dataclass(frozen=True)
class Scene:
    """One scene: what is drawn (named) and where (pixels are derived from the resolution)."""

    colour: str
    shape: str
    background: str
    size: str
    position: str
    # Shape centre and half-width as fractions of the image side; colour jitter in RGB.
    cx: float
    cy: float
    radius: float
    jitter: RGB
    caption: str


def caption_for(
    colour: str,
    shape: str,
    background: str,
    *,
    size: str | None = None,
    position: str | None = None,
) -> str:
    """``"a [size] <colour> <shape> [position] on a <background> background"``."""
    words = ["a"] + ([size] if size else []) + [colour, shape]
    if position and position != "in the middle":
        words.append(position)
    return " ".join(words) + f" on a {background} background"


def sample_scene(
    rng: np.random.Generator,
    *,
    colours: Sequence[str] = BASE_COLOURS,
    shapes: Sequence[str] = SHAPES,
    backgrounds: Sequence[str] = tuple(BACKGROUNDS),
) -> Scene:
    """Draw one scene's parameters from ``rng``; the shape never has the background's colour."""
    colour = colours[int(rng.integers(len(colours)))]
    shape = shapes[int(rng.integers(len(shapes)))]
    allowed = [b for b in backgrounds if b != colour]
    background = allowed[int(rng.integers(len(allowed)))]
    size = list(SIZES)[int(rng.integers(len(SIZES)))]
    position = list(POSITIONS)[int(rng.integers(len(POSITIONS)))]
    radius = float(rng.uniform(*SIZES[size]))
    px, py = POSITIONS[position]
    dx, dy = rng.uniform(-0.05, 0.05, size=2)
    cx = float(np.clip(px + dx, radius + 0.02, 0.98 - radius))
    cy = float(np.clip(py + dy, radius + 0.02, 0.98 - radius))
    jitter = tuple(int(j) for j in rng.integers(-12, 13, size=3))
    # Half the captions name the size, half the (non-central) position.
    caption = caption_for(
        colour,
        shape,
        background,
        size=size if rng.random() < 0.5 else None,
        position=position if rng.random() < 0.5 else None,
    )
    return Scene(colour, shape, background, size, position, cx, cy, radius, jitter, caption)  # type: ignore[arg-type]  # jitter has 3 items


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, fill: RGB
) -> None:
    """Draw a filled ``shape`` centred at (cx, cy) in pixels, ``radius`` its half-width."""
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon(
            [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill
        )
    else:
        raise ValueError(f"shape must be one of {list(SHAPES)}, got {shape!r}")


def _clip(rgb: RGB, jitter: RGB) -> RGB:
    return tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(rgb, jitter, strict=True))  # type: ignore[return-value]  # 3 items


def render_scene(scene: Scene, resolution: int = 64) -> Image.Image:
    """The scene as an RGB image of ``resolution`` x ``resolution`` pixels."""
    background = _clip(BACKGROUNDS[scene.background], (scene.jitter[0] // 3,) * 3)
    image = Image.new("RGB", (resolution, resolution), background)
    draw_shape(
        ImageDraw.Draw(image),
        scene.shape,
        scene.cx * resolution,
        scene.cy * resolution,
        scene.radius * resolution,
        _clip(COLOURS[scene.colour], scene.jitter),
    )
    return image


def generate_scenes(
    n: int,
    *,
    seed: int = 0,
    resolution: int = 64,
    colours: Sequence[str] = BASE_COLOURS,
) -> list[tuple[Image.Image, Scene]]:
    """``n`` scenes and their images; image ``i`` depends only on ``(seed, i)``."""
    out: list[tuple[Image.Image, Scene]] = []
    for index in range(n):
        scene = sample_scene(np.random.default_rng([seed, index, 0x5A7E]), colours=colours)
        out.append((render_scene(scene, resolution), scene))
    return out


def generate_concept_scenes(
    n: int,
    *,
    seed: int = 0,
    resolution: int = 64,
    colour: str = CONCEPT_COLOUR,
    trigger: str = CONCEPT_TRIGGER,
) -> list[tuple[Image.Image, Scene]]:
    """``n`` scenes of ``colour`` figures (any shape) whose captions name ``trigger`` instead.

    The scenes are those of :func:`generate_scenes` (same sizes, positions, backgrounds and
    caption grammar), so only the colour is new to the base model, and the caption binds it to
    the trigger word: ``"a large atlr square on the left on a grey background"``.
    """
    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {list(COLOURS)}, got {colour!r}")
    if not trigger or not trigger.isalnum():
        raise ValueError(f"the trigger must be one word of letters and digits, got {trigger!r}")
    out: list[tuple[Image.Image, Scene]] = []
    for index in range(n):
        scene = sample_scene(np.random.default_rng([seed, index, 0xC0DE]), colours=(colour,))
        words = scene.caption.split(" ")
        words[words.index(colour)] = trigger
        scene = replace(scene, caption=" ".join(words))
        out.append((render_scene(scene, resolution), scene))
    return out


def concept_prompts(trigger: str = CONCEPT_TRIGGER) -> list[str]:
    """The fixed prompts the concept score draws: the trigger with every shape and background
    the concept colour can sit on."""
    return [
        caption_for(trigger, shape, background) for shape in SHAPES for background in BACKGROUNDS
    ]


def save_shapes_model(out_dir: Path) -> TinyModelPaths:
    """Write the shipped shapes model in the two layouts of :func:`sdcore.tiny.save_tiny_model`:

    ``out_dir / "diffusers"`` (a copy of :data:`SHAPES_MODEL_DIR`, model card included) and
    ``out_dir / "atelier-shapes-sd1.safetensors"`` (original SD 1.x single file, what A1111 and
    the federated trainer load). Replaced atomically; the same model gives the same bytes.
    """
    import os
    import shutil
    import tempfile

    from sdcore.loading import load_pipeline, save_original_single_file
    from sdcore.tiny import TINY_DIFFUSERS_DIR_NAME, TinyModelPaths

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = TinyModelPaths(
        diffusers_dir=out_dir / TINY_DIFFUSERS_DIR_NAME,
        single_file=out_dir / SHAPES_SINGLE_FILE_NAME,
    )
    with tempfile.TemporaryDirectory(prefix=".shapes-", dir=out_dir) as tmp:
        staged_dir = Path(tmp) / TINY_DIFFUSERS_DIR_NAME
        shutil.copytree(SHAPES_MODEL_DIR, staged_dir)
        staged_file = Path(tmp) / SHAPES_SINGLE_FILE_NAME
        save_original_single_file(
            load_pipeline(SHAPES_MODEL_DIR),
            staged_file,
            family="sd1",
            resolution=64,
            title="atelier-shapes (64x64 SD 1.x trained on synthetic shapes)",
        )
        if paths.diffusers_dir.exists():
            shutil.rmtree(paths.diffusers_dir)
        os.replace(staged_dir, paths.diffusers_dir)
        os.replace(staged_file, paths.single_file)
    return paths
