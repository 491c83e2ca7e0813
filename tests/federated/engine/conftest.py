"""Session fixtures for the node engine: the tiny model, synthetic datasets, one cache folder.

Torch runs single-threaded here: the tiny model's ops are too small to gain from a second
thread, and on a busy 2-core runner two OpenMP threads slow each step down many times.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from federated.engine.synthetic import generate_synthetic_dataset
from sdcore.tiny import TinyModelPaths, save_tiny_model

TRAIN_RESOLUTION = 32


@pytest.fixture(scope="session", autouse=True)
def _single_thread_torch() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("ATELIER_TEST_TORCH_THREADS", "1")))
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def engine_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture(scope="session")
def concept_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 images of 'sks red circle' (owner A's private data)."""
    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("owner-a"), n_images=48, seed=1, resolution=TRAIN_RESOLUTION
    )


@pytest.fixture(scope="session")
def heldout_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 other images of the same concept, never trained on."""
    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("heldout"), n_images=8, seed=99, resolution=TRAIN_RESOLUTION
    )
