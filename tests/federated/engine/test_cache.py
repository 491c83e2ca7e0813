"""The latent/embedding cache: encode once, reuse, and key by dataset, model and resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from federated.engine.cache import build_latent_cache, cache_key, model_fingerprint
from federated.engine.dataset import read_dataset
from federated.engine.trainer import LoadedBase


def test_the_second_build_reads_the_file_and_encodes_nothing(
    tiny_base: LoadedBase,
    small_datasets: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scan = read_dataset(small_datasets[1])
    first = build_latent_cache(
        tiny_base.pipe, scan, cache_dir=tmp_path, resolution=32, model_hash="m"
    )

    def no_encoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the VAE ran again")

    monkeypatch.setattr(tiny_base.pipe.vae, "encode", no_encoding)
    second = build_latent_cache(
        tiny_base.pipe, scan, cache_dir=tmp_path, resolution=32, model_hash="m"
    )
    assert second.path == first.path and second.path.is_file()  # type: ignore[union-attr]
    assert torch.equal(second.latent_mean, first.latent_mean)
    assert torch.equal(
        second.conditioning["encoder_hidden_states"], first.conditioning["encoder_hidden_states"]
    )


def test_cache_holds_one_latent_and_one_embedding_per_example(
    tiny_base: LoadedBase, small_datasets: list[Path], tmp_path: Path
) -> None:
    scan = read_dataset(small_datasets[1])
    cache = build_latent_cache(
        tiny_base.pipe, scan, cache_dir=tmp_path, resolution=32, model_hash="m"
    )
    assert cache.latent_mean.shape == (16, 4, 4, 4)
    assert cache.latent_std.shape == (16, 4, 4, 4) and bool((cache.latent_std > 0).all())
    assert cache.conditioning["encoder_hidden_states"].shape == (16, 77, 32)


def test_the_key_changes_with_dataset_model_and_resolution() -> None:
    base = dict(manifest_hash="a", model_hash="m", resolution=32, family="sd1")
    keys = {
        cache_key(**base),  # type: ignore[arg-type]
        cache_key(**base | {"manifest_hash": "b"}),  # type: ignore[arg-type]
        cache_key(**base | {"model_hash": "n"}),  # type: ignore[arg-type]
        cache_key(**base | {"resolution": 64}),  # type: ignore[arg-type]
    }
    assert len(keys) == 4


def test_model_fingerprint_is_memoised_and_follows_changes(tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"one")
    memo = tmp_path / "memo"
    first = model_fingerprint(model, memo_dir=memo)
    assert (memo / "fingerprints.json").is_file()
    assert model_fingerprint(model, memo_dir=memo) == first
    model.write_bytes(b"two!")
    assert model_fingerprint(model, memo_dir=memo) != first
