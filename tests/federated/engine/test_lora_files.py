"""Saved LoRA files: both formats reload in diffusers to the in-memory model's images."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from federated.engine.adapter import AdapterSpec, attach_adapter, get_adapter_arrays
from federated.engine.dp import DPConfig
from federated.engine.evaluate import pipeline_with_adapter
from federated.engine.export import LoraFiles, LoraProvenance, save_lora_files
from federated.engine.trainer import LoadedBase
from sdcore.loading import load_pipeline
from sdcore.tiny import TinyModelPaths


def _image(pipe: object) -> np.ndarray:
    out = pipe(  # type: ignore[operator]
        "a photo of sks red circle",
        num_inference_steps=3,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return np.asarray(out.images[0])


def _random_adapter(base: LoadedBase, spec: AdapterSpec) -> dict[str, np.ndarray]:
    unet = copy.deepcopy(base.pipe.unet)
    attach_adapter(unet, spec)
    rng = np.random.default_rng(1)
    return {
        k: (0.3 * rng.standard_normal(v.shape)).astype(np.float32)
        for k, v in get_adapter_arrays(unet, spec).items()
    }


def _save(
    base: LoadedBase, spec: AdapterSpec, arrays: dict[str, np.ndarray], out: Path
) -> LoraFiles:
    provenance = LoraProvenance(
        base_model_name="tiny-sd1",
        base_model_hash=base.fingerprint,
        family="sd1",
        resolution=64,
        steps=30,
        dataset_manifest_hashes=("a" * 64, "b" * 64),
        dp=DPConfig(target_epsilon=8.0, max_grad_norm=0.05),
        noise_multiplier=0.85,
        epsilon=7.99,
    )
    return save_lora_files(
        out, unet=base.pipe.unet, spec=spec, arrays=arrays, provenance=provenance
    )


@pytest.mark.parametrize(
    ("rank", "alpha", "mode"), [(4, 4.0, "ffa"), (4, 8.0, "lora"), (2, 1.0, "ffa")]
)
def test_both_formats_reload_to_the_in_memory_image(
    tiny_base: LoadedBase,
    tiny_model: TinyModelPaths,
    tmp_path: Path,
    rank: int,
    alpha: float,
    mode: str,
) -> None:
    # Given an adapter (alpha equal to and different from the rank) saved in both formats
    spec = AdapterSpec(rank=rank, alpha=alpha, mode=mode)  # type: ignore[arg-type]
    arrays = _random_adapter(tiny_base, spec)
    files = _save(tiny_base, spec, arrays, tmp_path)
    expected = _image(pipeline_with_adapter(tiny_base.pipe, spec, arrays))
    assert np.abs(expected - _image(tiny_base.pipe)).max() > 1e-2  # the adapter matters
    # When each file is loaded into a fresh pipeline with diffusers' load_lora_weights
    for folder, name in (
        (files.diffusers_dir, files.diffusers_file.name),
        (files.kohya_file.parent, files.kohya_file.name),
    ):
        pipe = load_pipeline(tiny_model.diffusers_dir)
        pipe.load_lora_weights(str(folder), weight_name=name)
        # Then the image is the in-memory one
        np.testing.assert_allclose(_image(pipe), expected, atol=1e-5, err_msg=name)


def test_metadata_carries_provenance_and_dp_but_nothing_about_the_captions(
    tiny_base: LoadedBase, tmp_path: Path
) -> None:
    spec = AdapterSpec(rank=4, alpha=8.0)
    files = _save(tiny_base, spec, _random_adapter(tiny_base, spec), tmp_path)
    for path in (files.diffusers_file, files.kohya_file):
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
        assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "8.0"
        assert json.loads(meta["ss_dataset_manifest_hashes"]) == ["a" * 64, "b" * 64]
        assert meta["ss_dp_epsilon"] == "7.99" and meta["ss_dp_noise_multiplier"] == "0.85"
        assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
        assert "ss_tag_frequency" not in meta and "ss_dataset_dirs" not in meta
    with safe_open(str(files.kohya_file), framework="pt") as handle:
        alphas = {k: float(handle.get_tensor(k)) for k in handle.keys() if k.endswith(".alpha")}
    assert len(alphas) == 48 and set(alphas.values()) == {8.0}
