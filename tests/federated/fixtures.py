"""Fixtures of the federated app's Django side: people with wallets, the tiny SD 1.x model
published as a base checkpoint, nodes with real OpenSSH keys, private datasets listed with
terms, and a ServerApp output folder made by the engine's own LoRA export.

Use them from a test module with ``pytest_plugins = ["tests.federated.fixtures"]`` and
``pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")``. Everything is
made through the services, as the site makes it.
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federated.engine.localfed import LocalFederation
from sdcore.tiny import TINY_SINGLE_FILE_NAME
from tests.federated.factories import manifest, openssh_public_key
from tests.federated.live import OwnerData, federation_of, owners_data
from tests.support import tiny_model

_counter = itertools.count(1)


@dataclass
class Fed:
    """Builders for one test; ``make_user`` and the tiny model come from the suite."""

    make_user: Callable[..., Any]
    request: pytest.FixtureRequest

    @property
    def tiny_model_dir(self) -> Path:  # built on first use (once per session)
        return Path(self.request.getfixturevalue("tiny_model_dir"))

    def user(self, name: str, *, credits: int = 0) -> Any:
        user = self.make_user(name)
        if credits:
            self.fund(user, credits)
        return user

    def fund(self, user: Any, credits: int) -> None:
        from marketplace.payments import DemoProvider
        from marketplace.services.ledger import wallet_top_up

        wallet_top_up(
            user=user,
            amount=credits,
            provider=DemoProvider(),
            idempotency_key=f"fed-fund-{next(_counter)}",
        )

    def base_version(
        self, owner: Any, *, license_code: str = "creativeml-openrail-m", publish: bool = True
    ) -> Any:
        """The tiny SD 1.x single-file checkpoint, uploaded and published by ``owner``."""
        from registry.services.catalog import (
            FileSpec,
            model_create,
            version_create,
            version_publish,
        )
        from registry.services.uploads import upload_whole_file

        path = self.tiny_model_dir / TINY_SINGLE_FILE_NAME
        with open(path, "rb") as stream:
            upload = upload_whole_file(
                user=owner, filename=TINY_SINGLE_FILE_NAME, stream=stream, size=path.stat().st_size
            )
        model = model_create(owner=owner, name=f"Tiny SD {next(_counter)}", kind="checkpoint")
        version = version_create(
            model=model,
            user=owner,
            name="single-file",
            files=[FileSpec(upload)],
            license_code=license_code,
        )
        return version_publish(version=version, user=owner) if publish else version

    def node(self, owner: Any, name: str = "laptop") -> Any:
        from federated.services.nodes import node_register

        return node_register(owner=owner, name=name, public_key=openssh_public_key())

    def dataset(
        self,
        owner: Any,
        *,
        node: Any = None,
        count: int = 10,
        seed: int | None = None,
        name: str = "",
        **terms: Any,
    ) -> Any:
        """A private dataset listed from ``node`` (a new one by default); returns its terms."""
        from federated.services.datasets import federated_dataset_create

        n = next(_counter)
        node = node or self.node(owner, name=f"node {n}").node
        terms = {
            "price_per_example_round": 1,
            "epsilon_per_job": 8.0,
            "epsilon_lifetime": 20.0,
            **terms,
        }
        return federated_dataset_create(
            owner=owner,
            node_id=node.pk,
            name=name or f"Photos {n}",
            manifest=manifest(count=count, seed=1000 + n if seed is None else seed),
            terms=terms,
            description="Red circles.",
        )

    def spec(self, base: Any, datasets: list[Any], **values: Any) -> Any:
        from federated.services.jobs import JobSpec

        defaults: dict[str, Any] = {
            "name": "Red circles LoRA",
            "use": "style",
            "rounds": 2,
            "resolution": 32,
            "local_steps": 5,
            "rank": 2,
            "trigger_word": "sks",
        }
        return JobSpec(
            base_version_id=base.pk,
            dataset_version_ids=tuple(t.dataset_version_id for t in datasets),
            **{**defaults, **values},
        )

    def launch(self, trainer: Any, spec: Any, key: str = "") -> Any:
        from federated.services.jobs import job_create_and_launch

        job, _ = job_create_and_launch(
            trainer=trainer, spec=spec, idempotency_key=key or f"key-{next(_counter)}"
        )
        return job

    def running(self, trainer: Any, spec: Any) -> tuple[Any, dict[str, Any]]:
        """A launched job the coordinator started: (job, its run config)."""
        from federated.services.jobs import job_mark_running, job_run_config

        job = self.launch(trainer, spec)
        config = job_run_config(job=job)
        return job_mark_running(job=job, run_id=f"{next(_counter)}"), config

    def credentials(self, job: Any) -> dict[str, Any]:
        """The ServerApp's credentials file of a started job (progress and job tokens, the
        SuperLink node id -> datasets map), as the ServerApp reads it."""
        from federated.models import FederatedJob
        from federated.services.jobs import job_credentials_path

        path = job_credentials_path(job=FederatedJob.objects.get(pk=job.pk))
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def report(
        self, job: Any, index: int, nodes: dict[str, tuple[str, int, float]], **extra: Any
    ) -> dict[str, Any]:
        """A round report as the ServerApp posts it: ``nodes`` maps a Flower node id to
        (manifest hash, examples, epsilon)."""
        return {
            "job-id": job.flower_job_id,
            "status": "running",
            "round": index,
            "nodes-asked": list(nodes),
            "bytes-out-per-node": 1234,
            "nodes": {
                n: {
                    "num-examples": float(ex),
                    "epsilon": eps,
                    "delta": 1e-5,
                    "train-loss": 0.5,
                    "total-steps": 5.0 * index,
                    "noise-multiplier": 1.1,
                }
                for n, (_, ex, eps) in nodes.items()
            },
            "node-datasets": {n: h for n, (h, _, _) in nodes.items()},
            "rejected": {},
            "refused": {},
            "no-reply": [],
            "accepted": len(nodes),
            "train-loss": 0.5 - 0.1 * index,
            "num-examples": sum(e for _, e, _ in nodes.values()),
            "seconds": 1.5,
            **extra,
        }


@pytest.fixture
def fed(make_user: Callable[..., Any], request: pytest.FixtureRequest) -> Fed:
    return Fed(make_user=make_user, request=request)


# --- the owners' machines and the federation (real Flower processes), one per module ----------


@pytest.fixture(scope="module")
def owners(tmp_path_factory: pytest.TempPathFactory) -> list[OwnerData]:
    """Two data owners whose nodes keep a copy of the tiny base model. A module whose owners
    differ (no local base model, more of them) overrides this fixture; ``federation`` follows."""
    tiny = tiny_model(tmp_path_factory)
    return owners_data(tmp_path_factory.mktemp("owners"), base_model=tiny / TINY_SINGLE_FILE_NAME)


@pytest.fixture(scope="module")
def federation(
    owners: list[OwnerData], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalFederation]:
    """A local SuperLink with one SuperNode per owner, for the module's tests."""
    yield from federation_of(owners, tmp_path_factory.mktemp("fed"))


@pytest.fixture
def ledger_checked(db: Any) -> Iterator[None]:
    """After the test: the ledger sums to zero and every balance reconciles."""
    from marketplace.selectors import ledger_reconcile, ledger_total, unbalanced_transactions

    yield
    assert ledger_total() == 0
    assert unbalanced_transactions() == []
    assert ledger_reconcile() == []


# --- the ServerApp's output folder ------------------------------------------------------------


@pytest.fixture(scope="session")
def exported_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``lora/`` as the engine exports it (kohya file and diffusers/PEFT file) for a real
    rank-2 adapter on the tiny model, and the engine's sample grid of each round (fixed
    prompt and seed) under ``samples/round-N/``; built once."""
    import torch

    from federated.engine.adapter import AdapterSpec, attach_adapter, get_adapter_arrays
    from federated.engine.dp import DPConfig
    from federated.engine.evaluate import pipeline_with_adapter, sample_grid
    from federated.engine.export import LoraProvenance, save_lora_files
    from federated.engine.trainer import load_base
    from tests.conftest import _tiny_model

    tiny = _tiny_model(tmp_path_factory)
    out = tmp_path_factory.mktemp("server-out")
    base = load_base(
        tiny / "diffusers",
        device=torch.device("cpu"),
        dtype=torch.float32,
        cache_dir=out / ".cache",
    )
    spec = AdapterSpec(rank=2, alpha=2.0)
    unet = copy.deepcopy(base.pipe.unet)
    attach_adapter(unet, spec)
    rng = np.random.default_rng(0)
    arrays = {
        k: (0.1 * rng.standard_normal(v.shape)).astype(np.float32)
        for k, v in get_adapter_arrays(unet, spec).items()
    }
    save_lora_files(
        out / "lora",
        unet=base.pipe.unet,
        spec=spec,
        arrays=arrays,
        provenance=LoraProvenance(
            base_model_name="tiny-sd1",
            base_model_hash=base.fingerprint,
            family="sd1",
            resolution=32,
            steps=10,
            dataset_manifest_hashes=("a" * 64,),
            dp=DPConfig(target_epsilon=8.0),
            noise_multiplier=1.1,
            epsilon=3.5,
        ),
    )
    adapted = pipeline_with_adapter(base.pipe, spec, arrays)
    for index in (1, 2):  # a sample grid per round, fixed prompt and seed
        sample_grid(
            adapted,
            ["a photo of sks red circle"],
            [0],
            resolution=32,
            num_inference_steps=2,
            out_path=out / "samples" / f"round-{index}" / "grid.png",
        )
    shutil.rmtree(out / ".cache", ignore_errors=True)
    return out


@pytest.fixture
def server_out(exported_lora: Path, tmp_path: Path) -> Callable[..., Path]:
    """A finished run's out-dir for a job: the exported LoRA, samples and ``metrics.json``."""

    def make(job: Any, *, status: str = "completed", epsilon: float = 3.5) -> Path:
        out = tmp_path / f"out-{job.pk}-{next(_counter)}"
        shutil.copytree(exported_lora, out)
        rounds = [
            {"round": r.index, "train-loss": r.train_loss, "nodes": r.nodes}
            for r in job.rounds.order_by("index")
        ]
        metrics = {
            "job-id": job.flower_job_id,
            "status": status,
            "rounds": rounds,
            "aggregation": "fedavg",
            "num-server-rounds": job.num_rounds,
            "final": {
                "kohya": str(out / "lora" / "lora.safetensors"),
                "diffusers": str(out / "lora" / "diffusers" / "pytorch_lora_weights.safetensors"),
            },
            "epsilon-max": epsilon,
            "samples": {"prompt": "a photo of sks red circle", "seed": 0},
        }
        if status != "completed":
            metrics["reason"] = "round 2: 0 accepted replies"
        (out / "metrics.json").write_text(json.dumps(metrics))
        return out

    return make
