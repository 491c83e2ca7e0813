"""A real gunicorn serving ``config.wsgi`` on the test database, for tests that need the
production web server (sendfile, keep-alive, its error log) rather than Django's test server.

The server shares the test's database and storage through the environment (as the test
Celery worker does), so the data it must see has to be committed (``transactional_db``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
NO_LIMITS = {
    f"ATELIER_RATE_{scope}": "100000/min" for scope in ("API", "LOGIN", "DOWNLOADS", "GENERATION")
}


@dataclass
class Gunicorn:
    url: str
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gunicorn_server(
    settings: Any, log_path: Path, *, debug: bool = False, **env: str
) -> Iterator[Gunicorn]:
    """gunicorn (one worker, two threads: keep-alive on, as in docs/production.md) on the
    test database and storage; ``debug`` runs it as the demo does (``DJANGO_DEBUG=1``)."""
    from tests.conftest import celery_worker_env

    port = _free_port()
    full_env = {
        **celery_worker_env(settings, "gunicorn-unused"),
        **NO_LIMITS,
        "DJANGO_DEBUG": "1" if debug else "0",
        "ATELIER_HTTPS": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--threads",
                "2",
                "--timeout",
                "60",
                "--graceful-timeout",
                "2",
                "--log-level",
                "info",
                "--error-logfile",
                "-",
            ],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Gunicorn(url=f"http://127.0.0.1:{port}", port=port, log_path=log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail("gunicorn exited:\n" + server.log()[-4000:])
            try:
                requests.get(server.url + "/healthz-not-a-page", timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    pytest.fail("gunicorn did not start:\n" + server.log()[-4000:])
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
