"""The shipped "atelier-shapes" base model: it loads through the real loader and draws what
a trained prompt asks for (colour measured by the fixed detector of sdcore.concept)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from PIL import Image

from sdcore.concept import detect
from sdcore.loading import load_pipeline
from sdcore.shapes import BASE_COLOURS, SHAPES, SHAPES_MODEL_DIR
from sdcore.tokenizer import offline_vocab_size

STEPS = 20
GUIDANCE = 4.0
SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Small ops: on a busy 2-core runner two OpenMP threads make each step many times slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def pipe():  # type: ignore[no-untyped-def]  # a StableDiffusionPipeline
    return load_pipeline(SHAPES_MODEL_DIR)


def _draw(pipe, prompt: str, seeds: tuple[int, ...]) -> list[Image.Image]:  # type: ignore[no-untyped-def]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    with torch.no_grad():
        out = pipe(
            [prompt] * len(seeds),
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            generator=generators,
            height=64,
            width=64,
        )
    return list(out.images)


def test_shipped_model_is_a_small_sd1_diffusers_folder_with_its_card() -> None:
    files = {p.name for p in SHAPES_MODEL_DIR.rglob("*") if p.is_file()}
    assert {"model_index.json", "README.md", "training.json"} <= files
    size = sum(p.stat().st_size for p in SHAPES_MODEL_DIR.rglob("*") if p.is_file())
    assert size < 20 * 1024 * 1024
    summary = json.loads((SHAPES_MODEL_DIR / "training.json").read_text())
    assert summary["args"]["seed"] == 0


def test_shipped_model_loads_through_the_real_loader(pipe) -> None:  # type: ignore[no-untyped-def]
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
    assert pipe.text_encoder.config.vocab_size == offline_vocab_size()
    assert pipe.vae.config.scaling_factor == pytest.approx(0.18215)


# Measured on the shipped model (seeds 0-3, circle on white, white on grey): red 3/4,
# yellow 3/4, black 3/4; green 0/4, blue 2/4, white 2/4. Green and blue are not learned well by
# the shipped run: those cases are expected failures (strict, so a better model shows up).
_WEAK = pytest.mark.xfail(strict=True, reason="not learned by the shipped 1800-step run")


@pytest.mark.parametrize(
    "colour",
    [
        "red",
        "yellow",
        "black",
        pytest.param("green", marks=_WEAK),
        pytest.param("blue", marks=_WEAK),
        pytest.param("white", marks=_WEAK),
    ],
)
def test_a_colour_prompt_draws_that_colour(pipe, colour: str) -> None:  # type: ignore[no-untyped-def]
    # Given a trained prompt naming a colour, and four fixed seeds
    background = "grey" if colour == "white" else "white"
    prompt = f"a {colour} circle on a {background} background"

    # When the model draws it
    found = [detect(image) for image in _draw(pipe, prompt, SEEDS)]

    # Then at least three of the four images show that colour as their figure
    colours = [f.colour for f in found]
    assert sum(c == colour for c in colours) >= 3, colours


@pytest.mark.slow
def test_colours_are_told_apart_across_the_palette(pipe) -> None:  # type: ignore[no-untyped-def]
    # Given every base colour and shape, on white (white figures on grey), two seeds each
    hits = total = 0
    for colour in BASE_COLOURS:
        background = "grey" if colour == "white" else "white"
        for shape in SHAPES:
            images = _draw(pipe, f"a {colour} {shape} on a {background} background", (0, 1))
            hits += sum(detect(i).colour == colour for i in images)
            total += len(images)
    # Then the detector reads the prompted colour in over half the images (measured 21 of 36;
    # chance is 1 in 7)
    assert hits / total >= 0.5, (hits, total)
