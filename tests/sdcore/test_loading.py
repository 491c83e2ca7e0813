"""Loading SD 1.x from a diffusers folder or an original single file, offline."""

from __future__ import annotations

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
    infer_sd1_configs,
    load_pipeline,
    read_single_file_header,
    write_safetensors,
)
from sdcore.tiny import TinyModelPaths, build_tiny_pipeline, tiny_component_configs
from tests.sdcore.model_fixtures import tiny_model_fixture  # noqa: F401  (pytest fixture)


def _image(pipe: object) -> np.ndarray:
    result = pipe(  # type: ignore[operator]
        "a red circle",
        num_inference_steps=4,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return np.asarray(result.images[0])


@pytest.fixture(scope="module")
def reference_image() -> np.ndarray:
    return _image(build_tiny_pipeline(seed=0))


def test_loading_the_diffusers_folder_gives_the_built_models_image(
    tiny_model: TinyModelPaths, reference_image: np.ndarray
) -> None:
    # Given the saved diffusers folder / When loaded
    pipe = load_pipeline(tiny_model.diffusers_dir)
    # Then it generates exactly the in-memory model's image
    np.testing.assert_array_equal(_image(pipe), reference_image)


def test_loading_the_single_file_without_a_config_gives_the_same_image(
    tiny_model: TinyModelPaths, reference_image: np.ndarray
) -> None:
    # Given only the original single file (config inferred from shapes and metadata)
    pipe = load_pipeline(tiny_model.single_file)
    # Then it generates exactly the in-memory model's image at the default 64 px
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
    np.testing.assert_array_equal(_image(pipe), reference_image)


def test_config_inference_reproduces_the_tiny_architecture(
    tiny_model: TinyModelPaths,
) -> None:
    # Given the single file's header / When configs are inferred
    inferred = infer_sd1_configs(read_single_file_header(tiny_model.single_file))
    # Then every architectural field matches the builder's
    for component in ("unet", "vae", "text_encoder"):
        for key, value in tiny_component_configs()[component].items():
            got = inferred[component][key]
            assert (list(got) if isinstance(got, tuple | list) else got) == (
                list(value) if isinstance(value, tuple) else value
            ), (component, key)


def test_loading_in_bfloat16_casts_the_weights(tiny_model: TinyModelPaths) -> None:
    # When loaded with dtype bf16
    pipe = load_pipeline(tiny_model.diffusers_dir, dtype=torch.bfloat16)
    # Then the UNet weights are bf16
    assert pipe.unet.conv_in.weight.dtype == torch.bfloat16


def test_both_layouts_are_detected_as_sd1(tiny_model: TinyModelPaths) -> None:
    assert detect_family(tiny_model.diffusers_dir) is FAMILIES["sd1"]
    assert detect_family(tiny_model.single_file) is FAMILIES["sd1"]


def test_a_lora_file_is_refused_as_a_base_model(tmp_path: Path) -> None:
    # Given a safetensors file with only LoRA tensors
    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(4, 8)}, str(path))
    # When loaded as a base model / Then a typed error says why
    with pytest.raises(UnsupportedModelError, match="not a full Stable Diffusion checkpoint"):
        load_pipeline(path)


def test_a_missing_path_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file or folder"):
        load_pipeline(tmp_path / "nothing-here")


def test_a_garbage_file_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        load_pipeline(path)


def test_a_damaged_sdxl_single_file_is_refused_with_the_family_named(tmp_path: Path) -> None:
    # Given a file whose keys say SDXL but that lacks nearly every tensor
    path = tmp_path / "xl.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1),
            "conditioner.embedders.1.model.ln_final.weight": torch.zeros(1),
        },
        str(path),
    )
    # When loaded without config / Then refused with a message naming the family
    with pytest.raises(UnsupportedModelError, match="SDXL checkpoint is missing the tensor"):
        load_pipeline(path)


def test_write_safetensors_is_readable_and_keeps_metadata(tmp_path: Path) -> None:
    # Given tensors of several dtypes and metadata
    tensors = {"b": torch.arange(6, dtype=torch.float16).reshape(2, 3), "a": torch.ones(3)}
    path = write_safetensors(tmp_path / "x.safetensors", tensors, {"z": "1", "k": "v"})
    # When read back by safetensors
    with safe_open(str(path), framework="pt") as handle:
        loaded = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = handle.metadata()
    # Then content and metadata are intact
    assert metadata == {"z": "1", "k": "v"}
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
