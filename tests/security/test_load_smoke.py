"""bench/load.py runs end to end (gunicorn, PostgreSQL, wrk) and reports every endpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_load_benchmark_reports_latency_errors_and_memory(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: apt-get install wrk (as .ci/run does)")
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [
            sys.executable,
            "bench/load.py",
            "--seconds",
            "2",
            "--warmup",
            "1",
            "--models",
            "3",
            "--connections",
            "4",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(out.read_text())
    assert set(summary["results"]) == {"browse", "search", "model page", "download"}
    for label, result in summary["results"].items():
        assert result["requests"] > 0, label
        assert result["errors"] == 0, (label, result)
        assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"], (label, result)
    assert len(summary["rss_mb_after"]) == 2
    assert all(mb > 50 for mb in summary["rss_mb_before"])
