"""Helpers shared by the suite's conftests and test modules (plain functions, no fixtures).

Test modules import from here, from the per-app ``factories.py``/``fixtures.py``/``live.py``
support modules, never from another ``test_*.py``.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest


def bearer(token: str) -> Any:
    """An API client that sends ``token`` as a bearer token."""
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


def load_license_catalogue() -> None:
    """The license catalogue is a data migration: a transactional test that ran before may
    have flushed it. Loading it is idempotent."""
    import importlib

    from django.apps import apps

    importlib.import_module("marketplace.migrations.0003_license_catalogue").load(apps, None)


_TINY: dict[str, Path] = {}


def tiny_model(factory: pytest.TempPathFactory) -> Path:
    """The tiny SD 1.x model (diffusers folder and single file), built once per session."""
    if "dir" not in _TINY:
        from sdcore.tiny import save_tiny_model

        out = factory.mktemp("tiny-sd")
        save_tiny_model(out, seed=0)
        _TINY["dir"] = out
    return _TINY["dir"]


class _ById(HTMLParser):
    """The text inside the element with a given id (stdlib only)."""

    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted, self.depth, self.found = wanted, 0, False
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth:
            self.depth += tag not in ("input", "img", "br", "meta", "link", "hr")
        elif dict(attrs).get("id") == self.wanted:
            self.depth, self.found = 1, True

    def handle_endtag(self, tag: str) -> None:
        if self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.parts.append(data)


def text_of(html: str, element_id: str) -> str:
    """The text of the element with id ``element_id``, white space folded."""
    parser = _ById(element_id)
    parser.feed(html)
    assert parser.found, f"no element with id {element_id!r}"
    return " ".join(" ".join(parser.parts).split())


# --- a Redis server of a test's own ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway ``redis-server`` on loopback (empty, no other test's keys or consumers),
    that a test may stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def start(self) -> None:
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (make test installs it)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Ready when it answers; it either answers or exits (the bound is a last resort)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    pytest.fail(f"redis-server exited with {self.proc.returncode}")
                time.sleep(0.05)
        pytest.fail("redis-server did not answer in 60 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


def drop_broker_connections(app: Any) -> None:
    """Forget the Celery app's pooled broker connections and producers (made for the broker
    URL of their time). Celery 5 keeps them in these attributes; ``app.close()`` would also
    deregister the app, and shared tasks imported later would then be unknown to it."""
    app._pool = None
    app.amqp._producer_pool = None


# --- waiting on a process's own output -----------------------------------------------------


def wait_for_line(
    proc: subprocess.Popen[bytes],
    log_path: Path,
    pattern: str,
    *,
    offset: int = 0,
    timeout: float = 300.0,
    what: str = "",
    explain: Any = None,
) -> re.Match[str]:
    """Wait until ``log_path`` (from byte ``offset``), the output of ``proc``, has a line
    matching ``pattern``; return the match.

    The wait ends on the event itself, or at once when the process exits first. ``timeout``
    is only a last resort against a hung process, far above what a busy machine takes.
    ``explain()`` adds to the failure message (the state of what the process waits on).
    """
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while True:
        text = log_path.read_bytes()[offset:].decode(errors="replace")
        found = regex.search(text)
        if found:
            return found
        extra = f"\n{explain()}" if explain is not None else ""
        if proc.poll() is not None:
            pytest.fail(
                f"exited ({proc.returncode}) before {what or pattern!r}:{extra}\n{text[-8000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"no {what or pattern!r} in {timeout:g} s:{extra}\n{text[-8000:]}")
        time.sleep(0.1)
