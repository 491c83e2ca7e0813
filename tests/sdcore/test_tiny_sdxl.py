"""The tiny SDXL model: deterministic, SGM single-file layout, loadable from both layouts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sdcore.loading import (
    FAMILIES,
    ModelLoadError,
    UnsupportedModelError,
    detect_family,
    infer_sdxl_configs,
    load_pipeline,
    read_single_file_header,
)
from sdcore.tiny import TinyModelPaths
from sdcore.tiny_xl import (
    TINY_SDXL_RESOLUTION,
    build_tiny_sdxl_pipeline,
    save_tiny_sdxl_model,
    tiny_sdxl_component_configs,
)
from tests.sdcore.sdxl_fixtures import tiny_sdxl_model_fixture  # noqa: F401  (pytest fixture)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _image(pipe: object, seed: int = 0) -> np.ndarray:
    result = pipe(  # type: ignore[operator]
        "a red circle",
        num_inference_steps=3,
        height=TINY_SDXL_RESOLUTION,
        width=TINY_SDXL_RESOLUTION,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return np.asarray(result.images[0])


@pytest.fixture(scope="module")
def reference_image() -> np.ndarray:
    return _image(build_tiny_sdxl_pipeline(seed=0))


def test_saving_the_same_seed_twice_writes_identical_bytes(
    tiny_sdxl_model: TinyModelPaths, tmp_path: Path
) -> None:
    # Given the tiny SDXL model already saved with seed 0 / When saved again elsewhere
    again = save_tiny_sdxl_model(tmp_path, seed=0)
    # Then every file of both layouts has the same SHA-256
    assert _tree_hashes(again.single_file.parent) == _tree_hashes(
        tiny_sdxl_model.single_file.parent
    )
    assert again.single_file.name == "tiny-sdxl.safetensors"


def test_different_seeds_give_different_weights() -> None:
    a = build_tiny_sdxl_pipeline(seed=0).text_encoder_2.text_projection.weight
    b = build_tiny_sdxl_pipeline(seed=1).text_encoder_2.text_projection.weight
    assert not torch.equal(a, b)


def test_the_unet_takes_pooled_embeddings_and_time_ids() -> None:
    config = build_tiny_sdxl_pipeline(seed=0).unet.config
    assert config.addition_embed_type == "text_time"
    # pooled width (text_encoder_2 projection) + six time ids x their embedding width
    pooled = tiny_sdxl_component_configs()["text_encoder_2"]["projection_dim"]
    assert (
        config.projection_class_embeddings_input_dim == pooled + 6 * config.addition_time_embed_dim
    )  # type: ignore[operator]
    assert list(config.transformer_layers_per_block) == [1, 2]


def test_the_single_file_has_the_sgm_layout_and_modelspec(tiny_sdxl_model: TinyModelPaths) -> None:
    with safe_open(str(tiny_sdxl_model.single_file), framework="pt") as handle:
        keys = set(handle.keys())
        metadata = handle.metadata()
        in_proj = handle.get_slice(
            "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
        ).get_shape()
    prefixes = {
        "model.diffusion_model.",
        "conditioner.embedders.0.transformer.text_model.",
        "conditioner.embedders.1.model.",
        "first_stage_model.",
    }
    assert {next(p for p in prefixes if k.startswith(p)) for k in keys} == prefixes
    assert "model.diffusion_model.label_emb.0.0.weight" in keys
    assert "conditioner.embedders.1.model.text_projection" in keys
    assert "conditioner.embedders.1.model.positional_embedding" in keys
    assert in_proj == [3 * 64, 64]  # q, k, v stacked, OpenCLIP style
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    assert metadata["modelspec.resolution"] == "64x64"


def test_config_inference_reproduces_the_tiny_architecture(
    tiny_sdxl_model: TinyModelPaths,
) -> None:
    inferred = infer_sdxl_configs(read_single_file_header(tiny_sdxl_model.single_file))
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        for key, value in tiny_sdxl_component_configs()[component].items():
            got = inferred[component][key]
            expected = list(value) if isinstance(value, tuple) else value
            assert (list(got) if isinstance(got, tuple) else got) == expected, (component, key)


def test_both_layouts_are_detected_as_sdxl(tiny_sdxl_model: TinyModelPaths) -> None:
    assert detect_family(tiny_sdxl_model.diffusers_dir) is FAMILIES["sdxl"]
    assert detect_family(tiny_sdxl_model.single_file) is FAMILIES["sdxl"]


def test_the_diffusers_folder_gives_the_built_models_image(
    tiny_sdxl_model: TinyModelPaths, reference_image: np.ndarray
) -> None:
    pipe = load_pipeline(tiny_sdxl_model.diffusers_dir)
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    np.testing.assert_array_equal(_image(pipe), reference_image)


def test_the_single_file_without_a_config_gives_the_same_image(
    tiny_sdxl_model: TinyModelPaths, reference_image: np.ndarray
) -> None:
    # Given only the SGM single file (config inferred from shapes and metadata)
    pipe = load_pipeline(tiny_sdxl_model.single_file)
    # Then it is an SDXL pipeline at 64 px giving exactly the in-memory model's image
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == TINY_SDXL_RESOLUTION
    np.testing.assert_array_equal(_image(pipe), reference_image)
    # and a different seed gives a different image (the comparison can fail)
    assert not np.array_equal(_image(pipe, seed=1), reference_image)


def test_a_truncated_single_file_is_a_clear_load_error(
    tiny_sdxl_model: TinyModelPaths, tmp_path: Path
) -> None:
    data = tiny_sdxl_model.single_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cut.safetensors: not a readable safetensors file"):
        load_pipeline(cut)


def test_an_sdxl_file_missing_its_second_text_encoder_is_refused(
    tiny_sdxl_model: TinyModelPaths, tmp_path: Path
) -> None:
    # Given the tiny SDXL file with the OpenCLIP encoder's projection removed
    with safe_open(str(tiny_sdxl_model.single_file), framework="pt") as handle:
        tensors = {
            k: handle.get_tensor(k)
            for k in handle.keys()
            if k != "conditioner.embedders.1.model.text_projection"
        }
    damaged = tmp_path / "damaged.safetensors"
    save_file(tensors, str(damaged))
    # When loaded / Then the error names the family and the missing tensor
    with pytest.raises(UnsupportedModelError, match="SDXL checkpoint is missing the tensor"):
        load_pipeline(damaged)
