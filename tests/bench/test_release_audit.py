"""bench/release_audit.py: the verdict at a threshold and the separation of no-DP from DP jobs,
on made-up scores and on the stored result (issue #17). No model is run here (seconds)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_release_audit", ROOT / "bench" / "release_audit.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_node_vetoes_when_its_best_score_reaches_the_threshold() -> None:
    bench = _bench()
    assert bench.verdicts(0.6, [0.85, 0.6, 0.4]) == {"0.85": "allow", "0.6": "veto", "0.4": "veto"}


def test_separating_thresholds_lie_between_the_best_dp_score_and_the_lowest_nodp_score() -> None:
    bench = _bench()
    scores = {"nodp/a": 0.7, "nodp/b": 0.65, "dp8/a": 0.5, "dp2/a": 0.45}
    assert bench.separating_thresholds(
        scores, vetoed=["nodp/a", "nodp/b"], allowed=["dp8/a", "dp2/a"]
    ) == (0.5, 0.65)
    scores["dp8/a"] = 0.66  # one DP job scores above a no-DP one: no threshold works
    assert (
        bench.separating_thresholds(scores, vetoed=["nodp/a", "nodp/b"], allowed=["dp8/a", "dp2/a"])
        is None
    )


def test_the_stored_result_is_consistent_with_its_scores() -> None:
    bench = _bench()
    stored = json.loads((ROOT / "bench" / "release_audit.json").read_text(encoding="utf-8"))
    rows = stored["rows"]
    assert {r["variant"] for r in rows} >= {"base", "nodp", "dp8", "dp2"}
    for row in rows:
        thresholds = [float(t) for t in row["verdicts"]]
        assert row["verdicts"] == bench.verdicts(row["best_score"], thresholds)
    for samples, found in stored["separation_nodp_vetoed_dp_allowed"].items():
        scores = {
            f"{r['variant']}/{r['federation']}": r["best_score"]
            for r in rows
            if r["samples"] == int(samples)
        }
        expected = bench.separating_thresholds(
            scores,
            vetoed=[k for k in scores if k.startswith("nodp/")],
            allowed=[k for k in scores if k.startswith("dp")],
        )
        assert found == (list(expected) if expected else None)
