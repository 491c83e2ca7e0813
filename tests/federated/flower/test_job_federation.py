"""A job as the site runs it: nodes fetch the base model, serve listed datasets, report readiness.

A real SuperLink and three SuperNodes on loopback. No node is given a base model: they and
the ServerApp fetch it from a loopback HTTP server (the stand-in for the site's
``/api/v1/federated/jobs/<id>/base-model``, checking the job token, with Range support), which
also receives the progress reports. Owners register datasets with ``atelier node add-dataset``:

- node 0 serves datasets A and C (``node-file``): the job lists A, so it trains on A only;
- node 1 serves dataset B (``dataset-path``): listed;
- node 2 serves dataset D only: not listed, so it refuses (``dataset_not_in_job``) when asked
  to prepare, is reported as failed, and is left out of the rounds; min-nodes 2 still holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.cli import main
from federated.engine.dataset import read_dataset
from federated.engine.flower.credentials import write_credentials
from federated.engine.ledger import PrivacyLedger
from federated.engine.localfed import LocalFederation, NodeSpec, RunOutcome
from federated.engine.synthetic import generate_synthetic_dataset
from sdcore.tiny import TinyModelPaths
from tests.federated.engine.model_server import TOKEN, ModelServer, serve_model
from tests.federated.flower.conftest import RESOLUTION, run_config
from tests.federated.live import TEST_NODE_CONFIG

pytestmark = pytest.mark.slow


def _owner_node(root: Path, name: str, datasets: list[Path]) -> Path:
    node = root / name
    for data in datasets:
        args = ["node", "add-dataset", str(data), "--epsilon", "30", "--delta", "1e-3"]
        assert main([*args, "--resolution", str(RESOLUTION), "--node-dir", str(node)]) == 0
    # The node's own site token, as `atelier node register` keeps it (the stand-in site
    # accepts TOKEN from nodes and the ServerApp alike)
    (node / "registration.json").write_text(json.dumps({"site": "", "id": 1, "token": TOKEN}))
    return node


def _registered(node: Path) -> dict[str, str]:
    return {"registration-file": str(node / "registration.json")}


@pytest.fixture(scope="module")
def job(
    tmp_path_factory: pytest.TempPathFactory, fed_model: TinyModelPaths
) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("job-federation")
    data = {
        name: generate_synthetic_dataset(
            root / "data" / name, n_images=16, seed=seed, resolution=RESOLUTION
        ).resolve()
        for name, seed in (("A", 21), ("B", 22), ("C", 23), ("D", 24))
    }
    manifests = {name: read_dataset(path).manifest().manifest_hash for name, path in data.items()}
    nodes = [
        _owner_node(root, "node-0", [data["A"], data["C"]]),
        _owner_node(root, "node-1", [data["B"]]),
        _owner_node(root, "node-2", [data["D"]]),
    ]
    specs = [
        NodeSpec(None, nodes[0] / "cache", nodes[0] / "ledger.db",
                 extra={"node-file": str(nodes[0] / "node.json"), **_registered(nodes[0])}),
        NodeSpec(data["B"], nodes[1] / "cache", nodes[1] / "ledger.db",
                 extra=_registered(nodes[1])),
        NodeSpec(None, nodes[2] / "cache", nodes[2] / "ledger.db",
                 extra={"node-file": str(nodes[2] / "node.json"), **_registered(nodes[2])}),
    ]  # fmt: skip
    with (
        serve_model(fed_model.single_file.read_bytes()) as site,
        LocalFederation(specs, root / "fed", node_config=TEST_NODE_CONFIG) as fed,
    ):
        config = run_config(
            root / "out",
            fed_model,
            **{
                "num-server-rounds": 1,
                "base-model-path": "",
                "base-model-url": site.url,
                "base-model-sha": hashlib.sha256(site.body).hexdigest(),
                "server-cache-dir": str(root / "server-cache"),
                "dataset-manifests": f"{manifests['A']},{manifests['B']}",
                "prepare-timeout": 120.0,
                "progress-url": site.site + "/api/v1/federated/jobs/7/progress",
                "job-id": "job-7",
            },
        )
        write_credentials(
            root / "out", "job-7", progress_token="atp_progress", job_token=TOKEN, senders={}
        )
        outcome = fed.run(config, timeout=400)
        yield {
            "outcome": outcome,
            "fed": fed,
            "site": site,
            "config": config,
            "root": root,
            "nodes": nodes,
            "data": data,
            "manifests": manifests,
            "metrics": json.loads((root / "out" / "metrics.json").read_text()),
        }


def _node_ids(job: dict[str, object]) -> dict[str, str]:
    """Flower node id -> dataset letter, from the prepare report."""
    letters = {h: name for name, h in job["manifests"].items()}  # type: ignore[attr-defined]
    ready = job["metrics"]["prepare"]["ready"]  # type: ignore[index]
    return {node: letters[info["manifest-hash"]] for node, info in ready.items()}


def test_the_job_completes_with_the_two_nodes_that_serve_listed_datasets(
    job: dict[str, object],
) -> None:
    outcome: RunOutcome = job["outcome"]  # type: ignore[assignment]
    assert outcome.ok, (outcome.details, job["fed"].logs()["superlink"][-3000:])  # type: ignore[attr-defined]
    rounds = job["metrics"]["rounds"]  # type: ignore[index]
    assert len(rounds) == 1 and rounds[0]["accepted"] == 2
    assert sorted(_node_ids(job).values()) == ["A", "B"]


def test_the_server_and_each_ready_node_downloaded_the_model_once_with_their_tokens(
    job: dict[str, object],
) -> None:
    site: ModelServer = job["site"]  # type: ignore[assignment]
    sha = hashlib.sha256(site.body).hexdigest()
    assert len(site.requests) == 3  # the ServerApp, node 0, node 1; the rounds reuse the cache
    assert all(r["Authorization"] == f"Bearer {TOKEN}" for r in site.requests)
    root: Path = job["root"]  # type: ignore[assignment]
    assert (root / "server-cache" / "models" / f"{sha}.safetensors").is_file()
    nodes: list[Path] = job["nodes"]  # type: ignore[assignment]
    for node in nodes[:2]:
        assert (node / "cache" / "models" / f"{sha}.safetensors").read_bytes() == site.body
    assert not (nodes[2] / "cache" / "models").exists()  # refused before fetching anything
    ready = job["metrics"]["prepare"]["ready"]  # type: ignore[index]
    assert {info["model-source"] for info in ready.values()} == {"downloaded"}


def test_a_node_serving_no_listed_dataset_is_reported_failed_and_left_out_of_the_rounds(
    job: dict[str, object],
) -> None:
    prepare = job["metrics"]["prepare"]  # type: ignore[index]
    assert len(prepare["nodes-asked"]) == 3 and prepare["no-reply"] == []
    [(failed_node, reason)] = prepare["failed"].items()
    assert "dataset_not_in_job" in reason
    record = job["metrics"]["rounds"][0]  # type: ignore[index]
    assert failed_node not in record["nodes-asked"] and record["refused"] == {}


def test_progress_carries_the_prepare_report_and_each_nodes_dataset(
    job: dict[str, object],
) -> None:
    site: ModelServer = job["site"]  # type: ignore[assignment]
    assert all(auth == "Bearer atp_progress" for auth, _ in site.posts)
    statuses = [body["status"] for _, body in site.posts]
    assert statuses == ["preparing", "running", "completed"]
    preparing, running, _ = (body for _, body in site.posts)
    manifests = job["manifests"]  # type: ignore[assignment]
    expected = {node: manifests[letter] for node, letter in _node_ids(job).items()}  # type: ignore[index]
    assert preparing["job-id"] == "job-7" and preparing["node-datasets"] == expected
    assert len(preparing["prepare"]["failed"]) == 1
    assert running["round"] == 1 and running["node-datasets"] == expected
    assert set(running["nodes"]) == set(expected)
    for key in ("train-loss", "num-examples", "seconds", "bytes-out-per-node", "refused",
                "rejected", "no-reply"):  # fmt: skip
        assert key in running


def test_node_zero_spent_privacy_only_on_the_listed_dataset(job: dict[str, object]) -> None:
    nodes: list[Path] = job["nodes"]  # type: ignore[assignment]
    data: dict[str, Path] = job["data"]  # type: ignore[assignment]
    ledger = PrivacyLedger(nodes[0] / "ledger.db")
    spend = ledger.job_spend(str(data["A"]), "job-7")
    assert spend is not None and spend.epsilon > 0
    assert ledger.job_spend(str(data["C"]), "job-7") is None
    assert PrivacyLedger(nodes[2] / "ledger.db").job_spend(str(data["D"]), "job-7") is None


def test_a_wrong_job_token_fails_the_run_with_a_clear_reason(
    job: dict[str, object], tmp_path: Path
) -> None:
    fed: LocalFederation = job["fed"]  # type: ignore[assignment]
    site: ModelServer = job["site"]  # type: ignore[assignment]
    config = {
        **job["config"],  # type: ignore[dict-item]
        "out-dir": str(tmp_path),
        "server-cache-dir": str(tmp_path / "cache"),
        "job-id": "job-8",
    }
    write_credentials(
        tmp_path, "job-8", progress_token="atp_progress", job_token="atj_revoked", senders={}
    )
    site.posts.clear()
    outcome = fed.run(config, timeout=120)
    assert outcome.status == "finished:failed"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["reason"].startswith("base model: model_fetch_unauthorized")
    assert [body["status"] for _, body in site.posts] == ["failed"]
