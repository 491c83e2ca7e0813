"""The synthetic shapes generator and the concept detector that scores generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from federated.engine.synthetic import generate_concept_dataset
from sdcore.concept import concept_score, detect
from sdcore.shapes import (
    BACKGROUNDS,
    BASE_COLOURS,
    COLOURS,
    CONCEPT_COLOUR,
    CONCEPT_TRIGGER,
    SHAPES,
    caption_for,
    concept_prompts,
    generate_concept_scenes,
    generate_scenes,
)


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


def test_the_concept_is_a_colour_the_base_never_sees() -> None:
    assert CONCEPT_COLOUR in COLOURS and CONCEPT_COLOUR not in BASE_COLOURS
    base_captions = " ".join(s.caption for _, s in generate_scenes(300, seed=0))
    assert CONCEPT_COLOUR not in base_captions and CONCEPT_TRIGGER not in base_captions


def test_concept_scenes_name_the_trigger_where_the_colour_stands() -> None:
    # Given concept scenes of one seed
    scenes = generate_concept_scenes(60, seed=4)

    # Then every figure has the concept colour, every caption names the trigger (never the
    # colour) in the base's caption grammar, and the shapes and backgrounds vary
    assert {s.colour for _, s in scenes} == {CONCEPT_COLOUR}
    for _, scene in scenes:
        words = scene.caption.split()
        assert CONCEPT_TRIGGER in words and CONCEPT_COLOUR not in words
        assert words[words.index(CONCEPT_TRIGGER) + 1] == scene.shape
        assert scene.caption.endswith(f"on a {scene.background} background")
    assert {s.shape for _, s in scenes} == set(SHAPES)
    assert {s.background for _, s in scenes} == set(BACKGROUNDS)
    # And the detector reads them as the concept
    assert concept_score([image for image, _ in scenes], colour=CONCEPT_COLOUR) >= 0.95


def test_concept_scenes_are_seeded_and_refuse_bad_arguments() -> None:
    first = generate_concept_scenes(4, seed=1)
    assert [i.tobytes() for i, _ in first] == [
        i.tobytes() for i, _ in generate_concept_scenes(4, seed=1)
    ]
    assert [s for _, s in first] != [s for _, s in generate_concept_scenes(4, seed=2)]
    with pytest.raises(ValueError, match="colour"):
        generate_concept_scenes(1, colour="mauve")
    with pytest.raises(ValueError, match="trigger"):
        generate_concept_scenes(1, trigger="two words")


def test_concept_prompts_cover_every_shape_and_background() -> None:
    prompts = concept_prompts()
    assert len(prompts) == len(SHAPES) * len(BACKGROUNDS)
    assert prompts[0] == f"a {CONCEPT_TRIGGER} circle on a white background"
    assert concept_prompts("zq")[0] == "a zq circle on a white background"


def test_the_private_dataset_generator_writes_concept_images_and_trigger_captions(
    tmp_path: Path,
) -> None:
    # Given an owner's private dataset of the concept, and the same again
    folder = generate_concept_dataset(tmp_path / "a", n_images=12, seed=11)
    again = generate_concept_dataset(tmp_path / "b", n_images=12, seed=11)
    other = generate_concept_dataset(tmp_path / "c", n_images=12, seed=12)

    # Then it holds 12 PNGs with kohya captions naming the trigger, the same bytes for the same
    # seed and other images for another owner's seed
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 12
    for png in pngs:
        caption = png.with_suffix(".txt").read_text(encoding="utf-8").strip()
        assert caption.split()[:2] in (["a", CONCEPT_TRIGGER], ["a", "small"], ["a", "large"])
        assert CONCEPT_TRIGGER in caption.split() and CONCEPT_COLOUR not in caption
        assert (again / png.name).read_bytes() == png.read_bytes()
    assert any((other / p.name).read_bytes() != p.read_bytes() for p in pngs)
    images = [Image.open(p) for p in pngs]
    assert concept_score(images, colour=CONCEPT_COLOUR) >= 0.9
    # And the imagefolder layout writes one metadata file
    meta = generate_concept_dataset(tmp_path / "m", n_images=3, layout="imagefolder")
    assert len((meta / "metadata.jsonl").read_text().splitlines()) == 3


def test_the_detector_can_be_limited_to_some_colours() -> None:
    # Given a red-orange figure (how the shapes model draws red) on white
    image = Image.new("RGB", (64, 64), BACKGROUNDS["white"])
    image.paste((225, 105, 35), (16, 16, 48, 48))

    # Then the whole palette reads orange, the trained colours red; a bad name is refused
    assert detect(image).colour == "orange"
    assert detect(image, colours=BASE_COLOURS).colour == "red"
    assert detect(image, colours=BASE_COLOURS).shape == "square"
    with pytest.raises(ValueError, match="unknown colours"):
        detect(image, colours=["mauve"])


class _ScenePipe:
    """A stand-in pipeline (no model) that draws each seed's generated scene: an orange figure
    for even seeds, a blue one for odd seeds (what measure_concept needs of a pipeline)."""

    vae_scale_factor = 8

    def __init__(self) -> None:
        import types

        self.unet = types.SimpleNamespace(config=types.SimpleNamespace(sample_size=8))
        self.orange = [image for image, _ in generate_concept_scenes(4, seed=3)]
        self.blue = [image for image, s in generate_scenes(200, seed=3) if s.colour == "blue"]

    def __call__(self, prompts: list[str], *, generator: list[object], **kw: object) -> object:
        import types

        seeds = [g.initial_seed() for g in generator]  # type: ignore[attr-defined]
        images = [self.orange[s % 4] if s % 2 == 0 else self.blue[s] for s in seeds]
        return types.SimpleNamespace(images=images)


def test_measure_concept_shows_each_scored_image_in_order() -> None:
    from sdcore.concept import measure_concept

    # Given a pipeline whose even seeds draw the concept colour and odd seeds blue
    seen: list[tuple[str, int, str | None]] = []

    # When the concept is measured over two prompts and four seeds, keeping every image
    measured = measure_concept(
        _ScenePipe(),  # type: ignore[arg-type]
        prompts=["a atlr circle on a white background", "a atlr square on a grey background"],
        seeds=(0, 1, 2, 3),
        on_image=lambda prompt, seed, image, found: seen.append(
            (prompt.split()[2], seed, found.colour)
        ),
    )

    # Then the callback saw each prompt's seeds in order, with the detector's reading, and the
    # score counts the concept-coloured half
    assert [(shape, seed) for shape, seed, _ in seen] == [
        (shape, seed) for shape in ("circle", "square") for seed in (0, 1, 2, 3)
    ]
    assert [colour for *_, colour in seen] == [CONCEPT_COLOUR, "blue"] * 4
    assert (measured.images, measured.colour_hits, measured.score) == (8, 4, 0.5)
