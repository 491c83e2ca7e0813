"""Faults, each injected for real: a database connection killed inside a purchase, a full
disk (a small tmpfs mounted for the test) during an upload, a Celery worker killed with
SIGKILL in the middle of a task."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from tests.conftest import celery_worker_env, celery_worker_start
from tests.registry.factories import lora_bytes
from tests.support import RedisServer, drop_broker_connections, wait_for_line


def _admin_connection() -> psycopg.Connection:
    """A second, independent connection to the test database."""
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        password=db["PASSWORD"] or None,
        dbname=db["NAME"],
        autocommit=True,
    )


# --- the database connection drops in the middle of a purchase ----------------------------


@pytest.mark.django_db(transaction=True)
def test_a_connection_killed_inside_a_purchase_leaves_nothing_and_the_retry_succeeds_once(
    restore_license_catalogue: None, make_user: Callable[..., Any], settings: Any
) -> None:
    from marketplace.models import Entitlement, LedgerTransaction, Purchase
    from marketplace.payments import DemoProvider
    from marketplace.selectors import (
        ledger_reconcile,
        ledger_total,
        unbalanced_transactions,
        wallet_balance,
    )
    from marketplace.services.ledger import wallet_top_up
    from marketplace.services.listings import listing_create
    from marketplace.services.purchases import purchase_create
    from tests.registry.factories import make_model

    # Given a paid listing and a funded buyer
    seller, buyer = make_user("seller"), make_user("buyer")
    version = make_model(owner=seller)
    listing = listing_create(seller=seller, target=version, price=100)
    wallet_top_up(user=buyer, amount=500, provider=DemoProvider(), idempotency_key="fund")
    ledger_before = LedgerTransaction.objects.count()
    seller_before = wallet_balance(user=seller)

    # When another connection terminates ours just as the purchase writes its ledger
    # entries (after the purchase row and the balances were locked, before the commit)
    killed = []

    def kill_on_ledger_insert(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        if not killed and 'INSERT INTO "marketplace_ledgerentry"' in sql:
            pid = connection.connection.info.backend_pid
            with _admin_connection() as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            killed.append(pid)
        return execute(sql, params, many, context)

    with pytest.raises(OperationalError):
        with connection.execute_wrapper(kill_on_ledger_insert):
            purchase_create(buyer=buyer, listing=listing, idempotency_key="buy-1")
    connection.close()  # the application's next request gets a new connection

    # Then nothing of it remains: no purchase, no entitlement, no ledger entry, no charge
    assert killed
    assert not Purchase.objects.filter(buyer=buyer).exists()
    assert not Entitlement.objects.filter(user=buyer).exists()
    assert LedgerTransaction.objects.count() == ledger_before
    assert wallet_balance(user=buyer) == 500
    assert wallet_balance(user=seller) == seller_before

    # And a retry with the same key succeeds, and a second retry changes nothing more
    first = purchase_create(buyer=buyer, listing=listing, idempotency_key="buy-1")
    again = purchase_create(buyer=buyer, listing=listing, idempotency_key="buy-1")
    assert again.pk == first.pk
    assert Purchase.objects.filter(buyer=buyer).count() == 1
    assert Entitlement.objects.filter(user=buyer).count() == 1
    assert wallet_balance(user=buyer) == 400
    assert LedgerTransaction.objects.count() == ledger_before + 1
    assert ledger_total() == 0
    assert unbalanced_transactions() == []
    assert ledger_reconcile() == []


# --- the disk fills during an upload -------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount tmpfs file systems of a given size (needs root, as on CI and dev machines)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk-{len(mounted)}"
        where.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True
        )
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.django_db
def test_disk_full_while_appending_is_a_507_with_no_partial_data_and_quota_untouched(
    small_disk: Callable[[str], Path], settings: Any, make_user: Any, token_for: Any
) -> None:
    from registry.models import Blob, Upload, UploadStatus
    from registry.services.uploads import part_path, upload_bytes_used

    # Given the upload folder on a 64 KiB disk and a 200 KB file
    settings.UPLOAD_TEMP_DIR = small_disk("64k")
    alice = make_user("alice")
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    data = lora_bytes(seed=5, rank=24)
    assert len(data) > 150_000
    created = client.post(
        "/api/v1/uploads",
        {
            "filename": "big.safetensors",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        format="json",
    )
    assert created.status_code == 201
    upload_id = created.json()["id"]
    used = upload_bytes_used(alice)

    # When the bytes are sent and the disk fills
    response = client.patch(
        f"/api/v1/uploads/{upload_id}",
        data=data,
        content_type="application/offset+octet-stream",
        headers={"Upload-Offset": "0"},
    )

    # Then the answer is a clean 507 in the error shape; nothing of the part is kept
    assert response.status_code == 507
    assert response.json()["code"] == "storage_error"
    upload = Upload.objects.get(pk=upload_id)
    assert upload.offset == 0
    assert upload.status == UploadStatus.OPEN  # the client may resume once there is room
    assert part_path(upload).stat().st_size == 0
    assert not Blob.objects.exists()
    assert upload_bytes_used(alice) == used


@pytest.mark.django_db
def test_disk_full_while_storing_the_blob_is_a_507_with_no_partial_blob(
    small_disk: Callable[[str], Path], settings: Any, make_user: Any, token_for: Any
) -> None:
    from registry.models import Blob, Upload, UploadStatus
    from registry.services.blobs import blob_storage_name
    from registry.services.uploads import upload_bytes_used

    # Given blob storage (BLOB_ROOT) on a 64 KiB disk, the upload folder on another file system
    media = small_disk("64k")
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "registry.storage.PrivateFileSystemStorage",
            "OPTIONS": {"location": str(media)},
        },
    }
    alice = make_user("alice")
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    data = lora_bytes(seed=6, rank=24)
    sha = hashlib.sha256(data).hexdigest()
    upload_id = client.post(
        "/api/v1/uploads",
        {"filename": "big.safetensors", "size": len(data), "sha256": sha},
        format="json",
    ).json()["id"]
    appended = client.patch(
        f"/api/v1/uploads/{upload_id}",
        data=data,
        content_type="application/offset+octet-stream",
        headers={"Upload-Offset": "0"},
    )
    assert appended.status_code == 200
    used = upload_bytes_used(alice)

    # When the upload is completed and the copy into storage runs out of space
    response = client.post(f"/api/v1/uploads/{upload_id}/complete")

    # Then 507, no blob row, no partial file in storage, and the upload can be completed later
    assert response.status_code == 507, response.content
    assert response.json()["code"] == "storage_error"
    assert not Blob.objects.filter(pk=sha).exists()
    assert not (media / blob_storage_name(sha)).exists()
    assert [p for p in media.rglob("*") if p.is_file()] == []
    upload = Upload.objects.get(pk=upload_id)
    assert upload.status == UploadStatus.OPEN
    assert upload_bytes_used(alice) == used

    # And once there is room (storage moved to a larger disk), completing it works
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "registry.storage.PrivateFileSystemStorage",
            "OPTIONS": {"location": str(small_disk("2m"))},
        },
    }
    retried = client.post(f"/api/v1/uploads/{upload_id}/complete")
    assert retried.status_code == 200, retried.content
    assert Blob.objects.get(pk=sha).size == len(data)


# --- a Celery task retried after its worker crashed ----------------------------------------


@pytest.fixture
def own_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """An empty Redis server of this test's own as the Celery broker, and the app publishing
    there. Nothing the suite left in its broker's database (unacknowledged messages of
    killed workers, the restore lock, bindings) nor any other process takes part."""
    from config.celery import app

    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    conf = app.conf
    old = (conf.broker_url, conf.task_always_eager)
    conf.broker_url, conf.task_always_eager = server.url, False
    monkeypatch.setenv("CELERY_BROKER_URL", server.url)  # Celery reads it before the conf
    drop_broker_connections(app)
    try:
        yield server
    finally:
        conf.broker_url, conf.task_always_eager = old
        drop_broker_connections(app)
        server.stop()


def _broker_state(server: RedisServer, queue: str) -> str:
    """What the broker holds for the queue: said when a wait fails."""
    client = server.client()
    unacked = client.zrange("unacked_index", 0, -1, withscores=True)
    return f"broker: {queue} holds {client.llen(queue)} message(s); unacked: {unacked}"


def _lock_waiters(admin: psycopg.Connection) -> int:
    """Backends of the test database waiting on a lock in a statement on registry_modelfile."""
    admin.execute("SELECT pg_stat_clear_snapshot()")  # a fresh view in this transaction
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query ILIKE '%%registry_modelfile%%'"
    ).fetchone()
    return int(row[0]) if row else 0


def _wait_blocked_on_the_lock(
    worker: subprocess.Popen[bytes], log: Path, admin: psycopg.Connection, task_id: str
) -> None:
    """Wait until the worker, inside the task, waits on the row lock (Postgres says so); fail
    at once if the worker exits or ends the task instead. The bound is a last resort."""
    ended = re.compile(rf"convert_pickle_file\[{task_id}\] (succeeded|raised|failed)")
    deadline = time.monotonic() + 300
    while not _lock_waiters(admin):
        text = log.read_text(errors="replace")
        assert worker.poll() is None and not ended.search(text), text[-8000:]
        assert time.monotonic() < deadline, "no lock wait in 300 s\n" + text[-8000:]
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_conversion_task_whose_worker_is_killed_midway_is_redone_once(
    restore_license_catalogue: None,
    own_broker: RedisServer,
    settings: Any,
    make_user: Any,
    tmp_path: Path,
) -> None:
    import torch

    from registry.models import FileFormat, ModelFile
    from registry.services.catalog import FileSpec, model_create, version_create
    from registry.services.uploads import upload_whole_file
    from registry.tasks import convert_pickle_file

    # Given a pickle checkpoint queued for conversion, and a worker (acks_late) on a queue of
    # this test whose unacknowledged messages come back after 2 s
    alice = make_user("alice")
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.arange(6.0)}}, buffer)
    upload = upload_whole_file(
        user=alice,
        filename="old.ckpt",
        stream=io.BytesIO(buffer.getvalue()),
        size=len(buffer.getvalue()),
    )
    model = model_create(owner=alice, name="Crash checkpoint", kind="checkpoint")
    version = version_create(model=model, user=alice, name="v1", files=[FileSpec(upload)])
    source = version.files.get()
    ModelFile.objects.filter(pk=source.pk).update(conversion_status="queued")
    assert convert_pickle_file.acks_late

    queue = f"test-crash-{uuid.uuid4().hex[:10]}"
    env = {
        **celery_worker_env(settings, queue),
        "CELERY_BROKER_URL": own_broker.url,
        "CELERY_VISIBILITY_TIMEOUT": "2",
    }
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers: list[subprocess.Popen[bytes]] = []
    admin = _admin_connection()
    try:
        # The source row is locked from another connection: the worker's final UPDATE of it
        # waits there, in the middle of the task, inside its transaction
        admin.execute("BEGIN")
        admin.execute("SELECT id FROM registry_modelfile WHERE id = %s FOR UPDATE", [source.pk])
        workers.append(celery_worker_start(env, logs[0]))
        task_id = convert_pickle_file.apply_async(args=[source.pk], queue=queue).id
        wait_for_line(
            workers[0],
            logs[0],
            rf"convert_pickle_file\[{task_id}\] received",
            what="the task received",
            explain=lambda: _broker_state(own_broker, queue),
        )
        _wait_blocked_on_the_lock(workers[0], logs[0], admin, task_id)

        # When the worker is killed there, and the lock released
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=30)
        admin.execute("ROLLBACK")
        # Then nothing of the half-done task is visible
        assert ModelFile.objects.filter(converted_from=source).count() == 0
        assert ModelFile.objects.get(pk=source.pk).conversion_status == "queued"
        assert own_broker.client().hlen("unacked") == 1  # the message, held for a dead worker

        # And a new worker gets the message again and does the work, once
        workers.append(celery_worker_start(env, logs[1]))
        wait_for_line(
            workers[1],
            logs[1],
            rf"convert_pickle_file\[{task_id}\] (succeeded|raised|failed)",
            what="the redelivered task done",
            explain=lambda: _broker_state(own_broker, queue),
        )
        assert ModelFile.objects.get(pk=source.pk).conversion_status == "done", logs[1].read_text()
        assert logs[1].read_text().count(f"convert_pickle_file[{task_id}] received") == 1
        # A duplicate delivery (or a retry by hand) changes nothing
        convert_pickle_file.apply(args=[source.pk])
        converted = ModelFile.objects.filter(converted_from=source)
        assert converted.count() == 1
        assert converted.get().format == FileFormat.SAFETENSORS
        assert ModelFile.objects.filter(version=version).count() == 2
    finally:
        admin.close()
        for proc in workers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
