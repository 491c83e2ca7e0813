"""Synthetic concept datasets: reproducible, different per seed, one concept."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from federated.engine.synthetic import generate_synthetic_dataset


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = generate_synthetic_dataset(tmp_path / "a", n_images=3, seed=7)
    b = generate_synthetic_dataset(tmp_path / "b", n_images=3, seed=7)
    assert _digests(a) == _digests(b)


def test_different_seeds_give_different_images_of_the_same_concept(tmp_path: Path) -> None:
    a = generate_synthetic_dataset(
        tmp_path / "a", n_images=3, seed=1, concept="blue square", token="zxq"
    )
    b = generate_synthetic_dataset(
        tmp_path / "b", n_images=3, seed=2, concept="blue square", token="zxq"
    )
    images_a = {v for k, v in _digests(a).items() if k.endswith(".png")}
    images_b = {v for k, v in _digests(b).items() if k.endswith(".png")}
    assert images_a.isdisjoint(images_b)
    for folder in (a, b):
        for caption in folder.glob("*.txt"):
            assert "zxq blue square" in caption.read_text()


def test_an_unknown_concept_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="colour"):
        generate_synthetic_dataset(tmp_path, n_images=1, concept="plaid hexagon")
