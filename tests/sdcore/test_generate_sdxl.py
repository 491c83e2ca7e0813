"""Text-to-image with the tiny SDXL model: both layouts, kohya (SGM names, both text encoders)
and diffusers LoRAs, SDXL embeddings, the A1111 parameters, and refusal of SD 1.x files."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdcore.generate import (
    EmbeddingSpec,
    GenerationError,
    GenerationRequest,
    LoraSpec,
    PipelineCache,
    generate,
    parse_a1111_parameters,
    pipeline_family,
    png_bytes,
)
from sdcore.lora import kohya_module_to_diffusers, kohya_to_diffusers
from sdcore.tiny import TinyModelPaths
from tests.sdcore.sdxl_fixtures import tiny_sdxl_model_fixture  # noqa: F401  (pytest fixture)
from tests.studio.tiny_files import write_embedding, write_kohya_lora
from tests.studio.tiny_xl_files import (
    write_xl_diffusers_lora,
    write_xl_embedding,
    write_xl_kohya_lora,
)


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    return PipelineCache(max_entries=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("tiny-xl-resources")
    return {
        "kohya": write_xl_kohya_lora(out / "xl-castles.safetensors"),
        "kohya_te": write_xl_kohya_lora(out / "xl-castles-te.safetensors", text_encoders=True),
        "diffusers": write_xl_diffusers_lora(out / "xl-diffusers-lora"),
        "embedding": write_xl_embedding(out / "xlneg.safetensors"),
        "sd1_lora": write_kohya_lora(out / "sd1-castles.safetensors"),
        "sd1_embedding": write_embedding(out / "sd1neg.safetensors"),
    }


@pytest.fixture(scope="module")
def base(tiny_sdxl_model: TinyModelPaths) -> GenerationRequest:
    return GenerationRequest(
        checkpoint=tiny_sdxl_model.single_file,
        prompt="a red circle on a blue square",
        negative_prompt="blurry",
        seed=5,
        steps=2,
        guidance=5.0,
        width=64,
        height=64,
        model_name="tiny-sdxl",
        model_hash="0123456789abcdef",
    )


def _pixels(request: GenerationRequest, cache: PipelineCache) -> np.ndarray:
    return np.asarray(generate(request, device="cpu", cache=cache).image, dtype=np.int16)


@pytest.fixture(scope="module")
def plain(base: GenerationRequest, cache: PipelineCache) -> np.ndarray:
    return _pixels(base, cache)


def test_the_single_file_and_the_diffusers_folder_make_the_same_image(
    base: GenerationRequest,
    cache: PipelineCache,
    plain: np.ndarray,
    tiny_sdxl_model: TinyModelPaths,
) -> None:
    folder = replace(base, checkpoint=tiny_sdxl_model.diffusers_dir)
    np.testing.assert_array_equal(_pixels(folder, cache), plain)
    assert not np.array_equal(_pixels(replace(base, seed=6), cache), plain)
    pipe = cache.get(tiny_sdxl_model.single_file, *_cpu())
    assert pipeline_family(pipe) == "sdxl"


def _cpu():  # type: ignore[no-untyped-def]
    import torch

    return torch.device("cpu"), torch.float32


def test_kohya_sgm_and_diffusers_lora_files_give_the_same_changed_image(
    base: GenerationRequest, cache: PipelineCache, plain: np.ndarray, files: dict[str, Path]
) -> None:
    kohya = _pixels(replace(base, loras=(LoraSpec(files["kohya"], 1.0),)), cache)
    diffusers_file = files["diffusers"]
    diffusers = _pixels(replace(base, loras=(LoraSpec(diffusers_file, 1.0),)), cache)
    assert np.abs(kohya - plain).max() > 0  # the LoRA acts
    np.testing.assert_array_equal(kohya, diffusers)  # same weights, same image
    # and the cached pipeline is bare again afterwards
    np.testing.assert_array_equal(_pixels(base, cache), plain)


def test_a_kohya_lora_on_both_text_encoders_acts_through_them(
    base: GenerationRequest, cache: PipelineCache, files: dict[str, Path]
) -> None:
    unet_only = _pixels(replace(base, loras=(LoraSpec(files["kohya"], 1.0),)), cache)
    with_te = _pixels(replace(base, loras=(LoraSpec(files["kohya_te"], 1.0),)), cache)
    assert np.abs(with_te - unet_only).max() > 0
    # kohya's te2 names map to SDXL's second text encoder
    assert kohya_module_to_diffusers("lora_te2_text_model_encoder_layers_1_self_attn_q_proj") == (
        "text_encoder_2",
        "text_model.encoder.layers.1.self_attn.q_proj",
    )
    from safetensors.torch import load_file

    converted = kohya_to_diffusers(load_file(str(files["kohya_te"])))
    assert len(converted.text_encoder) == len(converted.text_encoder_2) == 16


def test_an_sdxl_embedding_acts_where_its_word_is(
    base: GenerationRequest, cache: PipelineCache, plain: np.ndarray, files: dict[str, Path]
) -> None:
    spec = EmbeddingSpec(files["embedding"], "xlneg", 1.0, "ab" * 32)
    unused = _pixels(replace(base, embeddings=(spec,)), cache)
    used = _pixels(replace(base, negative_prompt="xlneg", embeddings=(spec,)), cache)
    np.testing.assert_array_equal(unused, plain)  # the word is not in the prompts
    assert np.abs(used - plain).max() > 0
    np.testing.assert_array_equal(_pixels(base, cache), plain)  # unloaded from both encoders


def test_the_png_carries_the_a1111_parameters(
    base: GenerationRequest, cache: PipelineCache, files: dict[str, Path]
) -> None:
    request = replace(base, loras=(LoraSpec(files["kohya"], 0.7, "xl-castles", "c0ffee" * 4),))
    result = generate(request, device="cpu", cache=cache)
    text = Image.open(io.BytesIO(png_bytes(result.image, result.parameters))).info["parameters"]
    parsed = parse_a1111_parameters(text)
    assert parsed["Prompt"] == "a red circle on a blue square <lora:xl-castles:0.7>"
    assert (parsed["Size"], parsed["Seed"], parsed["Model"]) == ("64x64", "5", "tiny-sdxl")
    assert parsed["Model hash"] == "0123456789"
    assert parsed["Lora hashes"] == "xl-castles: c0ffeec0ffee"


def test_sd1_files_on_an_sdxl_checkpoint_are_refused_naming_both_families(
    base: GenerationRequest, cache: PipelineCache, plain: np.ndarray, files: dict[str, Path]
) -> None:
    with pytest.raises(GenerationError, match="is for SD 1.x but the checkpoint is SDXL") as lora:
        generate(replace(base, loras=(LoraSpec(files["sd1_lora"], 1.0),)), cache=cache)
    assert lora.value.code == "architecture_mismatch"
    spec = EmbeddingSpec(files["sd1_embedding"], "sd1neg")
    with pytest.raises(GenerationError, match="not an SDXL embedding") as emb:
        generate(replace(base, embeddings=(spec,)), cache=cache)
    assert emb.value.code == "embedding_mismatch"
    np.testing.assert_array_equal(_pixels(base, cache), plain)


def test_an_sdxl_lora_on_an_sd1_checkpoint_is_refused(
    tiny_model_dir: Path, files: dict[str, Path]
) -> None:
    from sdcore.tiny import TINY_SINGLE_FILE_NAME

    request = GenerationRequest(
        checkpoint=tiny_model_dir / TINY_SINGLE_FILE_NAME,
        prompt="x",
        steps=1,
        width=32,
        height=32,
        loras=(LoraSpec(files["kohya_te"], 1.0),),
    )
    with pytest.raises(GenerationError, match="is for SDXL but the checkpoint is SD 1.x"):
        generate(request, cache=PipelineCache(max_entries=0))
