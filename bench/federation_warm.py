"""Fixed cost per round: Flower's executor (a fresh ``flwr-clientapp`` process per message)
vs Atelier's warm executor (``client.warm_exec``: imports once, a forked child per message).

    HF_HUB_OFFLINE=1 python bench/federation_warm.py [--rounds 2] [--local-steps 2]
        [--out bench-federation-warm.json]

The same tiny-model run (2 SuperNodes with TLS and node authentication, DP on) twice, on one
SuperLink: first with SuperNodes in Flower's default ``subprocess`` isolation, then with
SuperNodes in ``process`` isolation, each served by a warm executor. Per round: the round's
wall time minus the slower node's ``train_round`` seconds ("fixed"), and each message's
seconds outside ``train_round`` on the node. Prints the medians and their ratio (target: at
most 2 s fixed per round on the tiny model, issue #14).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def start_warm_nodes(fed: Any, specs: Sequence[Any]) -> None:
    """SuperNodes in ``process`` isolation, each with a warm executor on its runtime API."""
    from federated.engine.localfed import _BIN, _wait_port, free_port

    for index, spec in enumerate(specs):
        fed.register_node(index)
        port = free_port()
        home = fed.workdir / f"warm-node-{index}" / "flwr-home"
        argv = [
            str(_BIN / "flower-supernode"),
            "--root-certificates",
            str(fed.certs.ca_cert),
            "--auth-supernode-private-key",
            str(fed.node_key(index).private_key),
            "--superlink",
            f"127.0.0.1:{fed.port}",
            "--port",
            str(port),
            "--isolation",
            "process",
            "--node-config",
            spec.node_config(),
        ]
        node = fed._spawn(f"warm-supernode-{index}", argv, home)
        _wait_port(port, node.proc, node.log)
        exec_argv = [
            sys.executable,
            "-m",
            "client.warm_exec",
            "--runtime-api-address",
            f"127.0.0.1:{port}",
        ]
        fed._spawn(f"warm-exec-{index}", exec_argv, home)


def per_round(out: Path) -> list[dict[str, Any]]:
    metrics = json.loads((out / "metrics.json").read_text())
    rounds = []
    for record in metrics.get("rounds", []):
        nodes = list(record.get("nodes", {}).values())
        train = max((float(n.get("seconds", 0)) for n in nodes), default=0.0)
        rounds.append(
            {
                "round": record["round"],
                "wall": record.get("seconds"),
                "train-max": train,
                "fixed": float(record.get("seconds") or 0) - train,
                "message-outside-train": [
                    float(n["message-seconds"]) - float(n.get("seconds", 0))
                    for n in nodes
                    if "message-seconds" in n
                ],
            }
        )
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-federation-warm.json"))
    args = parser.parse_args()

    import os

    from federated.engine.ledger import PrivacyLedger
    from federated.engine.localfed import LocalFederation, NodeSpec
    from federated.engine.synthetic import generate_synthetic_dataset
    from sdcore.tiny import save_tiny_model

    root = Path(tempfile.mkdtemp(prefix="bench-warm-"))
    model = save_tiny_model(root / "model")
    specs = []
    for i in range(2):
        data = generate_synthetic_dataset(
            root / f"owner-{i}" / "data", n_images=16, seed=20 + i, resolution=32
        )
        ledger = root / f"owner-{i}" / "ledger.db"
        PrivacyLedger(ledger).set_budget(str(data.resolve()), epsilon=1e6, delta=0.5)
        specs.append(NodeSpec(data, root / f"owner-{i}" / "cache", ledger, model.diffusers_dir))
    config: dict[str, object] = {
        "num-server-rounds": args.rounds,
        "min-nodes": 2,
        "round-timeout": 1200.0,
        "prepare-timeout": 0.0,
        "local-steps": args.local_steps,
        "batch-size": 16,
        "lr": 0.1,
        "rank": 1,
        "alpha": 1.0,
        "resolution": 32,
        "dp-noise-multiplier": 1.0,
        "dp-max-grad-norm": 0.05,
        "base-model-path": str(model.diffusers_dir),
    }
    report: dict[str, object] = {"settings": vars(args) | {"out": str(args.out)}}
    for mode in ("fresh-process", "warm"):
        with LocalFederation(specs, root / f"fed-{mode}", start_nodes=mode != "warm") as fed:
            if mode == "warm":
                start_warm_nodes(fed, specs)
            out = root / f"out-{mode}"
            started = time.perf_counter()
            outcome = fed.run(
                {**config, "out-dir": str(out), "job-id": f"bench-{mode}"}, timeout=3000
            )
            wall = time.perf_counter() - started
            if not outcome.ok:
                raise SystemExit(f"{mode}: {outcome.status} {outcome.details}")
            rounds = per_round(out)
        fixed = statistics.median(float(r["fixed"]) for r in rounds)
        outside = statistics.median(x for r in rounds for x in r["message-outside-train"])
        report[mode] = {"wall": wall, "rounds": rounds, "fixed": fixed, "outside": outside}
        print(
            f"{mode:14s} run {wall:6.1f} s; per round: fixed {fixed:5.1f} s, "
            f"per message outside train_round {outside:5.1f} s",
            flush=True,
        )
    cold, warm = report["fresh-process"], report["warm"]
    ratio = cold["fixed"] / max(warm["fixed"], 1e-6)  # type: ignore[index]
    print(f"fixed cost per round, fresh process / warm: {ratio:.1f}x")
    print(f"load average {os.getloadavg()[0]:.1f}")
    args.out.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
