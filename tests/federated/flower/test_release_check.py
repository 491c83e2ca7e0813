"""The release check on real processes (issue #17): one SuperLink, two SuperNodes on loopback.

Two owners with tiny private datasets of the shapes base's held-out concept (owner 0: two
scenes; owner 1: copies of those two and one of its own, as when the same pictures circulate:
duplicated images are the ones a model memorises first) train one round of 400 steps with the
shipped shapes base, at a noise so small that nothing is private (noise multiplier 0.005: the
accounted epsilon is in the millions; nodes keep a privacy ledger, so they train only with
DP-SGD, and this is the nearest to "no DP" a node accepts). The LoRA memorises. Then:

- owner 0 is strict (release threshold 0: veto on any sample that copies one of its images),
  owner 1 sets 1 (never veto): owner 0's node vetoes, the ServerApp exports nothing,
  ``metrics.json`` and the progress report say ``withheld`` with counts and the vetoing dataset,
  never a score or an image; the node's own ``release-check.json`` (which stays on it) says which
  of its images matched and how closely;
- owner 0 turns lenient (``release-threshold`` in its node file, read at each check: no node
  restart), and the job resumes after its last round (no training: only the release step, with
  the same adapter): exported, the site publishes it.

A copy is measured against the base alone drawing the same prompt and seed, so the veto comes
from what the LoRA learnt (that the base alone never copies is a unit test of
``federated/engine/release_check.py``; a DP job let through is bench/release_audit.py's).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from federated.engine.dataset import read_dataset
from federated.engine.flower.credentials import write_credentials
from federated.engine.ledger import PrivacyLedger
from federated.engine.localfed import LocalFederation, NodeSpec, RunOutcome
from federated.engine.release_check import COPY_MARGIN
from federated.engine.synthetic import generate_concept_dataset
from sdcore.shapes import SHAPES_MODEL_DIR
from tests.federated.engine.model_server import ModelServer, serve_model

# Two federations that each train a round and run the release check: past the suite's 600 s
# on a loaded machine (minutes alone on 2 cores).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

STRICT, LENIENT = "0", "1"  # veto on any copy; never veto
IMAGES = 2  # each owner has 2 images (owner 1: and one more)
SAMPLES = (6, 2)  # owner 0's node draws 6 samples from its captions (3 each), owner 1's 2
# The no-DP job of bench/release_audit.py: same data, settings and job id (the training's noise is
# drawn from it), so the same adapter and owner 0's first 6 copy margins of bench/release_audit.json
JOB = "release-audit-nodp"


def _owner(root: Path, index: int) -> NodeSpec:
    """Owner ``index``'s node: its dataset listed in its node file (``node.json``), where its
    owner also keeps the release threshold (read at each check)."""
    folder = root / f"owner-{index}"
    data = folder / "data"
    # bench/release_audit.py's owners, file for file: owner 0 two scenes; owner 1 one of its
    # own and copies of owner 0's two
    generate_concept_dataset(data, n_images=IMAGES if index == 0 else 1, seed=1 + index)
    if index:
        shared = generate_concept_dataset(folder / "shared", n_images=IMAGES, seed=1)
        for i in range(IMAGES):
            for suffix in (".png", ".txt"):
                shutil.copy(shared / f"{i:05d}{suffix}", data / f"shared-{i:05d}{suffix}")
    key = str(data.resolve())
    ledger = folder / "ledger.db"
    PrivacyLedger(ledger).set_budget(key, epsilon=1e12, delta=1e-3)
    manifest = read_dataset(data).manifest().manifest_hash
    node_file = folder / "node.json"
    node_file.write_text(json.dumps({"datasets": {key: {"path": key, "manifest-hash": manifest}}}))
    return NodeSpec(
        None,
        folder / "cache",
        ledger,
        SHAPES_MODEL_DIR,
        extra={"node-file": str(node_file), "release-samples": str(SAMPLES[index])},
    )


def _set_threshold(root: Path, index: int, threshold: str) -> None:
    node_file = root / f"owner-{index}" / "node.json"
    data = json.loads(node_file.read_text())
    node_file.write_text(json.dumps({**data, "release-threshold": threshold}))


def _config(
    out_dir: Path, site: ModelServer, job_id: str, **overrides: object
) -> dict[str, object]:
    config: dict[str, object] = {
        "num-server-rounds": 1,
        "min-nodes": 2,
        "round-timeout": 900.0,
        "wait-for-nodes": 60.0,
        "prepare-timeout": 0.0,
        "release-check-timeout": 600.0,
        "sample-grid": False,
        "resolution": 64,
        "local-steps": 400,
        "batch-size": 2,
        "lr": 0.02,
        "rank": 4,
        "alpha": 4.0,
        "dp-noise-multiplier": 0.005,
        "dp-max-grad-norm": 1.0,
        "dp-delta": 1e-5,
        "seed": 0,
        "base-model-path": str(SHAPES_MODEL_DIR),
        "out-dir": str(out_dir),
        "job-id": job_id,
        "progress-url": site.site + "/api/v1/federated/jobs/9/progress",
    }
    config.update(overrides)
    write_credentials(out_dir, job_id, progress_token="atp_progress", job_token="x", senders={})
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("release-check")
    out: dict[str, object] = {"root": root}
    with (
        serve_model(b"") as site,
        LocalFederation([_owner(root, 0), _owner(root, 1)], root / "fed") as fed,
    ):
        # Run 1: owner 0 is strict, owner 1 lenient
        _set_threshold(root, 0, STRICT)
        _set_threshold(root, 1, LENIENT)
        out["vetoed"] = fed.run(_config(root / "out-1", site, JOB), timeout=1500)
        out["vetoed-posts"] = list(site.posts)
        out["vetoed-logs"] = fed.logs()
        site.posts.clear()
        # Run 2: owner 0 turns lenient; the job goes on from run 1's last round (no training:
        # only the release step, with the same adapter)
        _set_threshold(root, 0, LENIENT)
        config = _config(
            root / "out-2", site, "job-release-2", **{"resume-from": str(root / "out-1")}
        )
        out["published"] = fed.run(config, timeout=900)
        out["published-posts"] = list(site.posts)
        out["published-logs"] = fed.logs()
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
    record0 = json.loads((root / "owner-0" / "cache" / "jobs" / JOB /
                            "release-check.json").read_text())  # fmt: skip
    assert check == {
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
    # a copy: a sample closer to one of owner 0's images than the base alone draws the same
    # prompt and seed, and than to its other image, by COPY_MARGIN or more (the base alone's
    # margins are at most 0 by construction); this job copies in half its samples, the best
    # by more than twice the copy margin
    assert record0["copies"] >= 2 and record0["score"] > float(STRICT), record0
    assert record0["best_margin"] >= 2 * COPY_MARGIN, record0
    assert record0["samples"] == SAMPLES[0] and record0["best_margin"] >= COPY_MARGIN
    assert record0["matched"].endswith(".png")
    owner1 = json.loads((root / "owner-1" / "cache" / "jobs" / JOB /
                         "release-check.json").read_text())  # fmt: skip
    assert owner1["verdict"] == "allow" and owner1["threshold"] == 1.0


def test_the_vetoed_dataset_is_named_by_manifest_and_no_score_or_image_leaves_the_nodes(
    runs: dict[str, object],
) -> None:
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
    assert "best_margin" not in server_log and "00000.png" not in server_log


def test_lenient_owners_let_the_same_lora_through_and_it_is_exported(
    runs: dict[str, object],
) -> None:
    from federated.services.release import run_release_withheld

    outcome: RunOutcome = runs["published"]  # type: ignore[assignment]
    root: Path = runs["root"]  # type: ignore[assignment]
    assert outcome.ok, (outcome.details, runs["published-logs"])
    metrics = _metrics(root, "out-2")
    assert metrics["status"] == "completed", metrics
    assert metrics["started-at-round"] == 2  # resumed after round 1: only the release step ran
    assert metrics["rounds"] == _metrics(root, "out-1")["rounds"]
    assert metrics["release-check"]["allowed"] == 2 and metrics["release-check"]["vetoed"] == 0  # type: ignore[index]
    assert Path(metrics["final"]["kohya"]).is_file()  # type: ignore[index]
    assert [body["status"] for _, body in runs["published-posts"]][-1:] == ["completed"]  # type: ignore[attr-defined]
    assert run_release_withheld(root / "out-2") is None
    assert run_release_withheld(root / "out-1") is not None
