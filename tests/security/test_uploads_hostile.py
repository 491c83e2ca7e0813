"""Hostile uploads through real HTTP: a zip whose headers lie about sizes, version file paths
that Windows reads as traversal or another drive, and a refused PATCH whose unread body
must not break the client's connection (Django's server and gunicorn)."""

from __future__ import annotations

import http.client
import io
import json
import random
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from core.services import token_create
from registry.models import Blob, DatasetVersion, ModelFile, ModelVersion, Upload, UploadStatus
from registry.services.catalog import model_create
from registry.services.uploads import upload_create
from tests.gunicorn_server import gunicorn_server
from tests.registry.factories import complete_upload, png_bytes

BOMB = 4 * 1024 * 1024  # what the lying member really inflates to


@pytest.fixture
def alice(transactional_db: None, settings: Any, no_rate_limits: None) -> Any:
    settings.ALLOWED_HOSTS = ["*"]
    return get_user_model().objects.create_user(
        username="alice", email="alice@example.test", password="a-long-passphrase"
    )


@pytest.fixture
def session(alice: Any) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token_create(user=alice, name='t').secret}"
    return http


def _error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == code, body
    return body


def _upload(http: requests.Session, base: str, data: bytes, filename: str) -> requests.Response:
    created = http.post(f"{base}/api/v1/uploads", json={"filename": filename, "size": len(data)})
    assert created.status_code == 201, created.text
    upload_id = created.json()["id"]
    appended = http.patch(
        f"{base}/api/v1/uploads/{upload_id}",
        data=data,
        headers={"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert appended.status_code == 200, appended.text
    return http.post(f"{base}/api/v1/uploads/{upload_id}/complete", json={})


# --- a zip whose headers lie about its members' sizes -----------------------------------------


def _dataset_zip(*, lie: bool) -> bytes:
    """A captioned dataset whose ``0002.png`` holds 4 MiB (random: no compression ratio to
    catch); with ``lie`` its local and central headers say 1 byte (and carry the CRC of that
    one byte, so that a reader stopping where the headers say finds nothing wrong)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images/0001.png", png_bytes())
        archive.writestr("images/0001.txt", b"a red square")
        archive.writestr("images/0002.png", random.Random(0).randbytes(BOMB))
        archive.writestr("images/0002.txt", b"nothing at all")
    raw = bytearray(buffer.getvalue())
    if not lie:
        return bytes(raw)
    name = b"images/0002.png"
    first = random.Random(0).randbytes(1)
    # (signature, offset of the CRC-32, of the uncompressed size, of the name) in each header
    for signature, crc_at, size_at, name_at in (
        (b"PK\x03\x04", 14, 22, 30),
        (b"PK\x01\x02", 16, 24, 46),
    ):
        start = raw.find(signature)
        while start != -1:
            if raw[start + name_at : start + name_at + len(name)] == name:
                struct.pack_into("<I", raw, start + crc_at, zlib.crc32(first))
                struct.pack_into("<I", raw, start + size_at, 1)
            start = raw.find(signature, start + 4)
    return bytes(raw)


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_zip_whose_headers_lie_about_sizes_is_refused_and_nothing_is_stored(
    live_server: Any, session: requests.Session, tmp_path: Path
) -> None:
    # Given a public dataset and a zip that declares 1 byte for a member holding 4 MiB
    base = live_server.url
    dataset = session.post(f"{base}/api/v1/datasets", json={"name": "Shapes", "kind": "public"})
    assert dataset.status_code == 201, dataset.text
    data = _dataset_zip(lie=True)
    assert zipfile.ZipFile(io.BytesIO(data)).getinfo("images/0002.png").file_size == 1
    # (its honest twin is a dataset the site takes)
    honest = _upload(session, base, _dataset_zip(lie=False), "honest.zip")
    assert honest.status_code == 200, honest.text
    assert honest.json()["inspection"]["archive"]["image_count"] == 2
    blobs_before, files_before = Blob.objects.count(), set(_files_under(tmp_path))

    # When the liar is uploaded and completed
    response = _upload(session, base, data, "data.zip")

    # Then it is refused with a 4xx naming the member
    body = _error(response, 422, "size_mismatch")
    assert "images/0002.png" in body["message"]
    # And nothing is stored: no blob, no part file, no file in any storage of this test
    upload = Upload.objects.get(filename="data.zip")
    assert upload.status == UploadStatus.FAILED and upload.blob_id is None
    assert Blob.objects.count() == blobs_before == 1
    assert set(_files_under(tmp_path)) == files_before
    assert _files_under(Path(django_settings.UPLOAD_TEMP_DIR)) == []
    # And the refused upload cannot become a dataset version
    version = session.post(
        f"{base}/api/v1/datasets/{dataset.json()['id']}/versions",
        json={"name": "v1", "upload_id": str(upload.pk)},
    )
    assert 400 <= version.status_code < 500, version.text
    assert DatasetVersion.objects.count() == 0


# --- version file paths ---------------------------------------------------------------------

HOSTILE_PATHS = [
    "..\\..\\evil.safetensors",
    "C:/Windows/evil.safetensors",
    "C:evil.safetensors",
    "loras/C:evil.safetensors",
    "\\\\server\\share\\evil.safetensors",
    "/etc/evil.safetensors",
]


def test_version_file_paths_that_leave_their_folder_on_some_system_are_refused(
    live_server: Any, session: requests.Session, alice: Any
) -> None:
    # Given a completed LoRA upload and a model
    upload = complete_upload(user=alice)
    model = model_create(owner=alice, name="Ink", kind="lora")

    for path in HOSTILE_PATHS:
        # When a version names its file with a path Windows (or any system) resolves
        # outside the folder a client saves the version in
        response = session.post(
            f"{live_server.url}/api/v1/models/{model.pk}/versions",
            json={"name": "v1", "files": [{"upload_id": str(upload.pk), "path": path}]},
        )

        # Then it is refused like '..', saying why, and no version or file row is left
        body = _error(response, 400, "bad_path")
        assert repr(path) in body["message"], body
        assert body["details"]["path"] == path
        assert ModelVersion.objects.filter(model=model).count() == 0
    assert ModelFile.objects.count() == 0


def test_a_plain_nested_version_file_path_is_kept(
    live_server: Any, session: requests.Session, alice: Any
) -> None:
    # Given a completed upload
    upload = complete_upload(user=alice)
    model = model_create(owner=alice, name="Ink", kind="lora")
    # When its path is an ordinary relative one, with a harmless "./" and a doubled slash
    response = session.post(
        f"{live_server.url}/api/v1/models/{model.pk}/versions",
        json={
            "name": "v1",
            "files": [{"upload_id": str(upload.pk), "path": "./loras//ink.safetensors"}],
        },
    )
    # Then it is stored, normalized
    assert response.status_code == 201, response.text
    assert [f["path"] for f in response.json()["files"]] == ["loras/ink.safetensors"]


# --- a refused PATCH with its body unread --------------------------------------------------


def _too_large_then_next(port: int, token: str, upload_id: str) -> tuple[Any, ...]:
    """On one connection: a PATCH with 1 MiB more than the upload holds, then a GET."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    auth = {"Authorization": f"Bearer {token}"}
    conn.request(
        "PATCH",
        f"/api/v1/uploads/{upload_id}",
        body=b"x" * (1024 * 1024),
        headers={**auth, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    first = conn.getresponse()
    first_body = json.loads(first.read())
    kept_open = first.getheader("Connection", "").lower() != "close"
    sock = conn.sock
    # The client's next request: on the same connection if the server kept it open, else
    # http.client opens a new one (as requests would)
    conn.request("GET", f"/api/v1/uploads/{upload_id}", headers=auth)
    second = conn.getresponse()
    second_body = json.loads(second.read())
    same_socket = conn.sock is sock and sock is not None
    conn.close()
    return first.status, first_body, kept_open, same_socket, second.status, second_body


@pytest.fixture
def small_upload(alice: Any) -> tuple[str, str]:
    upload = upload_create(user=alice, filename="small.safetensors", size=10)
    return token_create(user=alice, name="conn").secret, str(upload.pk)


def test_after_an_early_413_the_next_request_on_the_connection_is_answered_by_gunicorn(
    small_upload: tuple[str, str], settings: Any, tmp_path: Path
) -> None:
    # Given the site under gunicorn with threads (keep-alive, as the demo and production run)
    token, upload_id = small_upload
    with gunicorn_server(settings, tmp_path / "gunicorn.log") as site:
        # When a PATCH sends more than the upload's size, then the client asks again
        status, body, kept_open, same_socket, next_status, next_body = _too_large_then_next(
            site.port, token, upload_id
        )
        log = site.log()

    # Then the PATCH gets a 413 in the JSON error shape
    assert status == 413 and body["code"] == "too_large", body
    # And the next request is answered, on the connection the server said it kept
    assert next_status == 200 and next_body["offset"] == 0, next_body
    assert kept_open and same_socket
    assert "Traceback" not in log, log[-3000:]


def test_after_an_early_413_the_next_request_on_the_connection_is_answered_by_runserver(
    live_server: Any, small_upload: tuple[str, str]
) -> None:
    # Given Django's own threaded server (the test server, as `manage.py runserver`)
    token, upload_id = small_upload
    port = int(live_server.url.rsplit(":", 1)[1])
    # When a PATCH sends more than the upload's size, then the client asks again
    status, body, kept_open, same_socket, next_status, next_body = _too_large_then_next(
        port, token, upload_id
    )
    # Then the 413 is JSON and the next request is answered on the same connection
    assert status == 413 and body["code"] == "too_large", body
    assert next_status == 200 and next_body["offset"] == 0, next_body
    assert kept_open and same_socket


def test_after_a_json_body_refused_as_too_large_gunicorn_answers_the_next_request(
    small_upload: tuple[str, str], settings: Any, tmp_path: Path
) -> None:
    # Given the site under gunicorn with threads, and a client with a token
    token, _ = small_upload
    auth = {"Authorization": f"Bearer {token}"}
    with gunicorn_server(settings, tmp_path / "gunicorn.log") as site:
        conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=20)
        # When it posts an 11 MB JSON body (over DATA_UPLOAD_MAX_MEMORY_SIZE), then asks again
        big = json.dumps({"name": "x", "description": "y" * (11 * 1024 * 1024)}).encode()
        conn.request(
            "POST", "/api/v1/models", body=big, headers={**auth, "Content-Type": "application/json"}
        )
        first = conn.getresponse()
        first_body = json.loads(first.read())
        sock = conn.sock
        conn.request("GET", "/api/v1/auth/whoami", headers=auth)
        second = conn.getresponse()
        second.read()
        same_socket = conn.sock is sock and sock is not None
        conn.close()
        log = site.log()

    # Then the refusal is a 413 in the JSON error shape
    assert first.status == 413 and first_body["code"] == "too_large", first_body
    # And the next request is answered on the same connection (no broken pipe)
    assert second.status == 200 and same_socket
    assert "Traceback" not in log, log[-3000:]
