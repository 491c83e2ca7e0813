"""The synthetic shapes generator and the concept detector that scores generated images."""

from __future__ import annotations

import numpy as np
from PIL import Image

from sdcore.concept import concept_score, detect
from sdcore.shapes import BACKGROUNDS, COLOURS, SHAPES, caption_for, generate_scenes


def test_same_seed_gives_the_same_scenes_and_another_seed_others() -> None:
    # Given two runs of the generator with one seed and one with another
    first = generate_scenes(8, seed=3)
    again = generate_scenes(8, seed=3)
    other = generate_scenes(8, seed=4)

    # Then the same seed gives the same pixels and captions, another seed different ones
    for (a, sa), (b, sb) in zip(first, again, strict=True):
        assert sa == sb
        assert a.tobytes() == b.tobytes()
    assert [s for _, s in first] != [s for _, s in other]


def test_scene_i_depends_only_on_the_seed_and_its_index() -> None:
    assert generate_scenes(5, seed=9)[4][0].tobytes() == generate_scenes(9, seed=9)[4][0].tobytes()


def test_captions_name_colour_shape_and_background() -> None:
    assert caption_for("blue", "square", "white") == "a blue square on a white background"
    assert (
        caption_for("red", "circle", "black", size="large", position="on the left")
        == "a large red circle on the left on a black background"
    )
    for _, scene in generate_scenes(50, seed=1):
        assert scene.colour in scene.caption and scene.shape in scene.caption
        assert scene.caption.endswith(f"on a {scene.background} background")
        assert scene.colour != scene.background


def test_detector_reads_the_generators_own_images() -> None:
    # Given 300 scenes over every colour (purple included), shape and background
    scenes = generate_scenes(300, seed=2026, colours=tuple(COLOURS))
    assert {s.colour for _, s in scenes} == set(COLOURS)
    assert {s.shape for _, s in scenes} == set(SHAPES)
    assert {s.background for _, s in scenes} == set(BACKGROUNDS)

    # When the detector looks at each image
    found = [(detect(image), scene) for image, scene in scenes]

    # Then it names the colour, the shape and the background of (almost) every one
    colour_ok = np.mean([d.colour == s.colour for d, s in found])
    shape_ok = np.mean([d.shape == s.shape for d, s in found])
    background_ok = np.mean([d.background == s.background for d, s in found])
    assert colour_ok > 0.95 and shape_ok > 0.95 and background_ok > 0.95, (
        colour_ok,
        shape_ok,
        background_ok,
    )


def test_an_empty_background_has_no_figure() -> None:
    found = detect(Image.new("RGB", (64, 64), BACKGROUNDS["white"]))
    assert found.colour is None and found.shape is None and found.background == "white"


def test_concept_score_counts_matching_images() -> None:
    scenes = generate_scenes(60, seed=5)
    images = [image for image, _ in scenes]
    expected = np.mean([s.colour == "red" for _, s in scenes])
    assert 0 < expected < 1
    assert concept_score(images, colour="red") == expected
    both = np.mean([s.colour == "red" and s.shape == "circle" for _, s in scenes])
    assert concept_score(images, colour="red", shape="circle") == both
