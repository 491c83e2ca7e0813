"""bench/release_audit.py: the verdict at a threshold and the separation of no-DP from DP jobs,
on made-up scores and on the stored result (issue #17: the memorising job withheld, its DP twin
published). No model is run here (seconds)."""

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


def test_a_node_vetoes_when_the_share_of_copies_is_above_the_threshold() -> None:
    bench = _bench()
    assert bench.verdicts(0.25, [0, 0.25, 0.5]) == {"0": "veto", "0.25": "allow", "0.5": "allow"}
    assert bench.verdicts(0.0, [0]) == {"0": "allow"}  # no copy never vetoes


def test_separating_thresholds_lie_between_the_best_dp_score_and_the_lowest_nodp_score() -> None:
    bench = _bench()
    scores = {"nodp": 0.875, "dp8": 0.0, "dp2": 0.125}
    assert bench.separating_thresholds(scores, vetoed=["nodp"], allowed=["dp8", "dp2"]) == (
        0.125,
        0.875,
    )
    scores["dp8"] = 0.875  # a DP job copies as often as the no-DP one: no threshold works
    assert bench.separating_thresholds(scores, vetoed=["nodp"], allowed=["dp8", "dp2"]) is None


def test_the_stored_result_vetoes_the_memorising_job_and_lets_its_dp_twin_through() -> None:
    bench = _bench()
    stored = json.loads((ROOT / "bench" / "release_audit.json").read_text(encoding="utf-8"))
    rows = {r["variant"]: r for r in stored["rows"]}
    assert {"nodp", "dp8"} <= set(rows)
    for row in rows.values():
        owner0 = row["owners"][0]
        assert owner0["score"] == owner0["copies"] / owner0["samples"]
        thresholds = [float(t) for t in row["verdicts_owner0"]]
        assert row["verdicts_owner0"] == bench.verdicts(owner0["score"], thresholds)
        # the run's end follows from the nodes' verdicts at their (default) threshold
        vetoed = any(o["verdict"] == "veto" for o in row["owners"])
        assert row["status"] == ("withheld" if vetoed else "completed")
    assert rows["nodp"]["status"] == "withheld" and rows["dp8"]["status"] == "completed"
    scores = {k: r["owners"][0]["score"] for k, r in rows.items()}
    expected = bench.separating_thresholds(
        scores, vetoed=["nodp"], allowed=[k for k in scores if k.startswith("dp")]
    )
    assert expected is not None and stored["separation_nodp_vetoed_dp_allowed"] == list(expected)
