"""Shared helpers for the registry benchmarks: a throw-away database and a real gunicorn.

Each benchmark creates a PostgreSQL database named ``atelier_bench_<pid>``, migrates it,
starts gunicorn (``config.wsgi``, sync workers) on a free loopback port with that database
and temporary MEDIA_ROOT / upload folders, measures what it wants, and tears everything down.
The server's environment is the project's own settings, driven by variables only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# The server database is created from this one (a maintenance database on the same server).
ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _database_url(name: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin_execute(sql: str) -> None:
    import psycopg

    url = ADMIN_URL.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


@dataclass
class BenchEnv:
    """A database and a scratch folder, with the environment every child process gets."""

    db_name: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    def manage(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """Run ``manage.py`` with this environment; return its stdout."""
        proc = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def shell(self, code: str) -> str:
        """Run Python code inside ``manage.py shell``; return its stdout."""
        return self.manage("shell", "-c", code)


def _migrate(bench: BenchEnv) -> None:
    """Migrate everything; if another app's migration is broken, the registry's at least."""
    try:
        bench.manage("migrate", "--noinput", "-v", "0")
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1][:300]
        print(
            f"WARNING: full migrate failed ({last}); migrating core, sessions and registry only",
            file=sys.stderr,
        )
        for app in ("core", "sessions", "registry"):
            bench.manage("migrate", app, "--noinput", "-v", "0")


@contextmanager
def bench_env(
    tag: str = "bench", *, migrate: bool = True, keep: bool = False
) -> Iterator[BenchEnv]:
    """Create ``atelier_bench_<pid>`` and a temp dir; drop and delete them afterwards.

    ``keep=True`` leaves the database in place for a look with EXPLAIN (its name is printed).
    """
    db_name = f"atelier_bench_{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix=f"atelier-{tag}-", dir=os.environ.get("BENCH_TMP")))
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(db_name),
        "SECRET_KEY": "bench",
        "ATELIER_HTTPS": "0",
        "DJANGO_DEBUG": "0",
        "HF_HUB_OFFLINE": "1",
        "MEDIA_ROOT": str(workdir / "media"),
        "BLOB_ROOT": str(workdir / "blobs"),
        "ATELIER_UPLOAD_DIR": str(workdir / "uploads"),
        "ATELIER_VAR_DIR": str(workdir / "var"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOG_LEVEL": "ERROR",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("AWS_STORAGE_BUCKET_NAME", None)
    _admin_execute(f'DROP DATABASE IF EXISTS "{db_name}"')
    _admin_execute(f'CREATE DATABASE "{db_name}"')
    (workdir / "var" / "static").mkdir(parents=True)
    bench = BenchEnv(db_name=db_name, workdir=workdir, env=env)
    try:
        if migrate:
            _migrate(bench)
        yield bench
    finally:
        if keep:
            print(f"kept database {bench.database_url}", file=sys.stderr)
        else:
            _admin_execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Server:
    """gunicorn serving ``config.wsgi`` on 127.0.0.1:<free port>."""

    def __init__(
        self,
        bench: BenchEnv,
        *,
        workers: int = 2,
        timeout: int = 900,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.bench = bench
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = bench.workdir / f"gunicorn-{self.port}.log"
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "gunicorn",
                "config.wsgi",
                "--workers",
                str(workers),
                "--worker-class",
                "sync",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--timeout",
                str(timeout),
                "--graceful-timeout",
                "5",
                "--log-level",
                "warning",
                *extra_args,
            ],
            cwd=ROOT,
            env=bench.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.workers = workers
        self._peak_kb: dict[int, int] = {}

    def wait_ready(self, path: str = "/static/atelier.css", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log_path.read_text()[-4000:]}")
            try:
                requests.get(self.base_url + path, timeout=2)
                if len(self.worker_pids()) >= self.workers:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer in {timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def worker_pids(self) -> list[int]:
        return _children(self.proc.pid)

    def peak_rss_mb(self) -> float:
        """The largest peak RSS (VmHWM) of any worker seen so far, in MiB."""
        for pid in self.worker_pids():
            self._peak_kb[pid] = max(self._peak_kb.get(pid, 0), _status_kb(pid, "VmHWM"))
        return max(self._peak_kb.values(), default=0) / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.peak_rss_mb()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Server:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_size(text: str) -> int:
    """``2G``, ``512M``, ``64K`` or a plain number of bytes."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def create_user_and_token(bench: BenchEnv, username: str = "bench") -> str:
    """A user and an API token made through the project's own services; returns the secret."""
    out = bench.shell(
        "from django.contrib.auth import get_user_model\n"
        "from core.services import token_create\n"
        f"u = get_user_model().objects.create_user(username={username!r}, "
        f"email='{username}@example.test', password='bench-pass-phrase')\n"
        "print('TOKEN=' + token_create(user=u, name='bench').secret)\n"
    )
    for line in out.splitlines():
        if line.startswith("TOKEN="):
            return line.removeprefix("TOKEN=")
    raise RuntimeError(f"no token in output: {out!r}")
