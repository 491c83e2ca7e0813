"""The node's release check on the privacy audit's adapters (issue #17).

For each adapter ``bench/privacy_audit.py --keep DIR`` saved (no DP, DP at each epsilon; the
in-process and the real-federation runs), and for the base alone (the same adapter with every
array zero: the floor), this runs :func:`federated.engine.flower.release_node.node_release_check`,
the function a SuperNode's ClientApp calls on a ``release-check`` message, with owner 0's node
config: its private dataset regenerated exactly as the audit built it (8 concept scenes of seed
100 + the 36 of 64 canaries of seed 0 whose coins came up, same file names), the shapes base,
one job id for every row (``--job-id``: it picks which 8 captions are prompted, so every
adapter is prompted with the same captions and seeds).

The node draws ``--samples`` images (8, the node default; 44 = every caption of owner 0 once)
and returns its best thumbnail SSIM against its private images; the verdict at each threshold
in ``--thresholds`` follows from that score exactly as on the node (veto when best >= threshold).
The auditor (not the node) also says whether the best match was a canary and whether it was
one of the inserted ones.

    python bench/release_audit.py --keep /tmp/audit-keep --keep-real /tmp/audit-keep-real
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

import numpy as np  # noqa: E402

from federated.audit.canaries import insert_canaries, make_canaries  # noqa: E402
from federated.engine.release_check import DEFAULT_THRESHOLD, MIN_THRESHOLD  # noqa: E402
from federated.engine.synthetic import generate_concept_dataset  # noqa: E402
from sdcore.shapes import SHAPES_MODEL_DIR  # noqa: E402

# the audit's accounted epsilon per kept adapter (bench/privacy_audit.json)
AUDIT_JSON = ROOT / "bench" / "privacy_audit.json"


def verdicts(best: float, thresholds: list[float]) -> dict[str, str]:
    """The node's verdict at each threshold: veto when the best score reaches it."""
    return {f"{t:g}": ("veto" if best >= t else "allow") for t in thresholds}


def separating_thresholds(
    scores: dict[str, float], *, vetoed: list[str], allowed: list[str]
) -> tuple[float, float] | None:
    """The half-open range [low, high) of owner thresholds above ``low`` (the best ``allowed``
    score) and at most ``high`` (the lowest ``vetoed`` score) at which every ``vetoed`` job is
    vetoed and every ``allowed`` job let through; None when the scores do not separate."""
    low = max(scores[n] for n in allowed)
    high = min(scores[n] for n in vetoed)
    return (low, high) if high > low else None


def owner0_dataset(work: Path, *, seed: int, canaries: int, owner_images: int) -> Path:
    """Owner 0's private dataset as bench/privacy_audit.py inserted it."""
    own = generate_concept_dataset(work / "owner-0-own", n_images=owner_images, seed=100)
    data, canary_set = insert_canaries(
        own, work / "owner-0", make_canaries(canaries, seed=seed), include_seed=seed
    )
    print(
        f"owner 0: {owner_images} own images + {sum(canary_set.members)} of "
        f"{canary_set.count} canaries",
        flush=True,
    )
    return data


def _eps_accounted(audit: dict[str, Any], federation: str, name: str) -> float | None:
    row = audit.get(federation, {}).get("results", {}).get(name)
    return None if row is None else row.get("epsilon_accounted")


def main(argv: list[str] | None = None) -> dict[str, object]:
    from federated.engine.flower.release_node import node_release_check

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, default=Path("/tmp/audit-keep"))
    parser.add_argument("--keep-real", type=Path, default=Path("/tmp/audit-keep-real"))
    parser.add_argument("--variants", default="base,nodp,dp8,dp2")
    parser.add_argument("--samples", default="8", help="comma list: the node's release-samples")
    parser.add_argument("--thresholds", default=f"{DEFAULT_THRESHOLD:g},0.6,0.5,{MIN_THRESHOLD:g}")
    parser.add_argument("--base", type=Path, default=SHAPES_MODEL_DIR)
    parser.add_argument("--job-id", default="audit-release-check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--canaries", type=int, default=64)
    parser.add_argument("--owner-images", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "release_audit.json")
    a = parser.parse_args(argv)
    thresholds = [float(t) for t in a.thresholds.split(",")]
    sample_counts = [int(s) for s in a.samples.split(",")]
    audit = json.loads(AUDIT_JSON.read_text(encoding="utf-8")) if AUDIT_JSON.exists() else {}

    jobs: list[tuple[str, str, Path]] = []  # (row name, federation, adapter file)
    for name in a.variants.split(","):
        name = name.strip()
        if name == "base":
            jobs.append(("base", "-", a.keep / "nodp.npz"))  # zeroed below
            continue
        for federation, folder in (("inprocess", a.keep), ("real", a.keep_real)):
            if (folder / f"{name}.npz").exists():
                jobs.append((name, federation, folder / f"{name}.npz"))

    report: dict[str, object] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
        "cpus": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": [],
    }
    rows: list[dict[str, object]] = report["rows"]  # type: ignore[assignment]
    work = Path(tempfile.mkdtemp(prefix="atelier-release-audit-"))
    try:
        data = owner0_dataset(work, seed=a.seed, canaries=a.canaries, owner_images=a.owner_images)
        captions = {
            p.name: p.with_suffix(".txt").read_text(encoding="utf-8") for p in data.glob("*.png")
        }
        node_config = {
            "dataset-path": str(data),
            "cache-dir": str(work / "node-cache"),
            "ledger-path": str(work / "ledger.db"),
            "base-model-path": str(a.base),
            "torch-threads": "1",
        }
        for name, federation, path in jobs:
            with np.load(path) as saved:
                arrays = {k: saved[k] for k in saved.files}
            if name == "base":
                arrays = {k: np.zeros_like(v) for k, v in arrays.items()}
            run_config: dict[str, object] = {
                "job-id": a.job_id,
                "resolution": 64,
                "rank": 8,
                "alpha": 8.0,
                "adapter-mode": "lora",
                "seed": 0,
                "device": "cpu",
                "mixed-precision": "no",
                "base-model-path": str(a.base),
            }
            for samples in sample_counts:
                result = node_release_check(
                    run_config=run_config,
                    node_config={**node_config, "release-samples": str(samples)},
                    arrays=arrays,
                )
                matched = Path(result.matched).name
                caption = captions.get(matched, "")
                row: dict[str, object] = {
                    "variant": name,
                    "federation": federation,
                    "epsilon_accounted": _eps_accounted(audit, federation, name),
                    "samples": result.samples,
                    "best_score": result.best_score,
                    "best_match_is_canary": "canary" in caption,
                    "seconds": round(result.seconds, 1),
                    "verdicts": verdicts(result.best_score, thresholds),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                a.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    separation: dict[str, object] = {}
    for samples in sample_counts:
        scores = {
            f"{r['variant']}/{r['federation']}": float(r["best_score"])  # type: ignore[arg-type]
            for r in rows
            if r["samples"] == samples
        }
        nodp = [k for k in scores if k.startswith("nodp/")]
        private = [k for k in scores if k.startswith("dp")]
        if nodp and private:
            separation[str(samples)] = separating_thresholds(scores, vetoed=nodp, allowed=private)
    report["separation_nodp_vetoed_dp_allowed"] = separation
    print(f"thresholds that veto every no-DP job and let every DP job through: {separation}")
    report["load_average_at_end"] = round(os.getloadavg()[0], 2)
    a.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(rows, thresholds))
    return report


def table(rows: list[dict[str, object]], thresholds: list[float]) -> str:
    head = " | ".join(f"verdict at {t:g}" for t in thresholds)
    lines = [
        f"| adapter | federation | epsilon accounted | samples | release-check score | {head} |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in thresholds) + " |",
    ]
    for row in rows:
        eps = row["epsilon_accounted"]
        assert eps is None or isinstance(eps, float | int)
        eps_text = "-" if eps is None else (f"{eps:.3g}" if eps < 1e4 else f"{eps:.2e}")
        verdict = row["verdicts"]
        assert isinstance(verdict, dict)
        lines.append(
            f"| {row['variant']} | {row['federation']} | {eps_text} | {row['samples']} "
            f"| {float(row['best_score']):.3f} | "  # type: ignore[arg-type]
            + " | ".join(verdict[f"{t:g}"] for t in thresholds)
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
