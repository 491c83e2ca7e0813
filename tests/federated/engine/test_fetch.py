"""The job's base model is fetched once per machine: bearer token, resumable, SHA-256 checked.

A real HTTP server on loopback (``http.server``) serves the tiny model's single file with
Range support and checks the bearer token, as the site's ``/api/v1/federated/jobs/<id>/base-model``
does; it can break a response off after some bytes and can ignore ranges.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federated.engine.errors import FetchError
from federated.engine.fetch import fetch_model, model_cache_path
from sdcore.tiny import TinyModelPaths
from tests.federated.engine.model_server import TOKEN, ModelServer, serve_model


@pytest.fixture(scope="module")
def model_bytes(tiny_model: TinyModelPaths) -> bytes:
    return tiny_model.single_file.read_bytes()


@pytest.fixture
def server(model_bytes: bytes) -> Iterator[ModelServer]:
    with serve_model(model_bytes) as state:
        yield state


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_model_is_downloaded_with_the_bearer_token_verified_and_reused_without_a_request(
    server: ModelServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sha = _sha(server.body)
    with caplog.at_level(logging.INFO, logger="federated.engine.fetch"):
        first = fetch_model(server.url, sha256=sha, token=TOKEN, cache_dir=tmp_path)
    assert first.path == tmp_path / "models" / f"{sha}.safetensors"
    assert first.source == "downloaded" and first.bytes_downloaded == len(server.body)
    assert first.path.read_bytes() == server.body
    assert not list((tmp_path / "models").glob("*.part"))
    assert server.requests[0]["Authorization"] == f"Bearer {TOKEN}"
    assert "Range" not in server.requests[0]
    assert any("verified SHA-256" in r.getMessage() for r in caplog.records)

    again = fetch_model(server.url, sha256=sha, token=TOKEN, cache_dir=tmp_path)
    assert again.source == "cached" and again.path == first.path
    assert len(server.requests) == 1


def test_an_interrupted_download_resumes_from_the_part_file_with_a_range_request(
    server: ModelServer, tmp_path: Path
) -> None:
    sha, size = _sha(server.body), len(server.body)
    server.break_after = 3 * 1024 * 1024
    with pytest.raises(FetchError) as caught:
        fetch_model(server.url, sha256=sha, token=TOKEN, cache_dir=tmp_path, retries=0)
    assert caught.value.code == "model_fetch_failed" and "resumes" in caught.value.message
    final = model_cache_path(tmp_path, sha)
    part = final.with_name(final.name + ".part")
    assert not final.exists() and part.stat().st_size == 3 * 1024 * 1024

    result = fetch_model(server.url, sha256=sha, token=TOKEN, cache_dir=tmp_path)
    assert result.source == "downloaded" and final.read_bytes() == server.body
    assert server.requests[1]["Range"] == f"bytes={3 * 1024 * 1024}-"
    assert result.bytes_downloaded == size - 3 * 1024 * 1024  # only the rest crossed the wire
    assert not part.exists()


def test_a_connection_that_breaks_is_retried_in_the_same_call_from_where_it_stopped(
    server: ModelServer, tmp_path: Path
) -> None:
    server.break_after = 1024 * 1024
    result = fetch_model(
        server.url, sha256=_sha(server.body), token=TOKEN, cache_dir=tmp_path, retries=1
    )
    assert result.path.read_bytes() == server.body
    assert [r.get("Range") for r in server.requests] == [None, f"bytes={1024 * 1024}-"]


def test_a_server_that_ignores_the_range_gets_the_file_downloaded_again_whole(
    server: ModelServer, tmp_path: Path
) -> None:
    sha = _sha(server.body)
    final = model_cache_path(tmp_path, sha)
    final.parent.mkdir(parents=True)
    final.with_name(final.name + ".part").write_bytes(b"\0" * 1000)  # not even the right bytes
    server.ignore_range = True
    result = fetch_model(server.url, sha256=sha, token=TOKEN, cache_dir=tmp_path)
    assert result.path.read_bytes() == server.body and server.requests[0]["Range"] == "bytes=1000-"


def test_a_download_with_another_sha256_is_deleted_and_refused(
    server: ModelServer, tmp_path: Path
) -> None:
    wanted = "ab" * 32
    with pytest.raises(FetchError) as caught:
        fetch_model(server.url, sha256=wanted, token=TOKEN, cache_dir=tmp_path)
    assert caught.value.code == "model_sha_mismatch"
    assert caught.value.details == {"expected": wanted, "actual": _sha(server.body)}
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")] == []


def test_a_wrong_job_token_is_a_clear_error_and_writes_nothing(
    server: ModelServer, tmp_path: Path
) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_model(server.url, sha256=_sha(server.body), token="atj_wrong", cache_dir=tmp_path)
    err = caught.value
    assert err.code == "model_fetch_unauthorized" and err.details == {"status": 401}
    assert "refused the token" in err.message and "Invalid job token." in err.message
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.parametrize("sha", ["../../etc/passwd", "AB" * 31, ""])
def test_a_sha_that_is_not_a_hex_digest_is_refused_before_any_request(
    server: ModelServer, tmp_path: Path, sha: str
) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_model(server.url, sha256=sha, token=TOKEN, cache_dir=tmp_path)
    assert caught.value.code == "model_sha_invalid" and server.requests == []


def test_two_downloads_at_once_on_one_node_make_one_request(
    server: ModelServer, tmp_path: Path
) -> None:
    # flock locks belong to an open file, so two threads contend exactly as two processes do
    sha = _sha(server.body)
    server.delay = 0.02  # ~1 s for the tiny model: the second caller arrives mid-download
    results: list[object] = []

    def fetch() -> None:
        results.append(fetch_model(server.url, sha256=sha, token=TOKEN, cache_dir=tmp_path))

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(timeout=60)
    assert len(server.requests) == 1
    assert sorted(r.source for r in results) == ["cached", "downloaded"]  # type: ignore[attr-defined]
    assert model_cache_path(tmp_path, sha).read_bytes() == server.body
