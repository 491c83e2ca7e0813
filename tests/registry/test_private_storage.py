"""The private blob storage: configuration, the system checks, and moving blobs that older
versions stored under public media (``manage.py blobs_move_private``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import storages
from django.core.management import call_command
from django.test import Client

from registry.checks import private_blob_storage
from registry.services.blobs import blob_storage
from tests.registry.factories import complete_upload, lora_bytes, make_model

ROOT = Path(__file__).resolve().parents[2]
DATA = lora_bytes(seed=31)


def _ids() -> set[str]:
    return {m.id for m in private_blob_storage()}


@pytest.mark.django_db
def test_blobs_stored_by_an_older_version_under_media_are_moved_and_served(
    settings: Any, make_user: Any
) -> None:
    # Given a published file whose blob an older version left under MEDIA_ROOT
    alice = make_user("alice")
    version = make_model(owner=alice, name="Old", upload=complete_upload(user=alice, data=DATA))
    blob = version.files.get().blob
    stored = Path(blob_storage().path(blob.storage_name))
    old = Path(settings.MEDIA_ROOT) / blob.storage_name
    old.parent.mkdir(parents=True)
    shutil.move(stored, old)
    assert "registry.W001" in _ids()

    # When the operator runs the move command (twice: it is idempotent)
    call_command("blobs_move_private")
    call_command("blobs_move_private")

    # Then the blob is in the private storage only, the warning is gone, downloads work
    assert not old.exists() and not (Path(settings.MEDIA_ROOT) / "blobs").exists()
    assert stored.read_bytes() == DATA
    assert "registry.W001" not in _ids()
    client = Client()
    location = client.get(f"/api/download/models/{version.pk}")["Location"]
    assert b"".join(client.get(location).streaming_content) == DATA


def test_a_blob_folder_inside_media_or_an_unknown_sendfile_mode_is_refused(
    settings: Any, tmp_path: Path
) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "registry.storage.PrivateFileSystemStorage",
            "OPTIONS": {"location": str(Path(settings.MEDIA_ROOT) / "private")},
        },
    }
    settings.ATELIER_SENDFILE = "x-lighttpd"
    assert {"registry.E001", "registry.E002"} <= _ids()


def test_a_plain_filesystem_storage_for_blobs_is_refused(settings: Any, tmp_path: Path) -> None:
    # (its files would get MEDIA_URL addresses)
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "elsewhere")},
        },
    }
    assert "registry.E003" in _ids()
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "registry.storage.PrivateFileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "elsewhere")},
        },
    }
    assert _ids() == set()
    assert storages["blobs"] is blob_storage()


def test_settings_give_blobs_a_private_storage_in_every_configuration(tmp_path: Path) -> None:
    code = (
        "from django.conf import settings as s; import json; "
        "print(json.dumps([s.STORAGES['blobs'], str(s.MEDIA_ROOT)]))"
    )

    def storages_for(**env: str) -> tuple[dict[str, Any], str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BLOB_"))}
        full.update(DJANGO_SETTINGS_MODULE="config.settings", ATELIER_VAR_DIR=str(tmp_path), **env)
        out = subprocess.run(
            [sys.executable, "-c", "import django; django.setup(); " + code],
            cwd=ROOT,
            env=full,
            capture_output=True,
            text=True,
            check=True,
        )
        blobs, media = json.loads(out.stdout.strip().splitlines()[-1])
        return blobs, media

    # Local disk (demo and default production): a URL-less folder outside MEDIA_ROOT
    blobs, media = storages_for(DJANGO_DEBUG="1")
    assert blobs["BACKEND"] == "registry.storage.PrivateFileSystemStorage"
    assert not blobs["OPTIONS"]["location"].startswith(media)
    # S3: presigned GETs only, never a public custom domain, optionally a bucket of its own
    blobs, _ = storages_for(
        SECRET_KEY="x",
        AWS_STORAGE_BUCKET_NAME="pub",
        AWS_BLOB_BUCKET_NAME="priv",
        AWS_S3_CUSTOM_DOMAIN="cdn.example",
    )
    assert blobs["BACKEND"] == "storages.backends.s3.S3Storage"
    assert blobs["OPTIONS"]["bucket_name"] == "priv"
    assert blobs["OPTIONS"]["querystring_auth"] is True
    assert blobs["OPTIONS"]["custom_domain"] is None
