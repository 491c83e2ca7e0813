"""Range downloads under the production web server: gunicorn sends a window of the file with
``sendfile``, logs no error, and keeps the connection open for the client's next request."""

from __future__ import annotations

import http.client
import io
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.gunicorn_server import gunicorn_server
from tests.registry.compat_fixtures import publish_file
from tests.registry.factories import complete_upload, lora_bytes, make_model

pytest_plugins = ["tests.registry.compat_fixtures"]

DATA = lora_bytes(seed=23, rank=8)


@pytest.fixture
def version(transactional_db: None, make_user: Any) -> Any:
    alice = make_user("alice")
    upload = complete_upload(user=alice, data=DATA, filename="ranged.safetensors")
    return make_model(owner=alice, name="Ranged", upload=upload)


def _get(conn: http.client.HTTPConnection, path: str, **headers: str) -> tuple[int, dict, bytes]:
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_range_requests_on_one_connection_under_gunicorn(
    version: Any, settings: Any, tmp_path: Path
) -> None:
    # Given the site under gunicorn (threads: keep-alive on, as in production)
    with gunicorn_server(settings, tmp_path / "gunicorn.log") as site:
        conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=20)
        # And a signed link from the download route
        status, headers, _ = _get(conn, f"/api/download/models/{version.pk}")
        assert status == 302
        signed = urlsplit(headers["Location"])
        path = f"{signed.path}?{signed.query}"
        repo = f"/alice/{version.model.slug}/resolve/main/ranged.safetensors"
        sock = conn.sock

        # When a client asks for ranges, one after another on that connection
        answers = [
            _get(conn, path, Range="bytes=0-99"),
            _get(conn, path, Range="bytes=100-"),
            _get(conn, repo, Range="bytes=-10"),
            _get(conn, path),
        ]

        # Then each is the right window of the file
        assert [a[0] for a in answers] == [206, 206, 206, 200]
        assert answers[0][2] == DATA[:100]
        assert answers[0][1]["Content-Range"] == f"bytes 0-99/{len(DATA)}"
        assert answers[1][2] == DATA[100:]
        assert answers[2][2] == DATA[-10:]
        assert answers[3][2] == DATA
        # And the connection stayed open the whole time
        assert conn.sock is sock and sock is not None
        conn.close()
        # And gunicorn logged no error
        log = site.log()
        assert "Traceback" not in log and "UnsupportedOperation" not in log, log[-3000:]


def test_diffusers_archive_streams_with_ranges_under_gunicorn(
    transactional_db: None,
    make_user: Any,
    civitai_files: dict[str, Path],
    settings: Any,
    tmp_path: Path,
) -> None:
    # Given a two-file (diffusers layout) version, whose download is one zip built as it is sent
    _, folder = publish_file(
        owner=make_user("alice"),
        name="Folder",
        kind="checkpoint",
        file=civitai_files["photo"],
        extra_files={"unet/config.json": civitai_files["config"]},
    )
    with gunicorn_server(settings, tmp_path / "gunicorn.log") as site:
        conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=20)
        status, headers, _ = _get(conn, f"/api/download/models/{folder.pk}")
        assert status == 302
        signed = urlsplit(headers["Location"])
        path = f"{signed.path}?{signed.query}"
        # When it is fetched whole, then two ranges, on one connection
        answers = [
            _get(conn, path),
            _get(conn, path, Range="bytes=100-199"),
            _get(conn, path, Range="bytes=-22"),
        ]
        conn.close()
        # Then the whole is a valid zip of the folder, and each range its window
        assert [a[0] for a in answers] == [200, 206, 206]
        whole = answers[0][2]
        assert answers[0][1]["Content-Length"] == str(len(whole))
        assert answers[0][1]["Content-Type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(whole)) as archive:
            assert archive.testzip() is None
            assert archive.read("unet/config.json") == civitai_files["config"].read_bytes()
        assert answers[1][2] == whole[100:200]
        assert answers[2][2] == whole[-22:]  # the end of central directory record
        assert answers[2][2][:4] == b"PK\x05\x06"
        log = site.log()
        assert "Traceback" not in log, log[-3000:]
