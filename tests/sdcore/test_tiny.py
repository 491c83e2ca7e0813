"""The tiny SD 1.x model: deterministic, SD 1.x layout, loadable by diffusers offline."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sdcore.tiny import TinyModelPaths, build_tiny_pipeline, save_tiny_model
from sdcore.tokenizer import build_offline_tokenizer, offline_vocab_size
from tests.sdcore.model_fixtures import tiny_model_fixture  # noqa: F401  (pytest fixture)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _image(pipe: object, seed: int = 0) -> np.ndarray:
    result = pipe(  # type: ignore[operator]
        "a red circle",
        num_inference_steps=4,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return np.asarray(result.images[0])


def test_saving_the_same_seed_twice_writes_identical_bytes(
    tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    # Given the tiny model already saved with seed 0
    first = _tree_hashes(tiny_model.single_file.parent)
    # When it is saved again with seed 0 elsewhere
    again = save_tiny_model(tmp_path, seed=0)
    # Then every file has the same SHA-256
    assert _tree_hashes(again.single_file.parent) == first
    assert again.single_file.name == "tiny-sd1.safetensors"


def test_different_seeds_give_different_weights() -> None:
    # Given two seeds / When the pipeline is built with each
    a = build_tiny_pipeline(seed=0).unet.conv_in.weight
    b = build_tiny_pipeline(seed=1).unet.conv_in.weight
    # Then the weights differ
    assert not torch.equal(a, b)


def test_building_leaves_the_global_random_state_alone() -> None:
    # Given a seeded global RNG
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    # When the tiny pipeline is built in between
    build_tiny_pipeline(seed=7)
    # Then the next global draw is the one it would have been
    assert torch.equal(torch.rand(3), expected)


def test_single_file_uses_the_original_sd1_layout_with_modelspec(
    tiny_model: TinyModelPaths,
) -> None:
    # Given the single file / When its header is read
    with safe_open(str(tiny_model.single_file), framework="pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata()
    # Then it has the three original prefixes and nothing else
    prefixes = {"model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."}
    assert all(any(k.startswith(p) for p in prefixes) for k in keys)
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in keys), prefix
    assert "model.diffusion_model.output_blocks.5.1.proj_in.weight" in keys
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1"
    assert metadata["modelspec.resolution"] == "64x64"


def test_diffusers_from_single_file_with_the_config_folder_reproduces_the_weights(
    tiny_model: TinyModelPaths,
) -> None:
    # Given the single file and the diffusers folder as its config
    from diffusers import StableDiffusionPipeline

    # When diffusers' own single-file loader reads it offline
    loaded = StableDiffusionPipeline.from_single_file(
        str(tiny_model.single_file),
        config=str(tiny_model.diffusers_dir),
        local_files_only=True,
        safety_checker=None,
    )
    # Then every tensor equals the built model's
    reference = build_tiny_pipeline(seed=0)
    for name in ("unet", "vae", "text_encoder"):
        ours = getattr(reference, name).state_dict()
        theirs = getattr(loaded, name).state_dict()
        assert set(ours) == set(theirs), name
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name


def test_the_tiny_pipeline_generates_a_64px_image_for_a_seed() -> None:
    # Given the tiny pipeline / When it generates twice with one seed
    pipe = build_tiny_pipeline(seed=0)
    first, second = _image(pipe), _image(pipe)
    # Then the image is 64x64 RGB, finite and reproducible
    assert first.shape == (64, 64, 3)
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)


def test_offline_tokenizer_has_a_real_vocabulary_not_the_three_token_fallback() -> None:
    # Given the offline tokenizer / When a caption is tokenized
    tokenizer = build_offline_tokenizer()
    ids = tokenizer("a photo of a red circle").input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    # Then merged words are single tokens and the special tokens are the last two ids
    assert len(tokenizer) == offline_vocab_size() > 512
    assert tokens == [
        "<|startoftext|>",
        "a</w>",
        "photo</w>",
        "of</w>",
        "a</w>",
        "red</w>",
        "circle</w>",
        "<|endoftext|>",
    ]
    assert tokenizer.eos_token_id == offline_vocab_size() - 1
    assert tokenizer.model_max_length == 77


@pytest.mark.parametrize("caption", ["zebra-like ünïcode 🎨", "UPPER case words"])
def test_offline_tokenizer_never_produces_unknown_tokens(caption: str) -> None:
    # Given any text (byte-level BPE) / When tokenized
    tokenizer = build_offline_tokenizer()
    ids = tokenizer(caption).input_ids[1:-1]
    # Then no id is the end/unknown token and decoding gives the lower-cased text back
    # (CLIP splits punctuation into words, so compare without spaces)
    assert tokenizer.eos_token_id not in ids
    assert tokenizer.decode(ids).replace(" ", "") == caption.lower().replace(" ", "")
