"""The shipped "atelier-shapes" base model: it loads through the real loader and draws what
a trained prompt asks for (colour and shape measured by the fixed detector of sdcore.concept),
and it does not know the owners' concept (orange, named by the trigger word)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from sdcore.concept import detect, draw_images, measure_concept
from sdcore.loading import load_pipeline
from sdcore.shapes import (
    BASE_COLOURS,
    CONCEPT_COLOUR,
    SHAPES,
    SHAPES_MODEL_DIR,
    save_shapes_model,
)
from sdcore.tokenizer import offline_vocab_size
from tests.sdcore.model_fixtures import shapes_model_dir_fixture, shapes_pipe_fixture  # noqa: F401

SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Small ops: on a busy 2-core runner two OpenMP threads make each step many times slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _background(colour: str) -> str:
    return "grey" if colour == "white" else "white"


def test_shipped_model_is_a_small_sd1_diffusers_folder_with_its_card() -> None:
    files = {p.name for p in SHAPES_MODEL_DIR.rglob("*") if p.is_file()}
    assert {"model_index.json", "README.md", "training.json"} <= files
    size = sum(p.stat().st_size for p in SHAPES_MODEL_DIR.rglob("*") if p.is_file())
    assert size < 20 * 1024 * 1024
    summary = json.loads((SHAPES_MODEL_DIR / "training.json").read_text())
    assert summary["seed"] == 0
    assert [stage["args"]["seed"] for stage in summary["stages"]] == [0, 0, 0]
    # Trained within the budget: 20 minutes of one CPU core (stage 1's wall clock, which bounds
    # its CPU time, plus the CPU time of the later stages).
    assert summary["one_core_seconds"] <= 20 * 60, summary["one_core_seconds"]


def test_shipped_model_loads_through_the_real_loader(shapes_pipe) -> None:  # type: ignore[no-untyped-def]
    assert type(shapes_pipe).__name__ == "StableDiffusionPipeline"
    assert shapes_pipe.unet.config.sample_size * shapes_pipe.vae_scale_factor == 64
    assert shapes_pipe.text_encoder.config.vocab_size == offline_vocab_size()
    assert shapes_pipe.vae.config.scaling_factor == pytest.approx(0.18215)


# Measured on the shipped model (circle prompts, seeds 0-3): green is drawn as another colour
# for every seed (its tokens, "g re e n", share "g re" with the background word "grey"; see the
# model card). Strict: a model that learns it shows up.
_GREEN = pytest.mark.xfail(strict=True, reason="green is not learned (model card, Limits)")


@pytest.mark.parametrize(
    "colour", [pytest.param(c, marks=_GREEN) if c == "green" else c for c in BASE_COLOURS]
)
def test_a_colour_prompt_draws_that_colour(shapes_pipe, colour: str) -> None:  # type: ignore[no-untyped-def]
    # Given a trained prompt naming a colour (white figures on grey), and four fixed seeds
    prompt = f"a {colour} circle on a {_background(colour)} background"

    # When the model draws it
    found = [
        detect(image, colours=BASE_COLOURS) for image in draw_images(shapes_pipe, prompt, SEEDS)
    ]

    # Then at least three of the four images show that colour as their figure, among the
    # trained colours (the model's red is a red-orange: median RGB about (225, 105, 35), which
    # the whole palette, orange included, reads as orange; see the model card)
    colours = [f.colour for f in found]
    assert sum(c == colour for c in colours) >= 3, colours


def test_the_seed_does_not_choose_the_colour(shapes_pipe) -> None:  # type: ignore[no-untyped-def]
    # Given one seed and two prompts that differ only in the colour word
    # (the first model drew red from seed 1 and yellow from seed 3 whatever the prompt said)
    found = []
    for seed in SEEDS:
        red, blue = (
            detect(draw_images(shapes_pipe, prompt, (seed,))[0], colours=BASE_COLOURS)
            for prompt in (
                "a red square on a white background",
                "a blue square on a white background",
            )
        )
        found.append((red.colour, blue.colour))
    # Then with (nearly) every seed each image shows its own colour
    assert found.count(("red", "blue")) >= 3, found


@pytest.mark.slow
def test_colours_and_shapes_are_told_apart_across_the_palette(shapes_pipe) -> None:  # type: ignore[no-untyped-def]
    # Given every base colour and shape, on white (white figures on grey), two seeds each
    colour_hits = circle_hits = circles = total = 0
    for colour in BASE_COLOURS:
        for shape in SHAPES:
            prompt = f"a {colour} {shape} on a {_background(colour)} background"
            for image in draw_images(shapes_pipe, prompt, (0, 1)):
                found = detect(image, colours=BASE_COLOURS)
                colour_hits += found.colour == colour
                total += 1
                if shape == "circle":
                    circle_hits += found.shape == "circle"
                    circles += 1
    # Then the detector reads the prompted colour in most images (measured 50 of 72 with seeds
    # 0-3; chance is 1 in 8) and the prompted shape for circles (squares and triangles are
    # mostly drawn round: model card, Limits)
    assert colour_hits / total >= 0.6, (colour_hits, total)
    assert circle_hits / circles >= 0.6, (circle_hits, circles)


def test_the_base_does_not_know_the_owners_concept(shapes_pipe) -> None:  # type: ignore[no-untyped-def]
    # Given the concept prompts (the trigger word where a colour word stands), two seeds
    measured = measure_concept(shapes_pipe, seeds=(0, 1))

    # Then the base draws no purple figure for them: the concept is new to it
    assert measured.images == 18
    assert measured.colour == CONCEPT_COLOUR
    assert measured.score <= 0.1, measured.to_dict()
    # And the measure is deterministic
    assert measure_concept(shapes_pipe, seeds=(0, 1)) == measured


def test_both_published_layouts_load_and_draw_the_same_picture(
    shapes_pipe,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    # Given the shapes model written as the demo publishes it: diffusers folder and single file
    paths = save_shapes_model(tmp_path)
    assert (paths.diffusers_dir / "README.md").is_file()

    # When the single file is loaded through the real loader (as the federated trainer does)
    single = load_pipeline(paths.single_file)
    single.set_progress_bar_config(disable=True)

    # Then it draws the same picture as the shipped folder, the prompted colour
    prompt = "a blue square on a white background"
    a = np.asarray(draw_images(shapes_pipe, prompt, (0,))[0], dtype=np.int16)
    b = np.asarray(draw_images(single, prompt, (0,))[0], dtype=np.int16)
    assert np.abs(a - b).max() <= 2
    # And saving again gives the same single-file bytes
    first = paths.single_file.read_bytes()
    assert save_shapes_model(tmp_path).single_file.read_bytes() == first
