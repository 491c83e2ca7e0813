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

from federated.engine.adapter import AdapterSpec
from federated.engine.dp import DPConfig
from federated.engine.synthetic import generate_synthetic_dataset
from federated.engine.trainer import LoadedBase, TrainConfig, load_base
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
    """128 images of 'sks red circle' (owner A's private data)."""
    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("owner-a"), n_images=128, seed=1, resolution=TRAIN_RESOLUTION
    )


@pytest.fixture(scope="session")
def small_datasets(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three owners' small datasets of the same concept (different seeds, different images)."""
    return [
        generate_synthetic_dataset(
            tmp_path_factory.mktemp(f"node-{seed}"),
            n_images=16,
            seed=seed,
            resolution=TRAIN_RESOLUTION,
        )
        for seed in (2, 3, 4)
    ]


@pytest.fixture(scope="session")
def heldout_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 other images of the same concept, never trained on."""
    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("heldout"), n_images=8, seed=99, resolution=TRAIN_RESOLUTION
    )


@pytest.fixture(scope="session")
def tiny_base(tiny_model: TinyModelPaths, engine_cache_dir: Path) -> LoadedBase:
    """The tiny base pipeline as the trainer loads it (memoised, fp32, CPU)."""
    return load_base(
        tiny_model.diffusers_dir,
        device=torch.device("cpu"),
        dtype=torch.float32,
        cache_dir=engine_cache_dir,
    )


# Rank 1 and a clipping norm near the per-sample gradient norms (about 0.05-0.15 here):
# with the opacus default of 1.0 nothing is clipped and the noise drowns the signal. Measured
# over 5 seeds at epsilon 8: held-out loss 2-4 % below the base model (non-private: ~15 %).
LEARNING_CONFIG = TrainConfig(
    resolution=TRAIN_RESOLUTION,
    adapter=AdapterSpec(rank=1, alpha=1.0),
    learning_rate=1e-1,
    batch_size=16,
    local_steps=30,
    device="cpu",
)
MODERATE_DP = DPConfig(target_epsilon=8.0, target_delta=1e-5, max_grad_norm=0.05)
