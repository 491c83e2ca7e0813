"""Suite-wide fixtures: temporary storage and upload folders, users, tokens, API clients."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest

from tests.support import bearer, load_license_catalogue, tiny_model, wait_for_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Hypothesis: a loaded machine (the suite ran at load averages of 4 to 30) makes input
# generation slow and per-example times noisy; neither is what a property test asserts. A
# test's own @settings still wins.
hypothesis.settings.register_profile(
    "atelier-suite", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("atelier-suite")


@pytest.fixture(autouse=True)
def _isolated_files(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """Storage (public media, private blobs) and upload parts go to a per-test folder (only
    for tests that use Django)."""
    django_fixtures = {"db", "transactional_db", "live_server", "settings", "client"}
    if not django_fixtures & set(request.fixturenames) and not request.node.get_closest_marker(
        "django_db"
    ):
        yield
        return
    settings = request.getfixturevalue("settings")
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.UPLOAD_TEMP_DIR = tmp_path / "uploads"
    settings.ATELIER_FEDERATION_DIR = tmp_path / "federation"  # run out-dirs, credentials files
    settings.BLOB_ROOT = tmp_path / "blobs"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
        "blobs": {
            "BACKEND": "registry.storage.PrivateFileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "blobs")},
        },
    }
    yield


def worker_redis_url(url: str, worker: str) -> str:
    """``url`` for xdist worker ``worker`` (gw0, gw1, ...): worker N > 0 uses the Redis
    database ``REDIS_DB_OFFSET_PER_WORKER`` * N below ``url``'s (default 1: CI's cache
    database 15, then 14), so that one worker's cache flush never clears another's counts."""
    import re

    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    found = re.fullmatch(r"(redis://[^/]+)/(\d+)", url)
    if not index or not found:
        return url
    step = int(os.environ.get("REDIS_DB_OFFSET_PER_WORKER", "1"))
    db = int(found.group(2)) - step * index
    if db < 1:  # never the broker's database 0 of a default 16-database server
        raise pytest.UsageError(f"no Redis database for worker {worker} below {url}")
    return f"{found.group(1)}/{db}"


@pytest.fixture(scope="session", autouse=True)
def _per_worker_cache() -> Iterator[None]:
    """Under pytest-xdist (``make test`` runs ``-n 2``) each worker has a database of its
    own (pytest-django's ``_gwN`` suffix) and a Redis cache database of its own, for this
    process and the processes its tests start (they read ``REDIS_CACHE_URL``)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    url = os.environ.get("REDIS_CACHE_URL", "")
    mine = worker_redis_url(url, worker)
    if mine == url:
        yield
        return
    from django.conf import settings
    from django.test.utils import override_settings

    os.environ["REDIS_CACHE_URL"] = mine
    caches = {**settings.CACHES, "default": {**settings.CACHES["default"], "LOCATION": mine}}
    with override_settings(CACHES=caches):  # its setting_changed signal resets the caches
        yield
    os.environ["REDIS_CACHE_URL"] = url


@pytest.fixture(autouse=True)
def _fresh_cache(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each Django test starts with an empty cache: no rate-limit or lockout counts carried
    over (with REDIS_CACHE_URL the cache has a Redis database of its own)."""
    django_fixtures = {"db", "transactional_db", "live_server", "settings", "client"}
    if not django_fixtures & set(request.fixturenames) and not request.node.get_closest_marker(
        "django_db"
    ):
        yield
        return
    from django.core.cache import caches

    caches["default"].clear()
    yield


@pytest.fixture(autouse=True)
def _demo_payments(request: pytest.FixtureRequest) -> None:
    """Tests top up wallets through the demo payment provider, named explicitly as the demo
    does (tests run with DEBUG off, hence the allowance). A test that needs no provider
    sets ``settings.ATELIER_PAYMENT_PROVIDER = ""``."""
    django_fixtures = {"db", "transactional_db", "live_server", "settings", "client"}
    if not django_fixtures & set(request.fixturenames) and not request.node.get_closest_marker(
        "django_db"
    ):
        return
    settings = request.getfixturevalue("settings")
    settings.ATELIER_PAYMENT_PROVIDER = "demo"
    settings.ATELIER_ALLOW_DEMO_PAYMENTS = True


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
def alice(make_user: Callable[..., Any]) -> Any:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[..., Any]) -> Any:
    return make_user("bob")


@pytest.fixture
def api_as(token_for: Callable[[object], str]) -> Callable[[object], Any]:
    """``api_as(user)``: an API client that sends a fresh token of ``user``."""
    return lambda user: bearer(token_for(user))


@pytest.fixture
def alice_api(alice: Any, api_as: Callable[[object], Any]) -> Any:
    return api_as(alice)


@pytest.fixture
def bob_api(bob: Any, api_as: Callable[[object], Any]) -> Any:
    return api_as(bob)


FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def fast_passwords(settings: Any) -> None:
    """Argon2id costs 0.3 s to over a second per hash on a small machine; tests need no
    strength. Every Django test has it already (``_fast_passwords_by_default``)."""
    settings.PASSWORD_HASHERS = FAST_HASHERS + [
        h for h in settings.PASSWORD_HASHERS if h not in FAST_HASHERS
    ]


@pytest.fixture(autouse=True)
def _fast_passwords_by_default(request: pytest.FixtureRequest) -> None:
    """Every Django test hashes new passwords with MD5 (the production hashers still verify
    older hashes): Argon2id was a third of the registry and marketplace tests' time (1.3 s per
    ``make_user`` under load). A test of the hashers themselves is marked
    ``production_hashers``."""
    django_fixtures = {"db", "transactional_db", "live_server", "settings", "client"}
    if request.node.get_closest_marker("production_hashers") or (
        not django_fixtures & set(request.fixturenames)
        and not request.node.get_closest_marker("django_db")
    ):
        return
    request.getfixturevalue("fast_passwords")


@pytest.fixture
def restore_license_catalogue(django_db_blocker: Any) -> Iterator[None]:
    """A transactional test flushes every table; put the catalogue (data migration) back.

    Request it before ``transactional_db`` so that this runs after the flush.
    """
    yield
    with django_db_blocker.unblock():
        load_license_catalogue()


@pytest.fixture(scope="session", autouse=True)
def _federation_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One CA per test session signs every local SuperLink's TLS certificate
    (``federated.engine.localfed``); clients trust its ``ca.crt``."""
    from federated.engine.localfed import CA_DIR_ENV
    from federated.engine.pki import generate_ca

    folder = tmp_path_factory.mktemp("federation-ca")
    generate_ca(folder)
    old = os.environ.get(CA_DIR_ENV)
    os.environ[CA_DIR_ENV] = str(folder)
    yield folder
    if old is None:
        os.environ.pop(CA_DIR_ENV, None)
    else:
        os.environ[CA_DIR_ENV] = old


@pytest.fixture
def api_client():  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD 1.x model (diffusers folder and single file), built once per session."""
    return _tiny_model(tmp_path_factory)


_tiny_model = tiny_model  # the name test modules import (tests.support has it now)


def _flushes_the_database(item: pytest.Item) -> bool:
    """A transactional test (Django's TransactionTestCase) truncates every table after it."""
    marker = item.get_closest_marker("django_db")
    if marker is not None and (
        marker.kwargs.get("transaction") or (marker.args and marker.args[0] is True)
    ):
        return True
    names = set(getattr(item, "fixturenames", ()))
    return bool({"transactional_db", "live_server"} & names)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a transactional test's flush, put the license catalogue (a data migration) back.

    Run alone, pytest-django runs transactional tests last; under xdist (``make test``) a
    worker runs whole modules in turn, so a flushed catalogue would reach the next module's
    tests ("Unknown license 'mit'"). Loading it is idempotent and committed (no test
    transaction is open here)."""
    result = yield  # the test's fixtures are torn down: the flush is done
    if nextitem is None or not _flushes_the_database(item):
        return result  # (after the last test the test database is gone)
    from django.db import connection
    from pytest_django.plugin import blocking_manager_key

    if not str(connection.settings_dict["NAME"]).startswith("test_"):
        return result

    with item.config.stash[blocking_manager_key].unblock():
        from marketplace.models import License

        if not License.objects.exists():
            load_license_catalogue()
    return result


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


def celery_worker_env(settings: Any, queue: str) -> dict[str, str]:
    """The environment of a test's Celery worker: the test database, storage and ``queue``."""
    from django.db import connection

    db = connection.settings_dict
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "BLOB_ROOT": str(settings.BLOB_ROOT),
        "ATELIER_UPLOAD_DIR": str(settings.UPLOAD_TEMP_DIR),
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        # sample images rendered on publish: a few steps, not the checkpoint's 20
        "ATELIER_SAMPLE_MAX_STEPS": os.environ.get("ATELIER_SAMPLE_MAX_STEPS", "2"),
    }


def celery_worker_start(
    env: dict[str, str], log_path: Path, *, timeout: float = 300.0
) -> subprocess.Popen[bytes]:
    """Start a worker (solo pool) on ``env``'s queue, its output appended to ``log_path``;
    return once it says it is ready (or fail as soon as it exits; ``timeout`` is a last
    resort against a hung start). Also used to restart a worker a test killed."""
    import sys

    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-P",
                "solo",
                "-Q",
                env["CELERY_TASK_DEFAULT_QUEUE"],
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "INFO",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_line(
            proc, log_path, r"ready\.$", offset=offset, timeout=timeout, what="the worker ready"
        )
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


@pytest.fixture
def samples_on_publish(celery_worker_process, settings):  # type: ignore[no-untyped-def]
    """With the worker: publishing renders sample images (off for other worker tests)."""
    settings.ATELIER_SAMPLES_ON_PUBLISH = True
    return celery_worker_process


@pytest.fixture
def celery_worker_process(transactional_db, settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real Celery worker process on Redis, sharing the test database and storage.

    Each test gets its own queue so that parallel runs never take each other's tasks. Data
    the worker must see has to be committed: use it with ``transactional_db``.
    """
    import uuid

    from config.celery import app

    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker:
        pytest.fail("celery_worker_process needs CELERY_BROKER_URL (run `make test`)")
    queue = f"test-{uuid.uuid4().hex[:12]}"
    env = celery_worker_env(settings, queue)
    old_queue = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    # Publishing queues sample images; a test that wants them asks for samples_on_publish
    # (the others' worker would render before the task they wait for).
    settings.ATELIER_SAMPLES_ON_PUBLISH = False
    proc = None
    try:
        proc = celery_worker_start(env, tmp_path / "celery-worker.log")
        yield proc
    finally:
        app.conf.task_default_queue = old_queue
        if proc is not None:
            # A warm shutdown hands its unacknowledged messages back to the broker: give it
            # time on a busy machine (a SIGKILL would leave them in the broker's database)
            proc.terminate()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def broker_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The Celery app publishes to a loopback port where nothing listens (a broker that is
    down); its pooled connections to the suite's broker are dropped before and after."""
    import socket

    from celery import current_app

    with socket.socket() as sock:  # a free port, closed again: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    conf = current_app.conf
    old = conf.broker_url
    conf.broker_url = url
    monkeypatch.setenv("CELERY_BROKER_URL", url)  # Celery reads it before the conf
    current_app._pool = None  # Celery 5 keeps the pooled connections and producers here
    current_app.amqp._producer_pool = None
    try:
        yield url
    finally:
        conf.broker_url = old
        current_app._pool = None
        current_app.amqp._producer_pool = None
