"""bench/buckets_te.py runs end to end (a few steps), so the recorded numbers can be redone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_bench_times_every_configuration(tmp_path: Path) -> None:
    out = tmp_path / "buckets_te.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "buckets_te.py"),
            *("--images", "6", "--steps", "2", "--warmup", "0", "--repeats", "1"),
            *("--out", str(out)),
        ],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert sum(result["buckets"].values()) == 6 and len(result["buckets"]) == 3
    names = {"square", "buckets", "te", "square-te"}
    assert set(result["results"]) == names | {f"{n}-dp" for n in names}
    assert result["results"]["square"]["ratio_to_square"] == 1.0
    assert all(r["median_step_s"] > 0 for r in result["results"].values())
