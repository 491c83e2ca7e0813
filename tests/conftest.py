"""Suite-wide fixtures: temporary storage and upload folders, users, tokens, API clients."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_files(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """Storage and upload parts go to a per-test folder (only for tests that use Django)."""
    django_fixtures = {"db", "transactional_db", "live_server", "settings", "client"}
    if not django_fixtures & set(request.fixturenames) and not request.node.get_closest_marker(
        "django_db"
    ):
        yield
        return
    settings = request.getfixturevalue("settings")
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.UPLOAD_TEMP_DIR = tmp_path / "uploads"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    yield


@pytest.fixture
def make_user(db) -> Callable[..., object]:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    def make(username: str = "alice", *, password: str = "a-long-passphrase", **extra: object):
        return get_user_model().objects.create_user(
            username=username, email=f"{username}@example.test", password=password, **extra
        )

    return make


@pytest.fixture
def token_for() -> Callable[[object], str]:
    from core.services import token_create

    def make(user: object) -> str:
        return token_create(user=user, name="test").secret  # type: ignore[arg-type]

    return make


@pytest.fixture
def api_client():  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD 1.x model (diffusers folder and single file), built once per session."""
    return _tiny_model(tmp_path_factory)


_TINY: dict[str, Path] = {}


def _tiny_model(factory: pytest.TempPathFactory) -> Path:
    if "dir" not in _TINY:
        from sdcore.tiny import save_tiny_model

        out = factory.mktemp("tiny-sd")
        save_tiny_model(out, seed=0)
        _TINY["dir"] = out
    return _TINY["dir"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The suite must run on PostgreSQL: refuse to pretend otherwise."""
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        return
    if any(item.get_closest_marker("django_db") for item in items) and not os.environ.get(
        "ATELIER_ALLOW_SQLITE_TESTS"
    ):
        raise pytest.UsageError(
            "Database tests need DATABASE_URL=postgres://... (run `make test`)."
        )


@pytest.fixture
def celery_worker_process(transactional_db, settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real Celery worker process on Redis, sharing the test database and storage.

    Each test gets its own queue so that parallel runs never take each other's tasks. Data
    the worker must see has to be committed: use it with ``transactional_db``.
    """
    import subprocess
    import sys
    import time
    import uuid

    from django.db import connection

    from config.celery import app

    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker:
        pytest.fail("celery_worker_process needs CELERY_BROKER_URL (run `make test`)")
    queue = f"test-{uuid.uuid4().hex[:12]}"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "ATELIER_UPLOAD_DIR": str(settings.UPLOAD_TEMP_DIR),
        "CELERY_TASK_DEFAULT_QUEUE": queue,
    }
    log = open(tmp_path / "celery-worker.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-P", "solo", "-Q", queue,
         "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "INFO"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    old_queue = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if b"ready." in (tmp_path / "celery-worker.log").read_bytes():
                break
            if proc.poll() is not None:
                output = (tmp_path / "celery-worker.log").read_text()
                pytest.fail("the Celery worker exited: " + output)
            time.sleep(0.2)
        else:
            pytest.fail("the Celery worker did not start in 60 s")
        yield proc
    finally:
        app.conf.task_default_queue = old_queue
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
