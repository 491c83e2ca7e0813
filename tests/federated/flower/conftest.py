"""Fixtures of the Flower tests: the tiny model, two owners' datasets, nodes with ledgers.

The federation tests start real processes on loopback (one SuperLink, two SuperNodes, the
``flwr`` CLI). Torch runs one thread per process: two nodes share the runner's 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from federated.engine.dataset import read_dataset
from federated.engine.ledger import PrivacyLedger
from federated.engine.localfed import NodeSpec
from federated.engine.synthetic import generate_synthetic_dataset
from sdcore.tiny import TinyModelPaths, save_tiny_model

RESOLUTION = 32
BUDGET_EPSILON = 30.0
BUDGET_DELTA = 1e-3


@dataclass
class Owner:
    spec: NodeSpec

    @property
    def ledger(self) -> PrivacyLedger:
        return PrivacyLedger(self.spec.ledger_path)

    @property
    def manifest(self) -> str:
        assert self.spec.dataset_path is not None
        return read_dataset(self.spec.dataset_path).manifest().manifest_hash

    @property
    def key(self) -> str:
        assert self.spec.dataset_path is not None  # make_owners gives every node a dataset
        return str(self.spec.dataset_path.resolve())


@pytest.fixture(scope="session")
def fed_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    return save_tiny_model(tmp_path_factory.mktemp("fed-model"), seed=0)


@pytest.fixture(scope="session")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("heldout"), n_images=8, seed=99, resolution=RESOLUTION
    )


def make_owners(
    root: Path, model: TinyModelPaths, *, n: int = 2, seeds: tuple[int, ...] = (11, 12)
) -> list[Owner]:
    owners = []
    for index in range(n):
        folder = root / f"owner-{index}"
        data = generate_synthetic_dataset(
            folder / "data", n_images=16, seed=seeds[index], resolution=RESOLUTION
        )
        spec = NodeSpec(data, folder / "cache", folder / "ledger.db", model.diffusers_dir)
        owner = Owner(spec)
        owner.ledger.set_budget(owner.key, epsilon=BUDGET_EPSILON, delta=BUDGET_DELTA)
        owners.append(owner)
    return owners


def run_config(out_dir: Path, model: TinyModelPaths, **overrides: object) -> dict[str, object]:
    """Small, learnable settings (those of the trainer's tests: rank 1, lr 0.1, clip 0.05)."""
    config: dict[str, object] = {
        "num-server-rounds": 2,
        "min-nodes": 2,
        "round-timeout": 180.0,
        "wait-for-nodes": 30.0,
        # No readiness step by default: it costs a ClientApp process per node per run, and
        # these nodes have their model locally. test_job_federation.py tests it.
        "prepare-timeout": 0.0,
        "local-steps": 8,
        "batch-size": 16,
        "lr": 0.1,
        "rank": 1,
        "alpha": 1.0,
        "resolution": RESOLUTION,
        "dp-target-epsilon": 8.0,
        "dp-max-grad-norm": 0.05,
        "out-dir": str(out_dir),
        "base-model-path": str(model.diffusers_dir),
        "job-id": "job-e2e",
    }
    config.update(overrides)
    return config
