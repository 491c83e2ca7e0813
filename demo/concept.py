"""The demo's proof of value: does the published LoRA draw the owners' concept?

``scripts/demo_job.py`` downloads the base model the job trains on and, once the job has
published, its LoRA (both through the API, as any buyer would), and scores each with the fixed
concept measure of :mod:`sdcore.concept`: the 9 trigger prompts ``a atlr <shape> on a
<background> background`` x seeds 0-3 = 36 images at the base's native 64x64, 20 Euler steps,
guidance 4; the score is the fraction whose figure the fixed detector reads as orange (the
colour the owners' private images show and the base never learnt). Before: the base alone.
After: the same base with the published LoRA file applied by diffusers (``load_lora_weights``,
what the studio does), same prompts and seeds.

Each scoring also writes a PNG grid (one row per prompt, one column per seed); with both, a
side-by-side grid (base on the left, base + LoRA on the right of each row).

No Django here: it runs in the demo's trainer process, a client of the site.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

CELL = 128  # each 64x64 image drawn at twice its size (nearest neighbour)
GAP = 4
SPLIT = 24  # between the base's seeds and the LoRA's in the side-by-side grid


@dataclass
class Scored:
    """One concept measurement: the score, the images (rows of prompts) and where the grid is."""

    label: str
    measure: Any  # sdcore.concept.ConceptMeasure
    prompts: list[str]
    rows: list[list[Image.Image]] = field(default_factory=list)
    seconds: float = 0.0
    grid: Path | None = None

    @property
    def hits(self) -> int:
        return int(self.measure.colour_hits)

    @property
    def images(self) -> int:
        return int(self.measure.images)

    @property
    def score(self) -> float:
        return float(self.measure.score)

    def line(self) -> str:
        seen = ", ".join(
            f"{colour} {count}"
            for colour, count in sorted(self.measure.colours_seen.items(), key=lambda kv: -kv[1])
        )
        return (
            f"concept score {self.label}: {self.score:.2f} ({self.hits} of {self.images} images "
            f"{self.measure.colour}; figures seen: {seen})"
        )


def _pipeline(base_file: Path, lora_file: Path | None) -> Any:
    # The demo's output is for people: no loading bars or library notices in it
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    import diffusers
    import torch

    from sdcore.loading import load_pipeline

    diffusers.utils.logging.disable_progress_bar()

    torch.set_num_threads(1)  # the demo's nodes share the machine's cores
    pipe = load_pipeline(base_file)
    pipe.set_progress_bar_config(disable=True)
    if lora_file is not None:
        pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name)
    return pipe


def score(label: str, base_file: Path, lora_file: Path | None = None) -> Scored:
    """The concept score of ``base_file`` (a published SD 1.x single file), with ``lora_file``
    (a published LoRA .safetensors) applied when given; deterministic."""
    from sdcore.concept import measure_concept
    from sdcore.shapes import concept_prompts

    started = time.perf_counter()
    prompts = concept_prompts()
    rows: dict[str, list[Image.Image]] = {p: [] for p in prompts}

    def keep(prompt: str, seed: int, image: Image.Image, found: object) -> None:
        rows[prompt].append(image)

    measure = measure_concept(_pipeline(base_file, lora_file), prompts=prompts, on_image=keep)
    return Scored(
        label=label,
        measure=measure,
        prompts=prompts,
        rows=[rows[p] for p in prompts],
        seconds=time.perf_counter() - started,
    )


def _paste_row(canvas: Image.Image, images: list[Image.Image], x: int, y: int) -> int:
    for image in images:
        canvas.paste(image.convert("RGB").resize((CELL, CELL), Image.Resampling.NEAREST), (x, y))
        x += CELL + GAP
    return x


def write_grid(scored: Scored, out: Path, *, beside: Scored | None = None) -> Path:
    """A PNG of ``scored``'s images (a row per prompt, a column per seed); with ``beside``,
    its images to the right of each row (same prompts and seeds)."""
    columns = max(len(r) for r in scored.rows)
    width = columns * (CELL + GAP) - GAP
    if beside is not None:
        if beside.prompts != scored.prompts:
            raise ValueError("side-by-side grids need the same prompts")
        width = 2 * width + SPLIT
    height = len(scored.rows) * (CELL + GAP) - GAP
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    for i, row in enumerate(scored.rows):
        y = i * (CELL + GAP)
        x = _paste_row(canvas, row, 0, y)
        if beside is not None:
            _paste_row(canvas, beside.rows[i], x - GAP + SPLIT, y)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, format="PNG")
    return out
