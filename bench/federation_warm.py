"""Fixed cost per round and federation / one process, on warm nodes (issue #14).

    HF_HUB_OFFLINE=1 python bench/federation_warm.py [--rounds 3] [--local-steps 2]
        [--modes warm] [--grid on] [--node-poll 0.5] [--out bench-federation-warm.json]

The same tiny-model run (2 SuperNodes with TLS and node authentication, DP on) per mode, on a
fresh local federation (:class:`federated.engine.localfed.LocalFederation`): ``fresh-process``
is Flower's default executor (a ``flwr-clientapp`` process per message), ``warm`` the
node's warm executor (``client.warm_exec``, what ``atelier node start`` runs). ``--node-poll``
is the SuperNodes' idle poll of the SuperLink (``fast_supernode``; 0: Flower's own 3 s).

Measured per round: its wall time in the ServerApp (send to aggregated), the slower node's
``train_round`` seconds, their difference ("fixed": what federation adds to a round), each
message's seconds on the node outside ``train_round``, and the ServerApp's phases (waiting for
replies, aggregate and save, sample grid and report: the grid of round N is drawn while round
N+1 trains). Reference in the same run: the same steps (2 datasets x rounds x local steps)
with ``train_round`` in this one process, model loaded and caches warm ("central"). Prints
the fixed cost per round (target: at most 2 s on the tiny model) and federated / central
(target: at most 1.15x), for the rounds alone and for the whole run (ServerApp start, model
load, LoRA export included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def per_round(out: Path) -> list[dict[str, Any]]:
    metrics = json.loads((out / "metrics.json").read_text())
    rounds = []
    phases = {int(p["round"]): p for p in metrics.get("round-phases", [])}
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
                "server-phases": phases.get(int(record["round"]), {}),
            }
        )
    return rounds


def central_seconds(specs: list[Any], config: dict[str, object], root: Path) -> float:
    """The same steps in this process: each round, each dataset, ``train_round`` (warm)."""
    import torch

    from federated.engine.flower.settings import train_config_from_run_config
    from federated.engine.ledger import PrivacyLedger
    from federated.engine.trainer import load_base, train_round

    torch.set_num_threads(1)
    train_config = train_config_from_run_config(config)
    model = Path(str(config["base-model-path"]))
    load_base(model, device=torch.device("cpu"), dtype=torch.float32, cache_dir=root)
    ledger = PrivacyLedger(root / "ledger.db")
    for spec in specs:
        ledger.set_budget(str(spec.dataset_path.resolve()), epsilon=1e6, delta=0.5)
    for spec in specs:  # warm: caches built, first DP step paid (a node's prepare does the first)
        train_round(
            train_config,
            base_model=model,
            dataset=spec.dataset_path,
            cache_dir=root,
            adapter_in=None,
            accountant_state=None,
            ledger=ledger,
            job_id="warm-up",
        )
    started = time.perf_counter()
    adapter = None
    for r in range(1, int(str(config["num-server-rounds"])) + 1):
        results = [
            train_round(
                train_config,
                base_model=model,
                dataset=spec.dataset_path,
                cache_dir=root,
                adapter_in=adapter,
                accountant_state=None,
                ledger=ledger,
                job_id=f"central-{index}",
                round_index=r,
            )
            for index, spec in enumerate(specs)
        ]
        adapter = results[-1].adapter
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=2)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--modes", default="warm", help="comma-separated: fresh-process, warm")
    parser.add_argument("--grid", choices=("on", "off"), default="on", help="per-round grid")
    parser.add_argument("--node-poll", type=float, default=0.5, help="0: Flower's own 3 s")
    parser.add_argument("--out", type=Path, default=Path("bench-federation-warm.json"))
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in ("fresh-process", "warm") for m in modes):
        parser.error("--modes takes fresh-process and/or warm")

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
            root / f"owner-{i}" / "data", n_images=args.images, seed=20 + i, resolution=32
        )
        ledger = root / f"owner-{i}" / "ledger.db"
        PrivacyLedger(ledger).set_budget(str(data.resolve()), epsilon=1e6, delta=0.5)
        specs.append(NodeSpec(data, root / f"owner-{i}" / "cache", ledger, model.diffusers_dir))
    config: dict[str, object] = {
        "num-server-rounds": args.rounds,
        "min-nodes": 2,
        "round-timeout": 1200.0,
        "local-steps": args.local_steps,
        "batch-size": 16,
        "lr": 0.1,
        "rank": 1,
        "alpha": 1.0,
        "resolution": 32,
        "dp-noise-multiplier": 1.0,
        "dp-max-grad-norm": 0.05,
        "base-model-path": str(model.diffusers_dir),
        "sample-grid": args.grid == "on",
    }
    load = [os.getloadavg()[0]]
    central = central_seconds(specs, config, root / "central")
    print(f"central        {central:6.1f} s for the same steps in one process", flush=True)
    report: dict[str, Any] = {"settings": vars(args) | {"out": str(args.out)}, "central": central}
    for mode in modes:
        with LocalFederation(
            specs,
            root / f"fed-{mode}",
            executor="warm" if mode == "warm" else "flower",
            node_poll=args.node_poll or None,
        ) as fed:
            out = root / f"out-{mode}"
            started = time.perf_counter()
            outcome = fed.run(
                {**config, "out-dir": str(out), "job-id": f"bench-{mode}"}, timeout=3000
            )
            wall = time.perf_counter() - started
            if not outcome.ok:
                raise SystemExit(f"{mode}: {outcome.status} {outcome.details}")
            rounds = per_round(out)
        load.append(os.getloadavg()[0])
        fixed = statistics.median(float(r["fixed"]) for r in rounds)
        outside = statistics.median(x for r in rounds for x in r["message-outside-train"])
        round_sum = sum(float(r["wall"] or 0) for r in rounds)
        report[mode] = {
            "wall": wall,
            "rounds": rounds,
            "fixed": fixed,
            "outside": outside,
            "rounds-seconds": round_sum,
            "ratio-rounds-over-central": round_sum / central,
            "ratio-run-over-central": wall / central,
        }
        print(
            f"{mode:14s} run {wall:6.1f} s, rounds {round_sum:6.1f} s; per round: fixed "
            f"{fixed:5.2f} s (median), per message outside train_round {outside:5.2f} s",
            flush=True,
        )
        for r in rounds:
            print(f"  round {r['round']}: {json.dumps(r, default=str)}", flush=True)
        print(
            f"RATIO {mode} federated/central: rounds {round_sum / central:.2f}x, "
            f"whole run {wall / central:.2f}x; fixed per round {fixed:.2f} s",
            flush=True,
        )
    report["load-average"] = load
    print(f"load average (start, after each mode): {', '.join(f'{x:.1f}' for x in load)}")
    args.out.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
