"""bench/gpu_sd15.py: clean exit without CUDA, its limits, and a CPU dry run of all its phases.

The GPU run itself is the lead's to make (it needs a lent CUDA machine); these tests keep the
script from rotting in the meantime. CUDA is hidden from the child (``CUDA_VISIBLE_DEVICES``)
so the "no CUDA" path is the one taken even on a GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_sd15.py"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_without_cuda_it_says_so_and_exits_0_having_written_nothing(tmp_path: Path) -> None:
    # given no CUDA device, when the script runs with its defaults
    results = tmp_path / "RESULTS-trainer.md"
    proc = _run("--results", str(results), "--out-dir", str(tmp_path / "out"))
    # then it exits 0 with one clear line, and writes no results
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("gpu_sd15: SKIPPED: no CUDA device"), proc.stdout
    assert not results.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "cpu"], "full size runs only on CUDA"),
        (["--device", "cpu", "--tiny", "--budget", "600"], "would not fit the 8 minutes"),
        (["--device", "cpu", "--tiny", "--dp-modes", "ew,fast"], "unknown opacus modes"),
    ],
)
def test_it_refuses_runs_that_cannot_fit(args: list[str], message: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr


def test_an_exhausted_budget_skips_phases_and_still_reports(tmp_path: Path) -> None:
    # given a budget too short for any phase
    results = tmp_path / "RESULTS-trainer.md"
    results.write_text("# existing\n", encoding="utf-8")
    proc = _run("--device", "cpu", "--tiny", "--budget", "1", "--results", str(results))
    # then nothing is built, the skip is recorded, and the section is appended (not replaced)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "gpu_sd15: build skipped (time budget)" in proc.stdout
    text = results.read_text(encoding="utf-8")
    assert text.startswith("# existing\n")
    assert "## Full-size SD 1.5 on CPU (dry run, tiny model)" in text
    assert text.count("| not run |") == 4, text


@pytest.mark.slow
def test_cpu_dry_run_runs_every_phase(tmp_path: Path) -> None:
    # given the tiny model on the CPU, a few steps each (fp32: bf16 on a CPU is several times
    # slower; the DP mode under bf16 autocast is tested on the trainer, test_dp_autocast.py)
    results = tmp_path / "RESULTS-trainer.md"
    proc = _run(
        *("--device", "cpu", "--tiny", "--images", "4", "--batch", "2", "--warmup", "1"),
        *("--steps", "2", "--fed-steps", "2", "--gen-steps", "2"),
        *("--results", str(results), "--out-dir", str(tmp_path / "out")),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # then every phase ran and measured what it reports
    data = json.loads((tmp_path / "out" / "gpu_sd15.json").read_text(encoding="utf-8"))
    phases = data["phases"]
    assert {k: v["status"] for k, v in phases.items()} == dict.fromkeys(
        ("build", "data", "lora", "dp", "federated", "generate"), "ok"
    )
    assert phases["lora"]["ratio_trainer_over_reference"] > 0
    # the script runs the trainer's default DP mode, auto (ew in fp32, hooks under autocast)
    assert phases["dp"]["fastest"] == "auto"
    assert phases["dp"]["auto_resolves_to"] == "ew"
    assert phases["federated"]["dp_mode"] == phases["dp"]["fastest"]
    # the round trained and averaged something: FFA-LoRA's B starts at zero
    assert phases["federated"]["adapter_abs_sum_after_round"] > 0
    assert phases["generate"]["with_adapter"]["seconds_per_image"] > 0
    # and the same section went to the results file and to --out-dir
    section = (tmp_path / "out" / "gpu_sd15.md").read_text(encoding="utf-8")
    assert section in results.read_text(encoding="utf-8")
    assert section.count("| ok |") == 4, section


def test_the_sdxl_family_reports_under_its_own_name(tmp_path: Path) -> None:
    # given --family sdxl and a budget too short for any phase
    results = tmp_path / "RESULTS-trainer.md"
    proc = _run(
        *("--family", "sdxl", "--device", "cpu", "--tiny", "--budget", "1"),
        *("--results", str(results), "--out-dir", str(tmp_path / "out")),
    )
    # then the section and the files say SDXL (and nothing ran)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "## Full-size SDXL on CPU (dry run, tiny model)" in results.read_text(encoding="utf-8")
    data = json.loads((tmp_path / "out" / "gpu_sdxl.json").read_text(encoding="utf-8"))
    assert data["benchmark"] == "gpu_sdxl" and data["config"]["batch"] == 2


@pytest.mark.slow
def test_cpu_dry_run_of_the_sdxl_family_runs_every_phase(tmp_path: Path) -> None:
    # given the tiny SDXL model on the CPU (the reference is the SDXL LoRA script's loop)
    proc = _run(
        *("--family", "sdxl", "--device", "cpu", "--tiny", "--images", "4", "--batch", "2"),
        *("--warmup", "1", "--steps", "2", "--fed-steps", "2", "--gen-steps", "2"),
        *("--no-append", "--out-dir", str(tmp_path / "out")),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    phases = json.loads((tmp_path / "out" / "gpu_sdxl.json").read_text(encoding="utf-8"))["phases"]
    assert {k: v["status"] for k, v in phases.items()} == dict.fromkeys(
        ("build", "data", "lora", "dp", "federated", "generate"), "ok"
    )
    assert phases["lora"]["ratio_trainer_over_reference"] > 0
    assert phases["federated"]["adapter_abs_sum_after_round"] > 0
