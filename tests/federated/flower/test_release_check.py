"""The release check on real processes (issue #17): one SuperLink, two SuperNodes on loopback.

Two owners, each with a tiny private dataset (two scenes of the shapes base's held-out
concept), train one round with the shipped shapes base, at a noise so small that nothing is
private (noise multiplier 0.005: the accounted epsilon is in the millions; nodes keep a privacy
ledger, so they train only with DP-SGD, and this is the nearest to "no DP" a node accepts). The
LoRA memorises its images. Then:

- owner 0 set a strict release threshold (0.5, the floor), owner 1 a lenient one (0.95): owner
  0's node vetoes, the ServerApp exports nothing, ``metrics.json`` and the progress report say
  ``withheld`` with counts and the vetoing dataset, never a score or an image; the node's own
  ``release-check.json`` (which stays on it) says which of its images matched and how closely;
- the same job again (same data, seeds and settings: the same adapter) with both owners
  lenient is exported: the site publishes it.

The same adapter at round 0 (the base alone) scores below the strict threshold on owner 0's
images: the veto comes from what the LoRA learnt, not from the threshold alone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from federated.engine.flower.credentials import write_credentials
from federated.engine.ledger import PrivacyLedger
from federated.engine.localfed import LocalFederation, NodeSpec, RunOutcome
from federated.engine.synthetic import generate_concept_dataset
from sdcore.shapes import SHAPES_MODEL_DIR
from tests.federated.engine.model_server import ModelServer, serve_model

pytestmark = pytest.mark.slow

STRICT, LENIENT = "0.5", "0.95"
IMAGES, SAMPLES = 2, 4  # each owner has 2 images; its node draws 4 samples from their captions


def _owner(root: Path, index: int, threshold: str, run: int) -> NodeSpec:
    """Owner ``index``'s node for run ``run`` (the same data; its own cache and ledger)."""
    folder = root / f"owner-{index}"
    data = folder / "data"
    if not data.exists():
        generate_concept_dataset(data, n_images=IMAGES, seed=40 + index, resolution=64)
    ledger = folder / f"ledger-{run}.db"
    PrivacyLedger(ledger).set_budget(str(data.resolve()), epsilon=1e12, delta=1e-3)
    return NodeSpec(
        data.resolve(),
        folder / f"cache-{run}",
        ledger,
        SHAPES_MODEL_DIR,
        extra={"release-threshold": threshold, "release-samples": str(SAMPLES)},
    )


def _config(out_dir: Path, site: ModelServer, **overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        "num-server-rounds": 1,
        "min-nodes": 2,
        "round-timeout": 900.0,
        "wait-for-nodes": 60.0,
        "prepare-timeout": 0.0,
        "release-check-timeout": 600.0,
        "sample-grid": False,
        "resolution": 64,
        "local-steps": 200,
        "batch-size": 2,
        "lr": 0.02,
        "rank": 4,
        "alpha": 4.0,
        "dp-noise-multiplier": 0.005,
        "dp-max-grad-norm": 1.0,
        "dp-delta": 1e-5,
        "base-model-path": str(SHAPES_MODEL_DIR),
        "out-dir": str(out_dir),
        "job-id": "job-release",
        "progress-url": site.site + "/api/v1/federated/jobs/9/progress",
    }
    config.update(overrides)
    write_credentials(
        out_dir, "job-release", progress_token="atp_progress", job_token="x", senders={}
    )
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("release-check")
    out = {}
    with serve_model(b"") as site:
        strict = [_owner(root, 0, STRICT, 1), _owner(root, 1, LENIENT, 1)]
        with LocalFederation(strict, root / "fed-1") as fed:
            out["vetoed"] = fed.run(_config(root / "out-1", site), timeout=1500)
            out["vetoed-logs"] = fed.logs()
        out["vetoed-posts"] = list(site.posts)
        site.posts.clear()
        lenient = [_owner(root, 0, LENIENT, 2), _owner(root, 1, LENIENT, 2)]
        with LocalFederation(lenient, root / "fed-2") as fed:
            out["published"] = fed.run(_config(root / "out-2", site), timeout=1500)
            out["published-logs"] = fed.logs()
        out["published-posts"] = list(site.posts)
    out["root"] = root
    yield out


def _metrics(root: Path, name: str) -> dict[str, object]:
    return json.loads((root / name / "metrics.json").read_text())


def test_a_strict_owner_vetoes_a_memorising_lora_and_nothing_is_exported(
    runs: dict[str, object],
) -> None:
    outcome: RunOutcome = runs["vetoed"]  # type: ignore[assignment]
    root: Path = runs["root"]  # type: ignore[assignment]
    assert outcome.ok, (outcome.details, runs["vetoed-logs"])
    metrics = _metrics(root, "out-1")
    assert metrics["status"] == "withheld", metrics
    assert metrics["rounds"][0]["accepted"] == 2  # type: ignore[index]
    check = metrics["release-check"]
    record0 = json.loads((root / "owner-0" / "cache-1" / "jobs" / "job-release" /
                            "release-check.json").read_text())  # fmt: skip
    assert check == {  # type: ignore[comparison-overlap]
        "asked": 2,
        "allowed": 1,
        "vetoed": 1,
        "no-answer": 0,
        "vetoed-datasets": check["vetoed-datasets"],  # type: ignore[index]
        "seconds": check["seconds"],  # type: ignore[index]
    }
    assert not (root / "out-1" / "lora").exists()
    # The owner's own record: what matched and how closely (it never leaves the node)
    assert record0["verdict"] == "veto" and record0["reason"] == "reproduced"
    assert record0["best_score"] >= float(STRICT)
    assert record0["matched"].endswith(".png")
    owner1 = json.loads((root / "owner-1" / "cache-1" / "jobs" / "job-release" /
                         "release-check.json").read_text())  # fmt: skip
    assert owner1["verdict"] == "allow" and owner1["best_score"] < float(LENIENT)


def test_the_vetoed_dataset_is_named_by_manifest_and_no_score_or_image_leaves_the_nodes(
    runs: dict[str, object],
) -> None:
    from federated.engine.dataset import read_dataset

    root: Path = runs["root"]  # type: ignore[assignment]
    metrics_text = (root / "out-1" / "metrics.json").read_text()
    manifest0 = read_dataset(root / "owner-0" / "data").manifest().manifest_hash
    assert _metrics(root, "out-1")["release-check"]["vetoed-datasets"] == [manifest0]  # type: ignore[index]
    posts = runs["vetoed-posts"]
    assert [body["status"] for _, body in posts] == ["running", "withheld"]  # type: ignore[attr-defined]
    withheld = posts[-1][1]  # type: ignore[index]
    assert withheld["release-check"]["vetoed"] == 1
    for text in (metrics_text, json.dumps(withheld)):
        assert "score" not in text and ".png" not in text and "atlr" not in text
    server_log = runs["vetoed-logs"]["superlink"]  # type: ignore[index]
    assert "best_score" not in server_log and "00000.png" not in server_log


def test_lenient_owners_let_the_same_lora_through_and_it_is_exported(
    runs: dict[str, object],
) -> None:
    from federated.services.release import run_release_withheld

    outcome: RunOutcome = runs["published"]  # type: ignore[assignment]
    root: Path = runs["root"]  # type: ignore[assignment]
    assert outcome.ok, (outcome.details, runs["published-logs"])
    metrics = _metrics(root, "out-2")
    assert metrics["status"] == "completed", metrics
    # The same data, seeds and settings train the same adapter (the trainer is deterministic)
    assert metrics["rounds"][0]["train-loss"] == _metrics(root, "out-1")["rounds"][0]["train-loss"]  # type: ignore[index]
    assert metrics["release-check"]["allowed"] == 2 and metrics["release-check"]["vetoed"] == 0  # type: ignore[index]
    assert Path(metrics["final"]["kohya"]).is_file()  # type: ignore[index]
    assert [body["status"] for _, body in runs["published-posts"]] == ["running", "completed"]  # type: ignore[attr-defined]
    assert run_release_withheld(root / "out-2") is None
    assert run_release_withheld(root / "out-1") is not None


def test_the_base_alone_is_below_the_strict_threshold_so_the_lora_caused_the_veto(
    runs: dict[str, object],
) -> None:
    import numpy as np
    import torch

    from federated.engine.adapter import attach_adapter, get_adapter_arrays
    from federated.engine.flower.settings import train_config_from_run_config
    from federated.engine.release_check import node_release_check
    from federated.engine.trainer import load_base

    root: Path = runs["root"]  # type: ignore[assignment]
    owner = _owner(root, 0, STRICT, 3)
    node_config = {
        "dataset-path": str(owner.dataset_path),
        "cache-dir": str(root / "owner-0" / "base-check"),
        "ledger-path": str(owner.ledger_path),
        "base-model-path": str(SHAPES_MODEL_DIR),
        **owner.extra,
    }
    config = {"resolution": 64, "rank": 4, "alpha": 4.0, "job-id": "job-release"}
    base = load_base(
        SHAPES_MODEL_DIR,
        device=torch.device("cpu"),
        dtype=torch.float32,
        cache_dir=root / "owner-0" / "base-check",
    )
    unet = copy.deepcopy(base.pipe.unet)
    spec = train_config_from_run_config(config).adapter
    attach_adapter(unet, spec)
    initial = get_adapter_arrays(unet, spec)
    assert all(not np.any(v) for k, v in initial.items() if "lora_B" in k)  # B = 0: the base
    verdict = node_release_check(run_config=config, node_config=node_config, arrays=initial)
    assert verdict.verdict == "allow" and verdict.best_score < float(STRICT)
