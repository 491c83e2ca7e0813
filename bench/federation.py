"""Federated LoRA on a real local federation vs the same steps in one process.

    HF_HUB_OFFLINE=1 python bench/federation.py [--rounds 3] [--local-steps 8] [--resolution 32]
        [--images 16] [--secagg] [--out bench-federation.json]

It runs fedavg, fedavg with transport="packed" and, with --secagg, SecAgg+.

Prints (and writes as JSON):
- wall time of a 2-node federated run (ServerApp start to finish, from ``flwr ls``) against
  the same total steps trained in this one process with ``train_round`` (ratio);
- per-round fixed cost: round wall time minus the slower node's ``train_round`` seconds,
  and each ClientApp message's seconds outside ``train_round`` (imports, model load);
- bytes per round per node (``flwr ls`` network traffic) against the adapter's raw size and
  the full UNet's size; the same for SecAgg+ with ``--secagg``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--secagg", action="store_true")
    parser.add_argument("--no-packed", action="store_true", help="skip the packed-transport run")
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--out", default="bench-federation.json")
    args = parser.parse_args()

    from federated.engine.flower.settings import train_config_from_run_config
    from federated.engine.ledger import PrivacyLedger
    from federated.engine.localfed import LocalFederation, NodeSpec
    from federated.engine.synthetic import generate_synthetic_dataset
    from federated.engine.trainer import load_base, train_round
    from sdcore.tiny import save_tiny_model

    root = Path(tempfile.mkdtemp(prefix="bench-fed-"))
    model = save_tiny_model(root / "model")
    specs = []
    for i in range(2):
        data = generate_synthetic_dataset(
            root / f"owner-{i}" / "data",
            n_images=args.images,
            seed=20 + i,
            resolution=args.resolution,
        )
        ledger = root / f"owner-{i}" / "ledger.db"
        PrivacyLedger(ledger).set_budget(str(data.resolve()), epsilon=1e6, delta=0.5)
        specs.append(NodeSpec(data, root / f"owner-{i}" / "cache", ledger, model.diffusers_dir))
    base_config: dict[str, object] = {
        "num-server-rounds": args.rounds,
        "min-nodes": 2,
        "round-timeout": 1200.0,
        "local-steps": args.local_steps,
        "batch-size": args.batch_size,
        "lr": 0.1,
        "rank": args.rank,
        "alpha": float(args.rank),
        "resolution": args.resolution,
        "dp-noise-multiplier": 1.0,
        "dp-max-grad-norm": 0.05,
        "base-model-path": str(model.diffusers_dir),
    }

    # The same total steps in one process (model loaded once, latent caches warm as on nodes).
    torch.set_num_threads(1)
    config = train_config_from_run_config(base_config)
    load_base(
        model.diffusers_dir,
        device=torch.device("cpu"),
        dtype=torch.float32,
        cache_dir=root / "central",
    )
    central_ledger = PrivacyLedger(root / "central" / "ledger.db")
    for spec in specs:
        central_ledger.set_budget(str(spec.dataset_path.resolve()), epsilon=1e6, delta=0.5)
    started = time.perf_counter()
    adapter = None
    for r in range(1, args.rounds + 1):
        for spec in specs:
            result = train_round(
                config,
                base_model=model.diffusers_dir,
                dataset=spec.dataset_path,
                cache_dir=root / "central",
                adapter_in=adapter,
                accountant_state=None,
                ledger=central_ledger,
                job_id="central",
                round_index=r,
            )
        adapter = result.adapter
    central = time.perf_counter() - started
    adapter_bytes = sum(v.nbytes for v in result.adapter.values())
    unet_bytes = sum(
        p.numel() * 4
        for p in load_base(
            model.diffusers_dir,
            device=torch.device("cpu"),
            dtype=torch.float32,
            cache_dir=root / "central",
        ).pipe.unet.parameters()
    )

    report: dict[str, object] = {
        "settings": vars(args),
        "central-seconds": central,
        "adapter-bytes": adapter_bytes,
        "unet-bytes": unet_bytes,
    }
    modes: dict[str, dict[str, object]] = {"fedavg": {}}
    if not args.no_packed:
        modes["fedavg-packed"] = {"transport": "packed"}
    if args.secagg:
        modes["secagg"] = {"aggregation": "secagg"}
    with LocalFederation(specs, root / "fed") as fed:
        for mode, overrides in modes.items():
            out = root / f"out-{mode}"
            outcome = fed.run(
                {**base_config, **overrides, "out-dir": str(out), "job-id": f"bench-{mode}"},
                timeout=3000,
            )
            metrics = (
                json.loads((out / "metrics.json").read_text())
                if (out / "metrics.json").exists()
                else {}
            )
            traffic = dict(outcome.info.get("network-traffic", {}))  # type: ignore[call-overload]
            per_round = []
            for record in metrics.get("rounds", []):
                nodes = record.get("nodes", {}).values()
                train = max((float(n.get("seconds", 0)) for n in nodes), default=0.0)
                message = [
                    float(n.get("message-seconds", 0)) - float(n.get("seconds", 0))
                    for n in nodes
                    if "message-seconds" in n
                ]
                per_round.append(
                    {
                        "round": record["round"],
                        "wall": record.get("seconds"),
                        "train-max": train,
                        "fixed": (record.get("seconds") or 0) - train,
                        "message-outside-train": message,
                    }
                )
            inbound = float(traffic.get("inbound-bytes", 0)) / (args.rounds * 2)
            outbound = float(traffic.get("outbound-bytes", 0)) / (args.rounds * 2)
            report[mode] = {
                "status": outcome.status,
                "details": outcome.details,
                "serverapp-seconds": outcome.info.get("elapsed"),
                "ratio-vs-central": float(outcome.info.get("elapsed", 0)) / central,
                "rounds": per_round,
                "traffic": traffic,
                "inbound-bytes-per-round-per-node": inbound,
                "outbound-bytes-per-round-per-node": outbound,
                "inbound-vs-adapter": inbound / adapter_bytes,
                "outbound-vs-adapter": outbound / adapter_bytes,
                "unet-vs-adapter": unet_bytes / adapter_bytes,
            }
            print(json.dumps({mode: report[mode]}, indent=2, default=str), flush=True)
    print(f"central (one process, same steps): {central:.1f} s")
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
