"""``atelier node start`` supervises the warm ClientApp executor (issue #14): a dead executor
is started again, after a pause that grows while it keeps dying; stopping the node stops it
and what it forked."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from client.node import _Executor


def test_a_dead_executor_is_restarted_and_stopping_ends_its_group(tmp_path: Path) -> None:
    marker = tmp_path / "starts"
    # Each start appends a line, then the first two exit at once; the third stays up and forks
    script = (
        "import os, sys, time; p = sys.argv[1]; open(p, 'a').write('x\\n'); "
        "n = len(open(p).read().split()); "
        "(n < 3) and sys.exit(3); "
        "os.fork() or time.sleep(60); time.sleep(60)"
    )
    executor = _Executor([sys.executable, "-c", script, str(marker)], dict(os.environ))
    executor.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _starts(marker) < 3:
            executor.check()
            time.sleep(0.1)
        assert _starts(marker) == 3 and executor.restarts == 2
        assert executor.proc is not None and executor.proc.poll() is None
        time.sleep(0.5)  # its child forked
        pgid = executor.proc.pid
        members = [pid for pid in os.listdir("/proc") if pid.isdigit() and _pgid(int(pid)) == pgid]
        assert len(members) == 2
    finally:
        executor.stop()
    assert executor.proc.poll() is not None
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _pgid(int(pid)) == pgid]
    # A stopped executor is not started again
    executor.check()
    assert executor.proc.poll() is not None


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _starts(marker: Path) -> int:
    return len(marker.read_text().split()) if marker.exists() else 0
