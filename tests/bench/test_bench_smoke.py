"""The benchmark scripts run end to end at a tiny size, so that they cannot rot.

Each script creates its own PostgreSQL database (on the server ``DATABASE_URL`` names),
starts gunicorn and prints a ratio line. Only the presence of that line is checked: timings
on a shared test machine mean nothing, and no test asserts one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"\d+(?:\.\d+)?"


def _bench_env() -> dict[str, str]:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.skip("the benchmarks need PostgreSQL (DATABASE_URL=postgres://...)")
    parts = urlsplit(url)
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", "", ""))
    return {**os.environ, "BENCH_PG_URL": admin}


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=_bench_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.mark.slow
def test_ingest_prints_its_ratio_to_sha256sum() -> None:
    # given a 1 MiB file, when the ingest benchmark runs
    out = _run("ingest.py", "--size", "1M")
    # then it prints the server time, the reference and their ratio, and the worker's RSS
    assert re.search(
        rf"^ingest: server {NUMBER} s, sha256sum {NUMBER} s, ratio {NUMBER} ", out, re.M
    ), out
    assert re.search(rf"^ingest: worker peak RSS {NUMBER} MB", out, re.M), out


@pytest.mark.slow
def test_download_prints_its_ratio_to_http_server() -> None:
    # given a 1 MiB published file, when the download benchmark runs once per server
    out = _run("download.py", "--size", "1M", "--repeat", "1")
    # then it prints both throughputs and their ratio
    assert re.search(
        rf"^download: registry {NUMBER} MiB/s, http.server {NUMBER} MiB/s, ratio {NUMBER} ",
        out,
        re.M,
    ), out


@pytest.mark.slow
def test_browse_prints_query_counts_and_latency_ratios() -> None:
    # given a tiny catalogue, when the browse benchmark runs for a second per endpoint
    out = _run(
        "browse.py", "--models", "60", "--versions", "120", "--duration", "1", "--concurrency", "2"
    )
    # then it reports queries per page for the browse page and p50 ratios to the static file
    assert re.search(r"^queries browse list +(page sizes|missing)", out, re.M), out
    assert re.search(rf"^latency static \(reference\).* p50 ratio to static {NUMBER}", out, re.M), (
        out
    )
    assert re.search(rf"^latency list page 1 .* p50 ratio to static {NUMBER}", out, re.M), out
