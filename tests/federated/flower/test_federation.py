"""Real federations on loopback: one SuperLink, two SuperNodes, runs driven by the ``flwr`` CLI.

Slow by nature (each train message starts a fresh ClientApp process that imports torch and
diffusers): the runs are shared where one run can show several behaviours.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from federated.engine.flower.credentials import write_credentials
from federated.engine.flower.state import load_state
from federated.engine.localfed import LocalFederation
from federated.engine.rounds import RoundRecord
from sdcore.tiny import TinyModelPaths
from tests.federated.flower.conftest import (
    BUDGET_EPSILON,
    RESOLUTION,
    Owner,
    make_owners,
    run_config,
)
from tests.federated.live import TEST_NODE_CONFIG

pytestmark = pytest.mark.slow


class _Progress(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, object]]] = []

    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.headers.get("Authorization", ""), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def progress_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Progress)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/progress"
    server.shutdown()


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, fed_model: TinyModelPaths
) -> Iterator[tuple[LocalFederation, list[Owner]]]:
    root = tmp_path_factory.mktemp("federation")
    owners = make_owners(root, fed_model)
    with LocalFederation(
        [o.spec for o in owners], root / "fed", node_config=TEST_NODE_CONFIG
    ) as fed:
        yield fed, owners


@pytest.fixture(scope="module")
def e2e(
    federation: tuple[LocalFederation, list[Owner]],
    fed_model: TinyModelPaths,
    tmp_path_factory: pytest.TempPathFactory,
    progress_url: str,
) -> dict[str, object]:
    """Rounds 1-2 in one run; a restarted ServerApp resumes from the saved state for round 3.

    The second run also uses ``transport="packed"`` (one flat array on the wire).
    """
    fed, _ = federation
    out = tmp_path_factory.mktemp("e2e-out")
    first = fed.run(
        run_config(out / "first", fed_model, **{"num-server-rounds": 2, "dp-planned-rounds": 3}),
        timeout=400,
    )
    assert first.ok, (first.details, fed.logs()["superlink"][-3000:])
    # The progress token reaches the ServerApp through its credentials file (in its out-dir,
    # on the SuperLink's side), never the run config every node reads
    write_credentials(out / "final", "job-e2e", progress_token="tok-123", job_token="", senders={})
    second = fed.run(
        run_config(
            out / "final",
            fed_model,
            **{
                "num-server-rounds": 3,
                "dp-planned-rounds": 3,
                "resume-from": str(out / "first"),
                "progress-url": progress_url,
                "transport": "packed",  # the resumed round also exercises packed transport
            },
        ),
        timeout=300,
    )
    assert second.ok, second.details
    metrics = json.loads((out / "final" / "metrics.json").read_text())
    return {"metrics": metrics, "out": out, "first": first, "second": second}


def test_a_restarted_server_app_resumes_after_the_last_saved_round(e2e: dict[str, object]) -> None:
    out: Path = e2e["out"]  # type: ignore[assignment]
    last, _, _ = load_state(out / "first")
    metrics = e2e["metrics"]
    assert last == 2
    assert metrics["started-at-round"] == 3  # type: ignore[index]
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3]  # type: ignore[index]
    assert (out / "final" / "round-3.npz").is_file() and not (
        out / "final" / "round-1.npz"
    ).exists()


def test_every_reply_passed_the_privacy_check_and_per_node_metrics_are_recorded(
    e2e: dict[str, object],
) -> None:
    metrics = e2e["metrics"]
    for record in metrics["rounds"]:  # type: ignore[index]
        assert (
            record["all-replies-passed-check"] and not record["rejected"] and not record["refused"]
        )
        assert len(record["nodes"]) == 2
        for node in record["nodes"].values():
            assert node["num-examples"] == 16 and node["train-loss"] > 0 and node["epsilon"] > 0


def test_the_epsilon_in_the_metrics_file_equals_the_nodes_ledgers_and_stays_under_the_target(
    e2e: dict[str, object], federation: tuple[LocalFederation, list[Owner]]
) -> None:
    _, owners = federation
    reported = sorted(float(n["epsilon"]) for n in e2e["metrics"]["nodes"].values())  # type: ignore[index]
    ledgers = sorted(o.ledger.job_spend(o.key, "job-e2e").epsilon for o in owners)  # type: ignore[union-attr]
    assert np.allclose(reported, ledgers, rtol=1e-9)
    assert all(e <= 8.0 + 1e-9 for e in reported) and all(e > 7.0 for e in reported)


def test_progress_is_posted_with_the_bearer_token(e2e: dict[str, object]) -> None:
    posts = _Progress.received
    assert posts and all(auth == "Bearer tok-123" for auth, _ in posts)
    assert (
        any(body.get("round") == 3 for _, body in posts) and posts[-1][1]["status"] == "completed"
    )


def test_each_round_posts_its_sample_grid_and_saves_it_for_publishing(
    e2e: dict[str, object],
) -> None:
    # Each round's report parses as one RoundRecord carrying a PNG grid (4 prompts x 1 seed
    # at the tiny base's 64 px), the same grid the ServerApp saved for the site to publish.
    rounds = [RoundRecord.from_dict(body) for _, body in _Progress.received if "round" in body]
    assert rounds and all(r.sample_grid is not None for r in rounds)
    out = Path(str(e2e["out"])) / "final"
    for record in rounds:
        assert record.sample_grid is not None
        with Image.open(io.BytesIO(record.sample_grid)) as grid:
            assert grid.size == (64, 4 * 64)
        saved_grid = out / "samples" / f"round-{record.round}" / "grid.png"
        assert saved_grid.read_bytes() == record.sample_grid
    samples = e2e["metrics"]["samples"]  # type: ignore[index]
    assert samples["prompts"] and len(samples["seconds"]) == len(rounds)
    print("sample grid seconds per round:", samples["seconds"])


def test_the_federated_adapter_lowers_the_heldout_loss_and_loads_in_both_formats(
    e2e: dict[str, object], fed_model: TinyModelPaths, heldout: Path, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionPipeline

    from federated.engine.adapter import AdapterSpec
    from federated.engine.evaluate import evaluate_adapter
    from federated.engine.trainer import load_base

    out: Path = e2e["out"]  # type: ignore[assignment]
    _, arrays, _ = load_state(out / "final")
    base = load_base(
        fed_model.diffusers_dir, device=torch.device("cpu"), dtype=torch.float32, cache_dir=tmp_path
    )
    kwargs = {
        "dataset": heldout,
        "cache_dir": tmp_path,
        "resolution": RESOLUTION,
        "model_hash": base.fingerprint,
    }
    base_loss = evaluate_adapter(base.pipe, **kwargs)
    trained = evaluate_adapter(
        base.pipe, spec=AdapterSpec(rank=1, alpha=1.0), adapter=arrays, **kwargs
    )
    print(f"held-out loss: base {base_loss:.5f}, federated {trained:.5f}")
    assert trained < base_loss

    def image(pipe: StableDiffusionPipeline) -> np.ndarray:
        pipe.set_progress_bar_config(disable=True)
        result = pipe(
            "a photo of sks red circle",
            height=64,
            width=64,
            num_inference_steps=4,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )
        return np.asarray(result.images[0])

    reference = image(StableDiffusionPipeline.from_pretrained(fed_model.diffusers_dir))
    final = e2e["metrics"]["final"]  # type: ignore[index]
    for path in (Path(final["diffusers"]), Path(final["kohya"])):
        pipe = StableDiffusionPipeline.from_pretrained(fed_model.diffusers_dir)
        pipe.load_lora_weights(str(path.parent), weight_name=path.name)
        assert np.abs(image(pipe) - reference).max() > 0, path


def test_a_node_refuses_a_round_past_its_budget_even_when_the_server_asks(
    federation: tuple[LocalFederation, list[Owner]],
    fed_model: TinyModelPaths,
    tmp_path: Path,
    e2e: dict[str, object],
) -> None:
    fed, owners = federation
    before = [(o.ledger.spent(o.key), o.ledger.job_spend(o.key, "job-greedy")) for o in owners]
    outcome = fed.run(
        run_config(
            tmp_path,
            fed_model,
            **{"num-server-rounds": 1, "dp-target-epsilon": BUDGET_EPSILON, "job-id": "job-greedy"},
        ),
        timeout=200,
    )
    assert outcome.status == "finished:failed"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "privacy_budget_exceeded" in metrics["reason"]
    assert [
        (o.ledger.spent(o.key), o.ledger.job_spend(o.key, "job-greedy")) for o in owners
    ] == before
    assert all(spend is None for _, spend in before)


@pytest.mark.parametrize(("min_nodes", "completes"), [(1, True), (2, False)])
def test_a_supernode_killed_mid_round(
    tmp_path: Path, fed_model: TinyModelPaths, min_nodes: int, completes: bool
) -> None:
    owners = make_owners(tmp_path, fed_model)
    with LocalFederation(
        [o.spec for o in owners], tmp_path / "fed", node_config=TEST_NODE_CONFIG
    ) as fed:
        run_id = fed.submit(
            run_config(
                tmp_path / "out",
                fed_model,
                **{
                    "num-server-rounds": 1,
                    "min-nodes": min_nodes,
                    "round-timeout": 30.0,  # the survivor needs seconds; the dead one is waited out
                    # a few steps: node 1 is killed while its warm ClientApp trains (seconds)
                    "local-steps": 4,
                    "job-id": f"job-kill-{min_nodes}",
                },
            )
        )
        # Node 1's warm executor forked the ClientApp for the train message: kill the node
        log = tmp_path / "fed" / "logs" / "supernode-1-exec.log"
        deadline = time.monotonic() + 300  # last resort against a hang
        while "ClientApp in process" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, fed.logs()
            assert fed.node_procs[1].proc.poll() is None, fed.logs()["supernode-1"]
            time.sleep(0.05)
        fed.kill_node(1)
        outcome = fed.wait(run_id, timeout=240)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    if completes:
        assert outcome.ok, outcome.details
        assert metrics["rounds"][0]["accepted"] == 1
    else:
        assert outcome.status == "finished:failed"
        assert "min-nodes is 2" in metrics["reason"]


def test_secagg_mode_aggregates_the_masked_adapters_and_records_each_node(
    federation: tuple[LocalFederation, list[Owner]], fed_model: TinyModelPaths, tmp_path: Path
) -> None:
    fed, owners = federation
    config = run_config(
        tmp_path,
        fed_model,
        **{
            "num-server-rounds": 1,
            "aggregation": "secagg",
            "job-id": "job-sa",
            "prepare-timeout": 120.0,  # the readiness step before the legacy workflow
        },
    )
    outcome = fed.run(config, timeout=300)
    assert outcome.ok, outcome.details
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["aggregation"] == "secagg" and metrics["rounds"][0]["accepted"] == 2
    assert len(metrics["prepare"]["ready"]) == 2 and metrics["prepare"]["failed"] == {}
    manifests = {o.manifest for o in owners}
    assert set(metrics["rounds"][0]["node-datasets"].values()) == manifests
    from safetensors import safe_open

    with safe_open(metrics["final"]["kohya"], framework="np") as lora:
        listed = json.loads(lora.metadata()["ss_dataset_manifest_hashes"])
    assert set(listed) == manifests  # the LoRA names the datasets (SecAgg+ too)
    _, arrays, _ = load_state(tmp_path)
    assert all(np.isfinite(a).all() for a in arrays.values()) and any(
        a.any() for a in arrays.values()
    )
    assert Path(metrics["final"]["kohya"]).is_file()
    assert (tmp_path / "samples" / "round-1" / "grid.png").is_file()  # SecAgg+ draws it too
    ledgers = sorted(o.ledger.job_spend(o.key, "job-sa").epsilon for o in owners)  # type: ignore[union-attr]
    assert np.allclose(sorted(float(n["epsilon"]) for n in metrics["nodes"].values()), ledgers)
