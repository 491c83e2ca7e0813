"""``atelier push`` against a live site: upload, resume after an interruption, errors."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from client.http import AtelierClient, NetworkError, UploadInfo
from registry.models import Model, ModelFile, ModelVersion, Upload, UploadStatus, VersionStatus
from tests.client.conftest import Result
from tests.registry.factories import lora_bytes

# Tests that talk to the live site need committed data (a transactional database).
live = pytest.mark.django_db(transaction=True)


def push_args(path: Path, *extra: str) -> list[str]:
    return [str(path), "--name", "Ink style", "--kind", "lora", "-q", *extra]


@live
def test_push_uploads_a_lora_and_creates_a_draft_version(
    cli: Callable[..., Result], logged_in: str, lora_path: Path
) -> None:
    # when alice pushes a small LoRA with trigger words
    result = cli(
        "push", *push_args(lora_path, "--trigger", "inkwash", "--trigger", "sumi-e", "--tag", "ink")
    )
    # then the site holds it, as a draft, byte for byte, with the model page printed
    assert result.code == 0, result.err
    version = ModelVersion.objects.select_related("model").get()
    model_file = ModelFile.objects.select_related("blob").get(version=version)
    assert version.model.name == "Ink style" and version.model.kind == "lora"
    assert version.status == VersionStatus.DRAFT
    assert version.trigger_words == ["inkwash", "sumi-e"]
    assert model_file.path == "ink-style.safetensors"
    assert model_file.blob_id == hashlib.sha256(lora_path.read_bytes()).hexdigest()
    assert model_file.lora_rank == 8
    assert result.out.strip() == (
        f"{logged_in}/models/{version.model_id}/{version.model.slug}/?version={version.pk}"
    )


@live
def test_push_sends_the_local_sha256_first(
    cli: Callable[..., Result], logged_in: str, lora_path: Path
) -> None:
    cli("push", *push_args(lora_path))
    upload = Upload.objects.get()
    assert upload.expected_sha256 == hashlib.sha256(lora_path.read_bytes()).hexdigest()


@live
def test_push_with_publish_publishes_the_version(
    cli: Callable[..., Result], logged_in: str, lora_path: Path
) -> None:
    result = cli("push", *push_args(lora_path, "--publish"))
    assert result.code == 0, result.err
    assert ModelVersion.objects.get().status == VersionStatus.PUBLISHED


@live
def test_push_of_a_diffusers_folder_keeps_the_relative_paths(
    cli: Callable[..., Result], logged_in: str, tmp_path: Path
) -> None:
    folder = tmp_path / "pipe"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (folder / "unet" / "config.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(lora_bytes(seed=3))
    result = cli("push", str(folder), "--name", "Pipe", "--kind", "checkpoint", "-q")
    assert result.code == 0, result.err
    version = ModelVersion.objects.get()
    assert sorted(version.files.values_list("path", flat=True)) == [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    assert version.layout == "diffusers"


@live
def test_interrupted_push_resumes_from_the_servers_offset(
    cli: Callable[..., Result], logged_in: str, lora_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a push whose connection breaks after its first 4 KiB chunk
    size = lora_path.stat().st_size
    sent: list[tuple[int, int]] = []
    real_append = AtelierClient.upload_append

    def append(self: AtelierClient, upload_id: str, *, offset: int, data: bytes) -> UploadInfo:
        if sent and fail_after_first:
            raise NetworkError("Cannot reach the site (connection reset).")
        sent.append((offset, len(data)))
        return real_append(self, upload_id, offset=offset, data=data)

    monkeypatch.setattr(AtelierClient, "upload_append", append)
    fail_after_first = True
    first = cli("push", *push_args(lora_path, "--chunk-size", "4K", "--retries", "0"))
    assert first.code == 1
    assert "rerun the same command to resume" in first.err
    assert "Traceback" not in first.err
    # and the server holds exactly that first chunk
    upload = Upload.objects.get()
    assert (upload.offset, upload.status) == (4096, UploadStatus.OPEN)
    assert not Model.objects.exists()
    # when the same command runs again
    sent.clear()
    fail_after_first = False
    second = cli("push", *push_args(lora_path, "--chunk-size", "4K", "--retries", "0"))
    # then it continues at the server's offset, sends only the rest, and completes that upload
    assert second.code == 0, second.err
    assert f"the server has 4096 of {size} bytes" in second.err
    assert sent[0][0] == 4096
    assert sum(length for _, length in sent) == size - 4096
    assert Upload.objects.count() == 1
    model_file = ModelFile.objects.get()
    assert model_file.blob_id == hashlib.sha256(lora_path.read_bytes()).hexdigest()


@live
def test_push_retries_a_dropped_chunk_by_asking_the_server_for_its_offset(
    cli: Callable[..., Result], logged_in: str, lora_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_append = AtelierClient.upload_append
    failures = [1]

    def flaky(self: AtelierClient, upload_id: str, *, offset: int, data: bytes) -> UploadInfo:
        if offset > 0 and failures:
            failures.pop()
            raise NetworkError("Cannot reach the site (connection reset).")
        return real_append(self, upload_id, offset=offset, data=data)

    monkeypatch.setattr(AtelierClient, "upload_append", flaky)
    monkeypatch.setattr("client.cli.time.sleep", lambda seconds: None)
    result = cli("push", *push_args(lora_path, "--chunk-size", "4K", "--retries", "1"))
    assert result.code == 0, result.err
    assert ModelFile.objects.get().blob.size == lora_path.stat().st_size


@live
def test_push_of_a_refused_pickle_shows_the_servers_reason(
    cli: Callable[..., Result], logged_in: str, tmp_path: Path
) -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(Evil(), protocol=2))
    result = cli("push", str(path), "--name", "Evil", "--kind", "checkpoint", "-q")
    assert result.code == 1
    assert result.err.startswith("atelier: error: evil.ckpt was refused: ")
    assert "system" in result.err
    assert not Model.objects.exists()


def test_push_of_a_missing_file(cli: Callable[..., Result], tmp_path: Path) -> None:
    result = cli("push", *push_args(tmp_path / "nope.safetensors"))
    assert result.code == 1
    assert (
        result.err.strip()
        == f"atelier: error: No such file or folder: {tmp_path / 'nope.safetensors'}"
    )


def test_push_of_an_unsupported_file_type(cli: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "notes.docx"
    path.write_bytes(b"PK\x03\x04")
    result = cli("push", *push_args(path))
    assert result.code == 1
    assert "Unsupported file type: notes.docx" in result.err


def test_push_when_not_logged_in(cli: Callable[..., Result], lora_path: Path) -> None:
    result = cli("push", *push_args(lora_path))
    assert result.code == 1
    assert "Not logged in" in result.err


def test_push_with_a_bad_kind_is_a_usage_error(cli: Callable[..., Result], lora_path: Path) -> None:
    result = cli("push", str(lora_path), "--name", "X", "--kind", "spaceship")
    assert result.code == 2
    assert "invalid choice: 'spaceship'" in result.err


def test_push_with_a_bad_chunk_size_is_a_usage_error(
    cli: Callable[..., Result], lora_path: Path
) -> None:
    result = cli("push", *push_args(lora_path, "--chunk-size", "lots"))
    assert result.code == 2
    assert "not a size" in result.err


@live
def test_push_shows_the_servers_4xx_message(
    cli: Callable[..., Result], logged_in: str, lora_path: Path
) -> None:
    # given a version name the model already has
    first = cli("push", *push_args(lora_path))
    model_id = ModelVersion.objects.get().model_id
    # when pushing again into the same model with the same version name
    again = cli("push", *push_args(lora_path, "--model", str(model_id)))
    # then the server's reason is shown
    assert first.code == 0
    assert again.code == 1
    assert again.err.strip() == "atelier: error: Version 'v1' already exists."


def test_push_without_name_and_kind_for_a_new_model_is_a_usage_error(
    cli: Callable[..., Result], lora_path: Path
) -> None:
    result = cli("push", str(lora_path))
    assert result.code == 2
    assert "--name and --kind are required for a new model" in result.err


@live
def test_push_a_new_version_into_an_existing_model(
    cli: Callable[..., Result], logged_in: str, lora_path: Path, tmp_path: Path
) -> None:
    assert cli("push", *push_args(lora_path)).code == 0
    model = Model.objects.get()
    second = tmp_path / "ink-style-v2.safetensors"
    second.write_bytes(lora_bytes(seed=2))
    result = cli("push", str(second), "--model", str(model.pk), "--version", "v2", "-q")
    assert result.code == 0, result.err
    assert sorted(model.versions.values_list("name", flat=True)) == ["v1", "v2"]
