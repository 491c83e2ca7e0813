"""CPU per poll of a run's status: the ``flwr ls`` CLI per call (what the coordinator did
until issue #14) vs the Control API from this process over one kept connection (what it does).

    python bench/coordinator_poll.py [--polls 20] [--out bench-coordinator-poll.json]

Real parts on loopback: one ``flower-superlink`` with TLS and node authentication (as the
site runs it) and one run on it (it fails at once for want of a base model: a finished run
answers ``ListRuns`` like any other). Each way polls that run ``--polls`` times:

- CLI: ``flwr ls CONN --run-id ID --format json`` as a subprocess; its CPU is the children's
  user+system time (``RUSAGE_CHILDREN``), its answer parsed as the coordinator parsed it;
- Control API: ``federated.engine.superlink.run_status``; its CPU is this process's
  (``time.process_time``); the first call (imports, TLS handshake) is reported apart.

Prints CPU and wall time per poll for each and their ratio (CLI / Control API).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FLWR = Path(sys.executable).parent / "flwr"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def poll_cli(fed: object, run_id: str, polls: int) -> dict[str, float]:
    """``flwr ls`` per poll, as ``federated.engine.superlink`` ran it before issue #14."""
    connection = fed.connection  # type: ignore[attr-defined]
    connection.write_config()
    env = {**os.environ, "COLUMNS": "400", "FLWR_HOME": str(connection.flwr_home)}
    argv = [str(FLWR), "ls", connection.name, "--run-id", run_id, "--format", "json"]
    cpu, wall = [], []
    for _ in range(polls):
        before, started = _children_cpu(), time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=env, check=False, timeout=120)
        wall.append(time.perf_counter() - started)
        cpu.append(_children_cpu() - before)
        text = done.stdout.decode()
        status = json.loads(text[text.find("{") :])["runs"][0]["status"]
        assert status.startswith("finished"), status
    return {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall)}


def poll_api(fed: object, run_id: str, polls: int) -> dict[str, float]:
    from federated.engine.superlink import run_status

    connection = fed.connection  # type: ignore[attr-defined]
    before, started = time.process_time(), time.perf_counter()
    assert run_status(run_id, connection).finished
    first = {
        "first_cpu_s": time.process_time() - before,
        "first_wall_s": time.perf_counter() - started,
    }
    cpu, wall = [], []
    for _ in range(polls):
        before, started = time.process_time(), time.perf_counter()
        status = run_status(run_id, connection)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - before)
        assert status.finished, status
    return {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall), **first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--polls", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from federated.engine.localfed import LocalFederation
    from federated.engine.superlink import APP_DIR, run_start, run_status

    with (
        tempfile.TemporaryDirectory(prefix="bench-poll-") as tmp,
        LocalFederation([], Path(tmp)) as fed,
    ):
        run_id = run_start(APP_DIR, fed.connection, {"out-dir": str(Path(tmp) / "out")})
        deadline = time.monotonic() + 120
        while not run_status(run_id, fed.connection).finished:
            if time.monotonic() > deadline:
                raise SystemExit("the run never finished")
            time.sleep(0.5)
        cli = poll_cli(fed, run_id, args.polls)
        api = poll_api(fed, run_id, args.polls)
    result = {
        "polls": args.polls,
        "load_average": os.getloadavg()[0],
        "cli": cli,
        "control_api": api,
        "cpu_ratio": cli["cpu_s"] / max(api["cpu_s"], 1e-6),
        "wall_ratio": cli["wall_s"] / max(api["wall_s"], 1e-6),
    }
    ms = {key: value * 1000 for key, value in api.items()}
    cli_ms = {key: value * 1000 for key, value in cli.items()}
    print(
        f"flwr ls per poll:        CPU {cli_ms['cpu_s']:8.1f} ms, wall {cli_ms['wall_s']:8.1f} ms"
    )
    print(f"Control API per poll:    CPU {ms['cpu_s']:8.1f} ms, wall {ms['wall_s']:8.1f} ms")
    print(
        f"  its first call:        CPU {ms['first_cpu_s']:8.1f} ms,"
        f" wall {ms['first_wall_s']:8.1f} ms"
    )
    ratios = f"CPU {result['cpu_ratio']:.0f}x, wall {result['wall_ratio']:.0f}x"
    print(f"ratio CLI / Control API: {ratios}")
    print(f"load average {result['load_average']:.1f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
