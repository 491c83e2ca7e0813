"""The fixed concept detector (sdcore.concept) reads the private datasets' concept images."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from federated.engine.synthetic import COLOURS, SHAPES, generate_synthetic_dataset
from sdcore.concept import concept_score, detect


def test_detector_names_the_concept_of_every_synthetic_dataset_image(tmp_path: Path) -> None:
    # Given six images of each concept the demo's private datasets can hold
    # (pale gradient backgrounds, grey pebbles, random place and size)
    misses = []
    for colour in COLOURS:
        for shape in SHAPES:
            folder = generate_synthetic_dataset(
                tmp_path / f"{colour}-{shape}", n_images=6, concept=f"{colour} {shape}", seed=1
            )
            # When the detector looks at each image
            for png in sorted(folder.glob("*.png")):
                found = detect(Image.open(png))
                if (found.colour, found.shape) != (colour, shape):
                    misses.append((png.parent.name, png.name, found))
    # Then it names the concept's colour and shape in (almost) all of them
    assert len(misses) <= 0.05 * len(COLOURS) * len(SHAPES) * 6, misses


def test_concept_score_of_a_concept_dataset_is_high_and_of_another_is_zero(tmp_path: Path) -> None:
    folder = generate_synthetic_dataset(tmp_path / "d", n_images=10, concept="purple triangle")
    images = [Image.open(p) for p in sorted(folder.glob("*.png"))]
    assert concept_score(images, colour="purple", shape="triangle") >= 0.9
    assert concept_score(images, colour="red") == 0.0
