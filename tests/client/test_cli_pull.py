"""``atelier pull`` against a live site: download, resume a partial file, verify, errors."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from registry.models import ModelVersion
from registry.services.catalog import FileSpec, model_create, version_create, version_publish
from registry.services.uploads import upload_whole_file
from tests.client.conftest import Result
from tests.registry.factories import lora_bytes

# Tests that talk to the live site need committed data (a transactional database).
live = pytest.mark.django_db(transaction=True)


def publish(
    owner: object,
    name: str,
    files: dict[str, bytes],
    *,
    version_name: str = "v1",
    visibility: str = "public",
    model=None,
) -> ModelVersion:  # type: ignore[no-untyped-def]
    specs = []
    for path, data in files.items():
        upload = upload_whole_file(
            user=owner,  # type: ignore[arg-type]
            filename=path.rsplit("/", 1)[-1],
            stream=io.BytesIO(data),
            size=len(data),
        )
        specs.append(FileSpec(upload=upload, path=path))
    model = model or model_create(owner=owner, name=name, kind="lora", visibility=visibility)  # type: ignore[arg-type]
    version = version_create(model=model, user=owner, name=version_name, files=specs)  # type: ignore[arg-type]
    return version_publish(version=version, user=owner)  # type: ignore[arg-type]


@pytest.fixture
def requests_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, str], int]]:
    """Every HTTP request the command makes: method, URL, headers, status."""
    seen: list[tuple[str, str, dict[str, str], int]] = []
    real = requests.Session.send

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any):  # type: ignore[no-untyped-def]
        response = real(self, request, **kwargs)
        seen.append(
            (str(request.method), str(request.url), dict(request.headers), response.status_code)
        )
        return response

    monkeypatch.setattr(requests.Session, "send", send)
    return seen


@live
def test_pull_by_id_downloads_every_file_of_the_latest_version(
    cli: Callable[..., Result], site: str, alice: object, tmp_path: Path
) -> None:
    # given a published version with two files
    data = {"lora.safetensors": lora_bytes(seed=1), "notes/readme.md": b"# How to use\n"}
    version = publish(alice, "Two files", data)
    # when anyone pulls the model by id
    out = tmp_path / "out"
    result = cli("pull", str(version.model_id), "--out", str(out), "--site", site, "-q")
    # then both files are there, byte for byte, and no partial file is left
    assert result.code == 0, result.err
    assert (out / "lora.safetensors").read_bytes() == data["lora.safetensors"]
    assert (out / "notes" / "readme.md").read_bytes() == data["notes/readme.md"]
    assert not list(out.rglob("*.part"))


@live
def test_pull_by_owner_slug_and_version_name(
    cli: Callable[..., Result], site: str, alice: object, tmp_path: Path
) -> None:
    first = publish(alice, "Ink wash", {"ink.safetensors": lora_bytes(seed=1)})
    publish(
        alice,
        "Ink wash",
        {"ink.safetensors": lora_bytes(seed=2)},
        version_name="v2",
        model=first.model,
    )
    result = cli(
        "pull", f"alice/{first.model.slug}@v1", "--out", str(tmp_path), "--site", site, "-q"
    )
    assert result.code == 0, result.err
    assert (tmp_path / "ink.safetensors").read_bytes() == lora_bytes(seed=1)


@live
def test_pull_resumes_a_partial_file_with_a_range_request(
    cli: Callable[..., Result],
    site: str,
    alice: object,
    tmp_path: Path,
    requests_seen: list[tuple[str, str, dict[str, str], int]],
) -> None:
    # given the first 5000 bytes of the file from an interrupted pull
    data = lora_bytes(seed=4, rank=16)
    version = publish(alice, "Big", {"big.safetensors": data})
    (tmp_path / "big.safetensors.part").write_bytes(data[:5000])
    # when the pull runs again
    result = cli("pull", str(version.model_id), "--out", str(tmp_path), "--site", site, "-q")
    # then it asked for the rest only, got 206, and the file is whole and verified
    assert result.code == 0, result.err
    ranged = [(h.get("Range"), status) for _, _, h, status in requests_seen if h.get("Range")]
    assert ranged[-1] == ("bytes=5000-", 206)
    assert (tmp_path / "big.safetensors").read_bytes() == data
    assert not (tmp_path / "big.safetensors.part").exists()
    assert "Resuming big.safetensors at 5000" in result.err


@live
def test_pull_discards_a_corrupt_partial_file_and_keeps_nothing_wrong(
    cli: Callable[..., Result], site: str, alice: object, tmp_path: Path
) -> None:
    # given a partial file whose bytes are not the file's
    data = lora_bytes(seed=5)
    version = publish(alice, "Corrupt", {"c.safetensors": data})
    (tmp_path / "c.safetensors.part").write_bytes(b"\x00" * 100)
    # when pulling
    result = cli("pull", str(version.model_id), "--out", str(tmp_path), "--site", site, "-q")
    # then the SHA-256 check fails, the bad part is gone, nothing took the file's name
    assert result.code == 1
    assert "SHA-256 mismatch" in result.err
    assert not (tmp_path / "c.safetensors.part").exists()
    assert not (tmp_path / "c.safetensors").exists()
    # and a rerun downloads it whole
    assert (
        cli("pull", str(version.model_id), "--out", str(tmp_path), "--site", site, "-q").code == 0
    )
    assert (
        hashlib.sha256((tmp_path / "c.safetensors").read_bytes()).hexdigest()
        == hashlib.sha256(data).hexdigest()
    )


@live
def test_pull_skips_a_file_already_there(
    cli: Callable[..., Result],
    site: str,
    alice: object,
    tmp_path: Path,
    requests_seen: list[tuple[str, str, dict[str, str], int]],
) -> None:
    data = lora_bytes(seed=6)
    version = publish(alice, "Done", {"d.safetensors": data})
    (tmp_path / "d.safetensors").write_bytes(data)
    result = cli("pull", str(version.model_id), "--out", str(tmp_path), "--site", site, "-q")
    assert result.code == 0, result.err
    assert "up to date" in result.err
    assert not [url for _, url, _, _ in requests_seen if "/download" in url or "/files/" in url]


@live
def test_pull_of_an_unknown_model(cli: Callable[..., Result], site: str, tmp_path: Path) -> None:
    result = cli("pull", "999999", "--out", str(tmp_path), "--site", site)
    assert result.code == 1
    assert "No such model" in result.err


@live
def test_pull_of_someone_elses_private_model_is_not_found(
    cli: Callable[..., Result], site: str, alice: object, tmp_path: Path
) -> None:
    version = publish(alice, "Secret", {"s.safetensors": lora_bytes(seed=7)}, visibility="private")
    out = tmp_path / "out"
    result = cli("pull", str(version.model_id), "--out", str(out), "--site", site)
    assert result.code == 1
    assert "No such model" in result.err
    assert not out.exists()


@live
def test_pull_of_an_unknown_version_names_the_ones_there(
    cli: Callable[..., Result], site: str, alice: object, tmp_path: Path
) -> None:
    version = publish(alice, "Named", {"n.safetensors": lora_bytes(seed=8)})
    result = cli("pull", f"{version.model_id}@v9", "--out", str(tmp_path), "--site", site)
    assert result.code == 1
    assert "has no version 'v9' (v1)" in result.err


def test_pull_with_a_malformed_model_argument(cli: Callable[..., Result], tmp_path: Path) -> None:
    result = cli("pull", "just-a-name", "--out", str(tmp_path), "--site", "http://127.0.0.1:9")
    assert result.code == 1
    assert "neither a model id nor owner/slug" in result.err


@live
def test_pull_without_a_version_takes_the_newest_published_one(
    cli: Callable[..., Result], site: str, alice: object, tmp_path: Path
) -> None:
    first = publish(alice, "Versions", {"w.safetensors": lora_bytes(seed=1)})
    publish(
        alice,
        "Versions",
        {"w.safetensors": lora_bytes(seed=2)},
        version_name="v2",
        model=first.model,
    )
    result = cli("pull", str(first.model_id), "--out", str(tmp_path / "out"), "--site", site, "-q")
    assert result.code == 0, result.err
    assert (tmp_path / "out" / "w.safetensors").read_bytes() == lora_bytes(seed=2)
