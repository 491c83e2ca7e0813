"""The release check in the privacy audit (issue #17): a memorising job is vetoed, its DP twin not.

Two owners with small private datasets of the shapes base's held-out concept (``--owner-images``
scenes for owner 0; ``--other-images`` other scenes for owner 1 and, with ``--shared``, copies of
owner 0's, as when the same pictures circulate: the setting in which a LoRA without DP memorises
its images) train the same LoRA twice, identical but for DP:

- ``nodp``: on real SuperNodes (they keep a privacy ledger, so they train only with DP-SGD) a
  noise multiplier of ``--nodp-sigma`` (0.005: about nothing; the accounted epsilon is
  astronomical); in-process, plain training (no DP);
- ``dp<eps>``: DP-SGD at that target epsilon (delta 1e-5, clipping norm ``--clip``).

``--federation real`` (the default): one ``flower-superlink`` and two ``flower-supernode``
processes (``LocalFederation``: TLS, node authentication, each node its own ledger), the job
submitted with ``flwr run``; the release step is the real one: the ServerApp sends the final
adapter to both nodes, each runs its release check (owner's threshold: the default), the run
ends ``withheld`` or exported. ``--federation inprocess``: ``train_round`` per owner and
``fedavg`` in this process, then :func:`node_release_check` for each owner, as a node runs it.

Each node's own record (``<cache>/jobs/<job>/release-check.json``, which never leaves a real
node; the auditor reads it here) gives the reproduction score (the share of its samples that
copy one of its images relative to the base alone and to its other images), the copies and the
best copy margin; the verdict at each of ``--thresholds`` follows from the score as on the node.

    python bench/release_audit.py                       # real federation, nodp and dp8
    python bench/release_audit.py --federation inprocess --variants nodp,dp8,dp2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


from federated.engine.release_check import (  # noqa: E402
    COPY_MARGIN,
    DEFAULT_THRESHOLD,
    MIN_THRESHOLD,
    vetoes,
)
from federated.engine.synthetic import generate_concept_dataset  # noqa: E402
from sdcore.shapes import SHAPES_MODEL_DIR  # noqa: E402

DELTA = 1e-5


def verdicts(score: float, thresholds: list[float]) -> dict[str, str]:
    """The node's verdict at each threshold: veto when the share of copies is above it."""
    return {f"{t:g}": ("veto" if vetoes(score, t) else "allow") for t in thresholds}


def separating_thresholds(
    scores: dict[str, float], *, vetoed: list[str], allowed: list[str]
) -> tuple[float, float] | None:
    """The owner thresholds ``t`` with ``low <= t < high`` at which every ``vetoed`` job is
    vetoed (score above t) and every ``allowed`` job let through (score at most t), as
    ``(low, high)``: low the highest ``allowed`` score, high the lowest ``vetoed`` score; None
    when the scores do not separate."""
    low = max(scores[n] for n in allowed)
    high = min(scores[n] for n in vetoed)
    return (low, high) if high > low else None


def _variants(spec: str) -> list[tuple[str, float | None]]:
    out: list[tuple[str, float | None]] = []
    for name in (n.strip() for n in spec.split(",")):
        if name == "nodp":
            out.append((name, None))
        elif name.startswith("dp") and name[2:]:
            out.append((name, float(name[2:])))
        elif name:
            raise SystemExit(f"unknown variant {name!r} (nodp, dp<epsilon>)")
    return out


def _run_config(a: argparse.Namespace, epsilon: float | None) -> dict[str, object]:
    config: dict[str, object] = {
        "num-server-rounds": 1,
        "min-nodes": 2,
        "round-timeout": 1800.0,
        "release-check-timeout": 1200.0,
        "local-steps": a.local_steps,
        "batch-size": a.batch,
        "lr": a.lr,
        "rank": a.rank,
        "alpha": float(a.rank),
        "resolution": 64,
        "seed": 0,
        "dp-delta": DELTA,
        "dp-max-grad-norm": a.clip,
        "base-model-path": str(a.base),
        "sample-grid": False,
    }
    if epsilon is None:
        config["dp-noise-multiplier"] = a.nodp_sigma
    else:
        config["dp-target-epsilon"] = epsilon
    return config


def _record(cache: Path, job: str) -> dict[str, Any]:
    from federated.engine.flower.task import _safe

    path = cache / "jobs" / _safe(job) / "release-check.json"
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _real(
    a: argparse.Namespace, datasets: list[Path], work: Path, job: str, epsilon: float | None
) -> dict[str, object]:
    from federated.engine.ledger import PrivacyLedger
    from federated.engine.localfed import LocalFederation, NodeSpec

    specs = []
    for i, data in enumerate(datasets):
        node = work / job / f"node-{i}"
        node.mkdir(parents=True, exist_ok=True)
        PrivacyLedger(node / "ledger.db").set_budget(str(data.resolve()), epsilon=1e12, delta=0.5)
        extra = {"release-samples": str(a.samples)}
        specs.append(NodeSpec(data, node / "cache", node / "ledger.db", a.base, extra=extra))
    out = work / job / "server"
    started = time.perf_counter()
    with LocalFederation(specs, work / job / "fed") as fed:
        outcome = fed.run(
            {**_run_config(a, epsilon), "out-dir": str(out), "job-id": job}, timeout=3600
        )
        if not outcome.ok:
            raise SystemExit(f"{job}: {outcome.status} {outcome.details}\n{fed.logs()}"[-6000:])
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    spend = PrivacyLedger(specs[0].ledger_path).job_spend(str(datasets[0].resolve()), job)
    return {
        "status": metrics.get("status"),
        "release_check": metrics.get("release-check"),
        "exported": (out / "lora").exists(),
        "epsilon_accounted": float(spend.epsilon) if spend is not None else None,
        "nodes": [_record(spec.cache_dir, job) for spec in specs],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _inprocess(
    a: argparse.Namespace, datasets: list[Path], work: Path, job: str, epsilon: float | None
) -> dict[str, object]:
    from federated.engine.adapter import AdapterSpec
    from federated.engine.dp import DPConfig
    from federated.engine.flower.aggregate import fedavg
    from federated.engine.flower.release_node import node_release_check
    from federated.engine.trainer import TrainConfig, train_round

    started = time.perf_counter()
    dp = (
        None
        if epsilon is None
        else DPConfig(
            target_epsilon=epsilon, target_delta=DELTA, planned_rounds=1, max_grad_norm=a.clip
        )
    )
    config = TrainConfig(
        resolution=64,
        adapter=AdapterSpec(rank=a.rank, alpha=float(a.rank), mode="lora"),
        learning_rate=a.lr,
        batch_size=a.batch,
        local_steps=a.local_steps,
        seed=0,
        dp=dp,
        device="cpu",
        mixed_precision="no",
    )
    results = [
        train_round(
            config,
            base_model=a.base,
            dataset=data,
            cache_dir=work / job / f"node-{i}",
            adapter_in=None,
            accountant_state=None,
            ledger=None,
            job_id=job,
        )
        for i, data in enumerate(datasets)
    ]
    arrays = fedavg([(r.adapter, r.num_examples) for r in results])
    run_config = {
        "job-id": job,
        "resolution": 64,
        "rank": a.rank,
        "alpha": float(a.rank),
        "seed": 0,
        "base-model-path": str(a.base),
    }
    nodes = []
    for i, data in enumerate(datasets):
        cache = work / job / f"node-{i}"
        node_release_check(
            run_config=run_config,
            node_config={
                "dataset-path": str(data),
                "cache-dir": str(cache),
                "ledger-path": str(cache / "ledger.db"),
                "base-model-path": str(a.base),
                "release-samples": str(a.samples),
            },
            arrays=arrays,
        )
        nodes.append(_record(cache, job))
    vetoed = sum(n["verdict"] == "veto" for n in nodes)
    return {
        "status": "withheld" if vetoed else "completed",
        "release_check": {"asked": len(nodes), "vetoed": vetoed},
        "exported": None,
        "epsilon_accounted": results[0].epsilon,
        "nodes": nodes,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--federation", choices=("real", "inprocess"), default="real")
    parser.add_argument("--variants", default="nodp,dp8")
    parser.add_argument("--owner-images", type=int, default=2, help="owner 0's scenes")
    parser.add_argument("--other-images", type=int, default=1, help="owner 1's own scenes")
    parser.add_argument(
        "--shared",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="owner 1 also holds copies of owner 0's scenes (pictures that circulate)",
    )
    parser.add_argument("--local-steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--clip", type=float, default=1.0, help="DP clipping norm")
    parser.add_argument("--nodp-sigma", type=float, default=0.005)
    parser.add_argument("--samples", type=int, default=8, help="each node's release-samples")
    parser.add_argument("--thresholds", default=f"{MIN_THRESHOLD:g},{DEFAULT_THRESHOLD:g},0.5,0.75")
    parser.add_argument("--base", type=Path, default=SHAPES_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "release_audit.json")
    a = parser.parse_args(argv)
    thresholds = [float(t) for t in a.thresholds.split(",")]
    report: dict[str, object] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
        "copy_margin": COPY_MARGIN,
        "default_threshold": DEFAULT_THRESHOLD,
        "cpus": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": [],
    }
    rows: list[dict[str, object]] = report["rows"]  # type: ignore[assignment]
    work = Path(tempfile.mkdtemp(prefix="atelier-release-audit-"))
    try:
        datasets = [
            generate_concept_dataset(work / "owner-0", n_images=a.owner_images, seed=1),
            generate_concept_dataset(work / "owner-1", n_images=a.other_images, seed=2),
        ]
        if a.shared:  # owner 1 also holds copies of owner 0's pictures (as the test's owners)
            for i, png in enumerate(sorted(datasets[0].glob("*.png"))):
                for suffix in (".png", ".txt"):
                    name = f"shared-{i:05d}{suffix}"
                    shutil.copy(png.with_suffix(suffix), datasets[1] / name)
        for name, epsilon in _variants(a.variants):
            job = f"release-audit-{name}"
            run = _real if a.federation == "real" else _inprocess
            result = run(a, datasets, work, job, epsilon)
            nodes: list[dict[str, Any]] = result.pop("nodes")  # type: ignore[assignment]
            row: dict[str, object] = {
                "variant": name,
                "federation": a.federation,
                "epsilon_target": epsilon,
                **result,
                "owners": [
                    {
                        k: n[k]
                        for k in (
                            "verdict",
                            "score",
                            "copies",
                            "samples",
                            "best_margin",
                            "threshold",
                            "margins",
                        )
                        if k in n
                    }
                    for n in nodes
                ],
                "verdicts_owner0": verdicts(float(nodes[0]["score"]), thresholds),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            a.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    scores = {
        str(r["variant"]): float(r["owners"][0]["score"])  # type: ignore[index]
        for r in rows
    }
    nodp = [k for k in scores if k == "nodp"]
    private = [k for k in scores if k.startswith("dp")]
    separation = (
        separating_thresholds(scores, vetoed=nodp, allowed=private) if nodp and private else None
    )
    report["separation_nodp_vetoed_dp_allowed"] = list(separation) if separation else None
    report["load_average_at_end"] = round(os.getloadavg()[0], 2)
    a.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"owner thresholds t (low <= t < high) that veto no DP and allow DP: {separation}")
    print(table(rows, thresholds))
    return report


def table(rows: list[dict[str, object]], thresholds: list[float]) -> str:
    head = " | ".join(f"owner 0 at {t:g}" for t in thresholds)
    lines = [
        "| job | federation | epsilon accounted | run ended | owner 0: copies / samples "
        f"(score) | owner 0: best margin | owner 1: copies / samples | {head} |",
        "| --- | --- | --- | --- | --- | --- | --- | "
        + " | ".join("---" for _ in thresholds)
        + " |",
    ]
    for row in rows:
        eps = row["epsilon_accounted"]
        assert eps is None or isinstance(eps, float | int)
        eps_text = "- (none)" if eps is None else (f"{eps:.3g}" if eps < 1e4 else f"{eps:.2e}")
        owners: list[dict[str, Any]] = row["owners"]  # type: ignore[assignment]
        o0, o1 = owners[0], owners[1]
        verdict: dict[str, str] = row["verdicts_owner0"]  # type: ignore[assignment]
        lines.append(
            f"| {row['variant']} | {row['federation']} | {eps_text} | {row['status']} "
            f"| {o0['copies']} / {o0['samples']} ({o0['score']:.3f}) | {o0['best_margin']:.3f} "
            f"| {o1['copies']} / {o1['samples']} | "
            + " | ".join(verdict[f"{t:g}"] for t in thresholds)
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
