"""The ServerApp's sample grid: fixed prompts and seeds, drawn with each round's adapter.

One row per prompt, one column per seed, each cell drawn by :func:`sdcore.generate.generate`
(the studio's code: the same request and seed give the same image) from the base model with
the round's aggregated LoRA file applied, at the base's native resolution. The grid is saved
as ``<out-dir>/samples/round-N/grid.png`` (the site publishes the last round's with the LoRA)
and sent, as PNG bytes, with the round's progress report.

Pure Python (no Flower, no Django); torch and diffusers are imported when a grid is drawn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sdcore.shapes import CONCEPT_TRIGGER, caption_for

if TYPE_CHECKING:
    from sdcore.generate import PipelineCache

__all__ = [
    "DEFAULT_PROMPTS",
    "SAMPLES_DIR",
    "SampleGrid",
    "SampleGridSpec",
    "render_sample_grid",
]

logger = logging.getLogger(__name__)

SAMPLES_DIR = "samples"
GRID_FILE = "grid.png"
# Two scenes of the shapes base (what the LoRA must not break) and two of the owners' concept,
# named by its trigger word (what the LoRA learns: the base draws no purple figure for it).
DEFAULT_PROMPTS: tuple[str, ...] = (
    caption_for("red", "circle", "white"),
    caption_for("blue", "triangle", "black"),
    caption_for(CONCEPT_TRIGGER, "circle", "white"),
    caption_for(CONCEPT_TRIGGER, "square", "grey"),
)
MAX_CELLS = 16


@dataclass(frozen=True)
class SampleGridSpec:
    """What each round's grid draws (run config ``sample-grid-*``); ``size`` 0: native."""

    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    seeds: tuple[int, ...] = (0,)
    steps: int = 20
    guidance: float = 4.0
    size: int = 0
    sampler: str = "Euler"

    def to_dict(self) -> dict[str, object]:
        """What ``metrics.json`` says about the samples (``prompt`` and ``seed``: the first)."""
        return {
            "prompt": " | ".join(self.prompts),
            "seed": self.seeds[0] if self.seeds else 0,
            "prompts": list(self.prompts),
            "seeds": list(self.seeds),
            "steps": self.steps,
            "guidance": self.guidance,
            "sampler": self.sampler,
        }


@dataclass(frozen=True)
class SampleGrid:
    png: bytes
    path: Path
    size: int
    seconds: float


def render_sample_grid(
    *,
    checkpoint: Path,
    lora: Path | None,
    spec: SampleGridSpec,
    native_size: int,
    out_path: Path,
    checkpoint_key: str = "",
    cache: PipelineCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SampleGrid:
    """Draw the grid of ``spec`` with ``lora`` (None: the base alone) and save it as PNG.

    ``cache``: an :class:`sdcore.generate.PipelineCache` kept across rounds (the base model
    is loaded once per run); ``native_size`` is used when ``spec.size`` is 0.
    """
    from PIL import Image

    from sdcore.generate import GenerationRequest, LoraSpec, PipelineCache, generate, png_bytes

    if not spec.prompts or not spec.seeds or len(spec.prompts) * len(spec.seeds) > MAX_CELLS:
        raise ValueError(f"a sample grid has 1 to {MAX_CELLS} cells (prompts x seeds)")
    started = time.perf_counter()
    size = spec.size or native_size
    pipes = cache if cache is not None else PipelineCache(max_entries=1)
    grid = Image.new("RGB", (size * len(spec.seeds), size * len(spec.prompts)), "white")
    loras = (LoraSpec(path=lora, name="round"),) if lora is not None else ()
    for row, prompt in enumerate(spec.prompts):
        for column, seed in enumerate(spec.seeds):
            result = generate(
                GenerationRequest(
                    checkpoint=checkpoint,
                    checkpoint_key=checkpoint_key,
                    prompt=prompt,
                    seed=seed,
                    steps=spec.steps,
                    guidance=spec.guidance,
                    width=size,
                    height=size,
                    sampler=spec.sampler,
                    loras=loras,
                ),
                device="cpu",
                cache=pipes,
            )
            grid.paste(result.image.convert("RGB"), (column * size, row * size))
            if progress is not None:
                progress(row * len(spec.seeds) + column + 1, len(spec.prompts) * len(spec.seeds))
    caption = "Atelier sample grid (rows: prompts, columns: seeds {})\n{}".format(
        ", ".join(str(s) for s in spec.seeds), "\n".join(spec.prompts)
    )
    png = png_bytes(grid, caption)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_bytes(png)
    tmp.replace(out_path)
    return SampleGrid(png=png, path=out_path, size=size, seconds=time.perf_counter() - started)
