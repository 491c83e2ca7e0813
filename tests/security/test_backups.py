"""Backup and restore: scripts/backup.sh then scripts/restore.sh into an empty database and
an empty folder; every blob is then found by its SHA-256 and its bytes read back."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from tests.security.world import World

ROOT = Path(__file__).resolve().parents[2]
RESTORE_DB = "atelier_security_restore"

pytestmark = pytest.mark.slow


def _url(name: str) -> str:
    db = connection.settings_dict
    auth = db["USER"] or "postgres"
    if db["PASSWORD"]:
        auth += f":{db['PASSWORD']}"
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name}"


def _admin(sql: str) -> None:
    with psycopg.connect(
        _url("postgres").replace("postgres://", "postgresql://", 1), autocommit=True
    ) as conn:
        conn.execute(sql)


def _script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / name), *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def restore_db() -> Any:
    _admin(f'DROP DATABASE IF EXISTS "{RESTORE_DB}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{RESTORE_DB}"')
    yield _url(RESTORE_DB)
    _admin(f'DROP DATABASE IF EXISTS "{RESTORE_DB}" WITH (FORCE)')


def test_backup_then_restore_into_empty_targets_finds_every_file_by_hash(
    committed_world: World, settings: Any, tmp_path: Path, restore_db: str
) -> None:
    from marketplace.models import Purchase
    from registry.models import Blob, ModelFile

    # Given a seeded database and storage (models, datasets, purchases: 6 blobs)
    blobs = {b.sha256: b.storage_name for b in Blob.objects.all()}
    assert len(blobs) >= 5
    media, private = Path(settings.MEDIA_ROOT), Path(settings.BLOB_ROOT)

    # When it is backed up
    backup = _script(
        "backup.sh",
        str(tmp_path / "backups"),
        DATABASE_URL=_url(connection.settings_dict["NAME"]),
        MEDIA_ROOT=str(media),
        BLOB_ROOT=str(private),
    )
    assert backup.returncode == 0, backup.stderr
    (folder,) = (tmp_path / "backups").iterdir()
    assert folder.name.startswith("atelier-")
    assert {p.name for p in folder.iterdir()} >= {
        "db.dump",
        "blobs.tsv",
        "MANIFEST.sha256",
        "media",
        "blobs",
    }
    listed = {line.split("\t")[0] for line in (folder / "blobs.tsv").read_text().splitlines()}
    assert listed == set(blobs)

    # And restored into a new, empty database and an empty folder
    target = tmp_path / "restored-blobs"
    restore = _script(
        "restore.sh",
        str(folder),
        DATABASE_URL=restore_db,
        MEDIA_ROOT=str(tmp_path / "restored-media"),
        BLOB_ROOT=str(target),
    )

    # Then the restore reports every blob found by hash, intact
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert f"all {len(blobs)} blobs found by hash and intact" in restore.stdout
    # And, looked up by SHA-256 in the restored database, each file's bytes hash to it
    with psycopg.connect(restore_db.replace("postgres://", "postgresql://", 1)) as conn:
        rows = conn.execute("SELECT sha256, storage_name FROM registry_blob").fetchall()
        files = conn.execute("SELECT count(*) FROM registry_modelfile").fetchone()[0]
        purchases = conn.execute("SELECT count(*) FROM marketplace_purchase").fetchone()[0]
    assert dict(rows) == blobs
    for sha, name in rows:
        assert hashlib.sha256((target / name).read_bytes()).hexdigest() == sha
    # (the world's model files, the base checkpoint of its federated jobs among them)
    assert files == ModelFile.objects.count() >= 5 and purchases == Purchase.objects.count() == 2
    # And the registry's own lookup works against the restored copy
    check = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from registry.selectors.versions import files_by_hash\n"
            f"print(files_by_hash({committed_world.paid_file.blob_id!r}).count())",
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": restore_db, "BLOB_ROOT": str(target)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.stdout.strip().splitlines()[-1] == "1", check.stderr


def test_restore_refuses_a_database_or_folder_that_is_not_empty(
    committed_world: World, settings: Any, tmp_path: Path, restore_db: str
) -> None:
    backup = _script(
        "backup.sh",
        str(tmp_path / "b"),
        DATABASE_URL=_url(connection.settings_dict["NAME"]),
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        BLOB_ROOT=str(settings.BLOB_ROOT),
    )
    assert backup.returncode == 0, backup.stderr
    (folder,) = (tmp_path / "b").iterdir()

    # Into the live (non-empty) database: refused, nothing touched
    into_live = _script(
        "restore.sh",
        str(folder),
        DATABASE_URL=_url(connection.settings_dict["NAME"]),
        MEDIA_ROOT=str(tmp_path / "empty"),
        BLOB_ROOT=str(tmp_path / "eb"),
    )
    assert into_live.returncode == 3
    assert "not empty" in into_live.stderr
    assert not (tmp_path / "empty").exists()

    # Into a folder that holds something: refused
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    into_busy = _script(
        "restore.sh",
        str(folder),
        DATABASE_URL=restore_db,
        MEDIA_ROOT=str(busy),
        BLOB_ROOT=str(tmp_path / "busy-blobs"),
    )
    assert into_busy.returncode == 3
    assert (busy / "keep.txt").read_text() == "mine"

    # A damaged backup: refused before anything is restored
    blob_file = next((folder / "blobs" / "blobs").rglob("*"))
    while blob_file.is_dir():
        blob_file = next(blob_file.iterdir())
    blob_file.write_bytes(b"corrupted")
    damaged = _script(
        "restore.sh",
        str(folder),
        DATABASE_URL=restore_db,
        MEDIA_ROOT=str(tmp_path / "new"),
        BLOB_ROOT=str(tmp_path / "new-blobs"),
    )
    assert damaged.returncode == 4
    with psycopg.connect(restore_db.replace("postgres://", "postgresql://", 1)) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()[0]
    assert tables == 0
