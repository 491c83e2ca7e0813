"""Sample images rendered when a version is published, by the studio's generation path, and
the checkpoint's native settings the renderer and the form use. In this process; the worker's
run is in ``test_samples_worker.py``."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from PIL import Image

from registry.models import LineageRelation, SampleImage, SampleRole, SampleSource
from registry.services.catalog import ParentSpec, version_publish
from registry.services.samples import version_samples_render
from sdcore.shapes import SHAPES_MODEL_DIR
from sdcore.tiny import TINY_RESOLUTION
from studio.services.defaults import native_settings
from studio.services.samples import lora_base

pytestmark = pytest.mark.django_db


def _pixels(sample: SampleImage) -> Image.Image:
    with sample.image.open("rb") as handle:
        image = Image.open(io.BytesIO(handle.read()))
        image.load()
    return image


def test_the_tiny_checkpoint_is_native_at_64_pixels_from_its_modelspec(studio: Any) -> None:
    native = native_settings(studio.base)
    assert (native.width, native.height, native.steps) == (TINY_RESOLUTION, TINY_RESOLUTION, 20)
    assert native.source == "modelspec"


def test_a_published_checkpoint_gets_fixed_prompt_samples_at_its_native_size(
    studio: Any, settings: Any
) -> None:
    settings.ATELIER_SAMPLE_PROMPTS = ["a red circle on a white background", "a blue square"]
    # When the worker's task body runs for the published tiny checkpoint
    made = version_samples_render(version_id=studio.base.pk)

    # Then there is one image per fixed prompt, at 64x64, in order, marked as rendered
    assert [s.prompt for s in made] == ["a red circle on a white background", "a blue square"]
    assert [s.position for s in made] == [0, 1]
    assert {s.source for s in made} == {SampleSource.RENDERED}
    assert {_pixels(s).size for s in made} == {(64, 64)}
    assert made[0].parameters["seed"] == 1
    assert made[0].parameters["steps"] == 2  # the native 20, capped by ATELIER_SAMPLE_MAX_STEPS
    # and running it again (a redelivered task) adds nothing
    assert version_samples_render(version_id=studio.base.pk) == []
    assert SampleImage.objects.filter(version=studio.base).count() == 2


def test_a_published_lora_gets_base_and_adapted_pairs_with_the_same_seed(
    studio: Any, settings: Any
) -> None:
    settings.ATELIER_SAMPLE_PROMPTS = ["a red circle", "a blue square", "a yellow triangle"]
    made = version_samples_render(version_id=studio.lora.pk)

    # Then two pairs: base alone, then base + LoRA, same prompt and seed, linked
    assert [s.role for s in made] == [
        SampleRole.BASE,
        SampleRole.ADAPTED,
        SampleRole.BASE,
        SampleRole.ADAPTED,
    ]
    base, adapted = made[0], made[1]
    assert adapted.pair_id == base.pk and adapted.prompt == base.prompt == "a red circle"
    assert adapted.parameters["seed"] == base.parameters["seed"]
    assert adapted.parameters["base_version_id"] == studio.base.pk
    # and the LoRA changed the picture (same seed, different pixels)
    assert _pixels(base).tobytes() != _pixels(adapted).tobytes()


def test_a_lora_trained_on_a_base_is_shown_on_that_base(
    studio: Any, publish_file: Any, tiny_checkpoint: Path, resource_files: dict[str, Path]
) -> None:
    other = publish_file(studio.creator, tiny_checkpoint, kind="checkpoint", name="Other base")
    from registry.services.catalog import lineage_add

    lineage_add(
        version=studio.lora,
        user=studio.creator,
        parent=ParentSpec(LineageRelation.ADAPTER, version=other),
    )
    assert lora_base(studio.lora).pk == other.pk


def test_a_lora_with_no_usable_base_stays_published_with_no_samples_and_a_logged_reason(
    make_user: Any, publish_file: Any, resource_files: dict[str, Path], caplog: Any
) -> None:
    owner = make_user("loner")
    lora = publish_file(owner, resource_files["lora"], kind="lora", name="Orphan")
    with caplog.at_level(logging.WARNING, logger="registry.services.samples"):
        assert version_samples_render(version_id=lora.pk) == []
    lora.refresh_from_db()
    assert lora.is_published
    assert "no SD 1.x checkpoint" in caplog.text and "[no_base]" in caplog.text


def test_a_checkpoint_file_that_does_not_load_leaves_no_samples_and_a_logged_reason(
    make_user: Any, publish_file: Any, resource_files: dict[str, Path], caplog: Any
) -> None:
    # Given a "checkpoint" that is really a LoRA file (it cannot load as a pipeline)
    owner = make_user("mislabel")
    broken = publish_file(owner, resource_files["lora"], kind="checkpoint", name="Broken")
    with caplog.at_level(logging.WARNING, logger="registry.services.samples"):
        assert version_samples_render(version_id=broken.pk) == []
    broken.refresh_from_db()
    assert broken.is_published
    assert f"samples of version {broken.pk}" in caplog.text and "not rendered" in caplog.text


def test_publishing_queues_the_rendering_after_commit(
    make_user: Any,
    publish_file: Any,
    tiny_checkpoint: Path,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, list[Any]]] = []
    monkeypatch.setattr(
        "core.tasks._send", lambda name, args, kwargs, queue: sent.append((name, list(args)))
    )
    owner = make_user("publisher")
    draft = publish_file(owner, tiny_checkpoint, kind="checkpoint", publish=False)
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            version_publish(version=draft, user=owner)
        assert sent == []  # nothing before the commit
    assert sent == [("registry.tasks.version_samples_render", [draft.pk])]


def test_the_shipped_shapes_base_is_native_at_64_pixels_from_its_configs(
    make_user: Any,
) -> None:
    """A diffusers folder: UNet sample_size x VAE scale factor, read from its configs."""
    from registry.models import FileLayout
    from registry.services.catalog import FileSpec, model_create, version_create
    from registry.services.uploads import upload_whole_file

    owner = make_user("shapes")
    specs = []
    for path in sorted(p for p in SHAPES_MODEL_DIR.rglob("*") if p.is_file()):
        relative = path.relative_to(SHAPES_MODEL_DIR).as_posix()
        if not (relative.endswith(".json") or relative.endswith(".txt")):
            continue  # the weights are not needed to read the size
        data = path.read_bytes()
        upload = upload_whole_file(
            user=owner, filename=path.name, stream=io.BytesIO(data), size=len(data)
        )
        specs.append(FileSpec(upload, relative, relative == "model_index.json"))
    model = model_create(owner=owner, name="Shapes", kind="checkpoint")
    version = version_create(
        model=model,
        user=owner,
        name="v1",
        files=specs,
        base_model="sd1",
        layout=FileLayout.DIFFUSERS,
    )
    native = native_settings(version)
    assert (native.width, native.height, native.source) == (64, 64, "unet config")


def test_a_lora_with_a_trigger_word_is_shown_where_its_captions_put_the_trigger(
    settings: Any,
) -> None:
    from studio.services.samples import lora_sample_prompts

    # A LoRA trained on "a atlr circle ..." captions is drawn on the same kind of prompt, not on
    # "atlr, a red circle" where the colour word competes with what it learned
    assert lora_sample_prompts(["atlr"]) == (
        "a atlr circle on a white background",
        "a atlr square on a grey background",
    )
    # other trigger words follow; blank and non-string words are ignored
    assert lora_sample_prompts([" atlr ", "", 7, "glow"])[0] == (
        "a atlr circle on a white background, glow"
    )
    # the templates are a setting; without trigger words the fixed prompts are used
    settings.ATELIER_LORA_SAMPLE_PROMPTS = ["{trigger} portrait"]
    assert lora_sample_prompts(["sks"]) == ("sks portrait",)
    settings.ATELIER_SAMPLE_PROMPTS = ["a red circle", "a blue square", "a yellow triangle"]
    assert lora_sample_prompts([]) == ("a red circle", "a blue square")
