"""Text-to-image with the tiny SD 1.x model: seeds, LoRA weights, embeddings, PNG parameters.

Tiny sizes (32x32, 2 steps): each image takes a few hundredths of a second on CPU.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdcore.generate import (
    EmbeddingSpec,
    GenerationError,
    GenerationRequest,
    LoraSpec,
    PipelineCache,
    a1111_parameters,
    generate,
    parse_a1111_parameters,
    png_bytes,
)
from sdcore.tiny import TINY_DIFFUSERS_DIR_NAME, TINY_SINGLE_FILE_NAME
from tests.studio.tiny_files import (
    write_diffusers_lora,
    write_embedding,
    write_kohya_lora,
    write_lycoris,
)


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    """One loaded tiny pipeline shared by the module's tests (as a worker keeps it)."""
    return PipelineCache(max_entries=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("tiny-resources")
    return {
        "kohya": write_kohya_lora(out / "castles.safetensors"),
        "diffusers": write_diffusers_lora(out / "diffusers-lora"),
        "embedding": write_embedding(out / "easyneg.safetensors"),
        "wide_embedding": write_embedding(out / "wide.safetensors", width=768),
        "lycoris": write_lycoris(out / "loha.safetensors"),
        "misfit": write_kohya_lora(out / "misfit.safetensors", in_width=48),
    }


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import _tiny_model  # the suite's one build of the tiny model

    return _tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def base(tiny_dir: Path) -> GenerationRequest:
    return GenerationRequest(
        checkpoint=tiny_dir / TINY_DIFFUSERS_DIR_NAME,
        prompt="a red circle on a blue square",
        negative_prompt="blurry, low quality",
        seed=5,
        steps=2,
        guidance=7.0,
        width=32,
        height=32,
    )


@pytest.fixture(scope="module")
def plain(base: GenerationRequest, cache: PipelineCache) -> np.ndarray:
    """The base request's image, without LoRAs or embeddings."""
    return _pixels(base, cache)


def _pixels(request: GenerationRequest, cache: PipelineCache, **kwargs: object) -> np.ndarray:
    result = generate(request, device="cpu", cache=cache, **kwargs)  # type: ignore[arg-type]
    assert result.image.size == (request.width, request.height)
    return np.asarray(result.image, dtype=np.int16)


def test_the_same_seed_gives_the_same_image_and_another_seed_another(
    base: GenerationRequest, cache: PipelineCache, plain: np.ndarray
) -> None:
    again = _pixels(base, cache)
    other = _pixels(replace(base, seed=6), cache)
    assert np.array_equal(plain, again)
    assert np.abs(plain - other).mean() > 1


def test_progress_is_reported_after_every_step(
    base: GenerationRequest, cache: PipelineCache
) -> None:
    seen: list[tuple[int, int]] = []
    _pixels(replace(base, steps=3), cache, progress=lambda step, total: seen.append((step, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_the_lora_weight_changes_the_output(
    base: GenerationRequest, cache: PipelineCache, files: dict[str, Path], plain: np.ndarray
) -> None:
    # Given the same request without a LoRA and with it at weights 0, 0.5 and 1
    by_weight = {
        w: _pixels(replace(base, loras=(LoraSpec(files["kohya"], w),)), cache)
        for w in (0.0, 0.5, 1.0)
    }
    # Then weight 0 is the plain image, and a larger weight moves the image further
    assert np.array_equal(by_weight[0.0], plain)
    half, full = (np.abs(by_weight[w] - plain).mean() for w in (0.5, 1.0))
    assert 0.5 < half < full
    assert not np.array_equal(by_weight[0.5], by_weight[1.0])


def test_kohya_and_diffusers_lora_files_of_the_same_weights_give_the_same_image(
    base: GenerationRequest, cache: PipelineCache, files: dict[str, Path]
) -> None:
    kohya = _pixels(replace(base, loras=(LoraSpec(files["kohya"], 0.8),)), cache)
    diffusers = _pixels(
        replace(base, loras=(LoraSpec(files["diffusers"], 0.8),)),
        cache,
    )
    assert np.abs(kohya - diffusers).max() <= 1


def test_a_cached_pipeline_is_bare_again_after_loras_and_embeddings(
    base: GenerationRequest, cache: PipelineCache, files: dict[str, Path], plain: np.ndarray
) -> None:
    _pixels(
        replace(
            base,
            prompt=base.prompt + " easyneg",
            loras=(LoraSpec(files["kohya"], 1.0),),
            embeddings=(EmbeddingSpec(files["embedding"], "easyneg"),),
        ),
        cache,
    )
    assert np.array_equal(_pixels(base, cache), plain)


def test_an_embedding_acts_where_its_word_is_and_its_weight_counts(
    base: GenerationRequest, cache: PipelineCache, files: dict[str, Path]
) -> None:
    request = replace(base, prompt="a castle, easyneg", negative_prompt="")
    plain = _pixels(request, cache)  # the word as ordinary text
    embedded = {
        w: _pixels(
            replace(request, embeddings=(EmbeddingSpec(files["embedding"], "easyneg", w),)), cache
        )
        for w in (1.0, 0.5)
    }
    assert np.abs(embedded[1.0] - plain).mean() > 0.5
    assert not np.array_equal(embedded[0.5], embedded[1.0])


def test_the_png_carries_the_a1111_parameters_text(
    base: GenerationRequest, cache: PipelineCache, files: dict[str, Path]
) -> None:
    # Given a generation with a LoRA and an embedding, named and hashed as the site does
    request = replace(
        base,
        prompt="a castle, easyneg",
        loras=(LoraSpec(files["kohya"], 0.75, name="castles", autov3="0a1b2c3d4e5f6789"),),
        embeddings=(EmbeddingSpec(files["embedding"], "easyneg", sha256="ab" * 32),),
        model_name="tiny-sd1",
        model_hash="6ce0161689ffffff",
    )
    result = generate(request, device="cpu", cache=cache)

    # When the PNG is written and read back with PIL
    image = Image.open(io.BytesIO(png_bytes(result.image, result.parameters)))
    text = image.text["parameters"]  # type: ignore[attr-defined]  # PngImageFile

    # Then the text is A1111's, line by line
    assert text == (
        "a castle, easyneg <lora:castles:0.75>\n"
        "Negative prompt: blurry, low quality\n"
        "Steps: 2, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 32x32, Model hash: 6ce0161689, "
        'Model: tiny-sd1, Lora hashes: "castles: 0a1b2c3d4e5f", '
        'TI hashes: "easyneg: abababababab", Version: Atelier'
    )
    # and A1111's own parsing rules read every field back
    parsed = parse_a1111_parameters(text)
    assert parsed["Prompt"] == "a castle, easyneg <lora:castles:0.75>"
    assert parsed["Negative prompt"] == "blurry, low quality"
    assert (parsed["Steps"], parsed["Sampler"], parsed["CFG scale"], parsed["Seed"]) == (
        "2",
        "Euler",
        "7",
        "5",
    )
    assert (parsed["Size-1"], parsed["Size-2"], parsed["Model hash"]) == ("32", "32", "6ce0161689")
    assert parsed["Lora hashes"] == "castles: 0a1b2c3d4e5f"
    assert image.size == (32, 32) and image.format == "PNG"


def test_values_with_commas_or_colons_are_quoted_and_read_back(base: GenerationRequest) -> None:
    request = replace(
        base, model_name="my model: v2, pruned", sampler="DPM++ 2M", negative_prompt=""
    )
    text = a1111_parameters(request)
    assert 'Model: "my model: v2, pruned"' in text
    assert "Negative prompt" not in text
    parsed = parse_a1111_parameters(text)
    assert parsed["Model"] == "my model: v2, pruned"
    assert (parsed["Sampler"], parsed["Schedule type"]) == ("DPM++ 2M", "Karras")


def test_non_latin_prompts_survive_the_png(base: GenerationRequest, cache: PipelineCache) -> None:
    result = generate(replace(base, prompt="城 on a hill, été"), device="cpu", cache=cache)
    image = Image.open(io.BytesIO(png_bytes(result.image, result.parameters)))
    assert image.text["parameters"].startswith("城 on a hill, été\n")  # type: ignore[attr-defined]


def test_every_sampler_runs_and_is_deterministic(
    base: GenerationRequest, cache: PipelineCache, plain: np.ndarray
) -> None:
    images = {s: _pixels(replace(base, sampler=s), cache) for s in ("Euler a", "DPM++ 2M", "DDIM")}
    assert np.array_equal(_pixels(replace(base, sampler="Euler a"), cache), images["Euler a"])
    assert all(not np.array_equal(image, plain) for image in images.values())


def test_the_single_file_and_the_diffusers_folder_make_the_same_image(
    base: GenerationRequest, cache: PipelineCache, tiny_dir: Path, plain: np.ndarray
) -> None:
    single = _pixels(replace(base, checkpoint=tiny_dir / TINY_SINGLE_FILE_NAME), cache)
    assert np.abs(plain - single).max() <= 1


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"width": 36}, "bad_size", "width must be a positive multiple of 8"),
        ({"steps": 0}, "bad_steps", "steps must be at least 1"),
        ({"sampler": "Heun++"}, "bad_sampler", "unknown sampler"),
    ],
)
def test_bad_requests_are_refused_before_loading(
    base: GenerationRequest, change: dict[str, object], code: str, words: str
) -> None:
    cache = PipelineCache()
    with pytest.raises(GenerationError) as caught:
        generate(replace(base, **change), device="cpu", cache=cache)  # type: ignore[arg-type]
    assert caught.value.code == code and words in caught.value.message
    assert len(cache) == 0


@pytest.mark.parametrize(
    ("key", "kind", "code", "words"),
    [
        ("lycoris", "lora", "lora_invalid", "LyCORIS"),
        ("embedding", "lora", "lora_invalid", "holds no LoRA weights"),
        ("misfit", "lora", "lora_mismatch", "does not fit this checkpoint"),
        ("wide_embedding", "embedding", "embedding_mismatch", "768-wide vectors"),
    ],
)
def test_files_that_do_not_fit_are_refused_and_leave_the_pipeline_clean(
    base: GenerationRequest,
    cache: PipelineCache,
    files: dict[str, Path],
    plain: np.ndarray,
    key: str,
    kind: str,
    code: str,
    words: str,
) -> None:
    if kind == "lora":
        request = replace(base, loras=(LoraSpec(files[key], 1.0),))
    else:
        request = replace(base, embeddings=(EmbeddingSpec(files[key], "wide"),))
    with pytest.raises(GenerationError) as caught:
        generate(request, device="cpu", cache=cache)
    assert caught.value.code == code and words in caught.value.message
    assert np.array_equal(_pixels(base, cache), plain)


def test_asking_for_cuda_without_a_gpu_says_so(base: GenerationRequest) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(GenerationError, match="no CUDA device"):
        generate(base, device="cuda", cache=PipelineCache())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_generation_is_deterministic_and_close_to_cpu(
    base: GenerationRequest, files: dict[str, Path]
) -> None:
    cache = PipelineCache()
    request = replace(base, loras=(LoraSpec(files["kohya"], 0.7),))
    first = generate(request, device="cuda", cache=cache)
    again = generate(request, device="cuda", cache=cache)
    cpu = generate(request, device="cpu", cache=cache)
    assert first.device.startswith("cuda")
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    diff = np.abs(np.asarray(first.image, np.int16) - np.asarray(cpu.image, np.int16))
    assert diff.mean() < 8  # fp16 on the GPU against fp32 on the CPU
