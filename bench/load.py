"""Load test: browse, search, model page and download at a fixed concurrency, with wrk.

    python bench/load.py [--seconds 35] [--connections 16] [--threads 2] [--workers 2]
                         [--models 100] [--json OUT]

Starts gunicorn (sync workers) on PostgreSQL with a throw-away database (bench/_server.py),
seeds ``--models`` published LoRAs through the project's own services (real files, ~40 KB
each), then runs wrk on loopback against each endpoint for ``--seconds``, one after the
other, at ``--connections`` open connections. For each it prints requests/s, the error rate
(socket errors and non-2xx/3xx answers over all requests) and p50/p95/p99 latency; and the
resident memory (RSS) of each web worker after a warm-up (``--warmup`` seconds of the same
load on every endpoint) and after each endpoint's run (a steady climb would point at a
leak). Rate limits are raised for the run (one client address sends everything). Needs
``wrk`` (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import Server, bench_env, create_user_and_token

REPORT = (
    "done = function(summary, latency, requests)\n"
    "  io.write(string.format('P95 %d\\n', latency:percentile(95)))\n"
    "  io.write(string.format('P99 %d\\n', latency:percentile(99)))\n"
    "  io.write(string.format('P50 %d\\n', latency:percentile(50)))\n"
    "  io.write(string.format('REQ %d\\n', summary.requests))\n"
    "  io.write(string.format('ERR %d\\n', summary.errors.connect + summary.errors.read"
    " + summary.errors.write + summary.errors.timeout + summary.errors.status))\n"
    "end\n"
)

SEED = """
import io
from tests.registry.factories import complete_upload, lora_bytes
from registry.services.catalog import FileSpec, model_create, version_create, version_publish
from registry.services.downloads import signed_file_url
from django.contrib.auth import get_user_model
owner = get_user_model().objects.get(username="bench")
words = "portrait anime landscape castle dragon robot ocean galaxy".split()
last = None
for i in range({models}):
    model = model_create(owner=owner, name=f"{{words[i % len(words)]}} lora {{i}}", kind="lora",
                         description=f"A {{words[(i * 3) % len(words)]}} style number {{i}}.")
    upload = complete_upload(user=owner, data=lora_bytes(seed=i), filename=f"l{{i}}.safetensors")
    version = version_create(model=model, user=owner, name="v1", files=[FileSpec(upload)])
    last = version_publish(version=version, user=owner)
f = last.files.select_related("blob").get()
print("MODEL=/models/%d/%s/" % (last.model_id, last.model.slug))
print("FILE=" + signed_file_url(blob=f.blob, filename=f.filename, user_id=0, ttl=86400))
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_wrk(url: str, *, seconds: int, connections: int, threads: int, script: Path) -> dict:
    proc = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr or proc.stdout)
    values = dict(re.findall(r"^(P50|P95|P99|REQ|ERR) (\d+)$", proc.stdout, re.M))
    requests_done = int(values["REQ"])
    return {
        "requests": requests_done,
        "rps": requests_done / seconds,
        "errors": int(values["ERR"]),
        "error_rate": int(values["ERR"]) / max(1, requests_done),
        "p50_ms": int(values["P50"]) / 1000,
        "p95_ms": int(values["P95"]) / 1000,
        "p99_ms": int(values["P99"]) / 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=35)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5, help="seconds of wrk per endpoint")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("load: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    with bench_env("load") as bench:
        bench.env.update(
            {
                "ATELIER_RATE_API": "1000000/min",
                "ATELIER_RATE_DOWNLOADS": "1000000/min",
                "ATELIER_RATE_LOGIN": "1000000/min",
                "ATELIER_SIGNED_URL_TTL": "86400",
            }
        )
        create_user_and_token(bench)
        started = time.monotonic()
        out = bench.shell(SEED.format(models=args.models))
        seeded = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        print(
            f"load: seeded {args.models} models in {time.monotonic() - started:.0f} s", flush=True
        )
        script = bench.workdir / "report.lua"
        script.write_text(REPORT)
        with Server(bench, workers=args.workers) as server:
            targets = {
                "browse": "/models/",
                "search": "/?q=dragon",
                "model page": seeded["MODEL"],
                "download": urlsplit(seeded["FILE"])._replace(scheme="", netloc="").geturl(),
            }
            for path in targets.values():  # warm-up: every code path runs in every worker
                response = requests.get(server.base_url + path, timeout=30)
                assert response.status_code == 200, (path, response.status_code)
                run_wrk(
                    server.base_url + path,
                    seconds=args.warmup,
                    connections=args.connections,
                    threads=args.threads,
                    script=script,
                )
            workers = server.worker_pids()
            before = {pid: rss_mb(pid) for pid in workers}
            results = {}
            series = [round(sum(before.values()), 1)]
            for label, path in targets.items():
                results[label] = run_wrk(
                    server.base_url + path,
                    seconds=args.seconds,
                    connections=args.connections,
                    threads=args.threads,
                    script=script,
                )
                r = results[label]
                series.append(round(sum(rss_mb(pid) for pid in workers), 1))
                print(
                    f"load: {label:<10} {r['rps']:7.1f} req/s  errors {r['error_rate']:.2%}  "
                    f"p50 {r['p50_ms']:.1f} ms  p95 {r['p95_ms']:.1f} ms  "
                    f"p99 {r['p99_ms']:.1f} ms  (workers' RSS {series[-1]:.1f} MiB)",
                    flush=True,
                )
            after = {pid: rss_mb(pid) for pid in workers if Path(f"/proc/{pid}").exists()}
        for pid in workers:
            grown = after.get(pid, float("nan")) - before[pid]
            print(
                f"load: worker {pid} RSS {before[pid]:.1f} MiB after warm-up, "
                f"{after.get(pid, float('nan')):.1f} MiB after the run ({grown:+.1f} MiB)"
            )
        summary = {
            "seconds_each": args.seconds,
            "connections": args.connections,
            "workers": args.workers,
            "models": args.models,
            "results": results,
            "rss_mb_before": list(before.values()),
            "rss_mb_after": list(after.values()),
            "rss_mb_total_after_each_endpoint": series,
        }
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
