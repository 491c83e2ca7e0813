"""Resumable uploads over the HTTP API: round trip, resume, refusals that leave nothing behind."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from registry.models import Blob, Upload, UploadStatus
from registry.services.uploads import part_path
from tests.registry.factories import lora_bytes, safetensors_with_header

pytestmark = pytest.mark.django_db

UPLOADS = "/api/v1/uploads"


@pytest.fixture
def client(alice, token_for) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    return api


def create(client: APIClient, data: bytes, filename: str = "lora.safetensors", **extra: Any):
    body = {"filename": filename, "size": len(data), **extra}
    return client.post(UPLOADS, body, format="json")


def append(client: APIClient, upload_id: str, offset: int, data: bytes):
    return client.patch(
        f"{UPLOADS}/{upload_id}",
        data=data,
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET=str(offset),
    )


def complete(client: APIClient, upload_id: str):
    return client.post(f"{UPLOADS}/{upload_id}/complete", {}, format="json")


def upload_all(client: APIClient, data: bytes, filename: str = "lora.safetensors", **extra: Any):
    created = create(client, data, filename, **extra)
    assert created.status_code == 201, created.json()
    upload_id = created.json()["id"]
    assert append(client, upload_id, 0, data).status_code == 200
    return upload_id, complete(client, upload_id)


def stored_files() -> list[Path]:
    files = []
    for root in (Path(settings.MEDIA_ROOT), Path(settings.BLOB_ROOT)):
        files += [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    return files


def part_files() -> list[Path]:
    root = Path(settings.UPLOAD_TEMP_DIR)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def assert_nothing_stored() -> None:
    assert Blob.objects.count() == 0
    assert stored_files() == []
    assert part_files() == []


# --- the happy path --------------------------------------------------------------------------


def test_three_part_round_trip_stores_the_exact_bytes_with_their_hashes(client: APIClient) -> None:
    # Given a LoRA file cut in three parts
    data = lora_bytes(seed=1)
    sha = hashlib.sha256(data).hexdigest()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    created = create(client, data, sha256=sha.upper())
    upload_id = created.json()["id"]

    # When each part is appended at the offset the server reports, then completed
    offset = 0
    for start, end in zip(cuts, cuts[1:], strict=False):
        response = append(client, upload_id, offset, data[start:end])
        assert response.status_code == 200
        offset = int(response["Upload-Offset"])
        assert offset == end
    done = complete(client, upload_id)

    # Then the blob holds the same bytes and the inspection says what the file is
    assert done.status_code == 200, done.json()
    body = done.json()
    assert body["status"] == "complete"
    assert body["sha256"] == sha
    assert body["inspection"]["kind"] == "lora"
    assert body["inspection"]["architecture"] == "sd1"
    assert body["inspection"]["lora_rank"] == 4
    blob = Blob.objects.get(pk=sha)
    assert blob.autov2 == sha[:10]
    [stored] = stored_files()
    assert stored.read_bytes() == data
    assert part_files() == []


def test_append_resumes_from_the_offset_after_an_interrupted_part(client: APIClient) -> None:
    # Given an upload whose first part arrived before the connection dropped
    data = lora_bytes(seed=2)
    upload_id = create(client, data).json()["id"]
    first = len(data) // 2
    append(client, upload_id, 0, data[:first])

    # When the client asks where the upload stands and sends the rest from there
    status = client.get(f"{UPLOADS}/{upload_id}")
    offset = int(status["Upload-Offset"])
    rest = append(client, upload_id, offset, data[offset:])
    done = complete(client, upload_id)

    # Then the server had kept the first part and the file is whole
    assert status.json()["offset"] == first
    assert rest.status_code == 200
    assert done.status_code == 200
    assert done.json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_same_bytes_uploaded_twice_make_one_blob_and_one_stored_file(client: APIClient) -> None:
    # Given a file already uploaded
    data = lora_bytes(seed=3)
    _, first = upload_all(client, data, "first.safetensors")

    # When the same bytes are uploaded again under another name
    _, second = upload_all(client, data, "second.safetensors")

    # Then both uploads point at one blob, stored once
    assert first.json()["sha256"] == second.json()["sha256"]
    assert Blob.objects.count() == 1
    assert len(stored_files()) == 1
    assert Upload.objects.filter(status=UploadStatus.COMPLETE).count() == 2


def test_nul_characters_in_safetensors_metadata_do_not_break_completion(
    client: APIClient,
) -> None:
    # Given a LoRA whose metadata key and value hold NUL characters (valid JSON, not storable)
    data = lora_bytes(metadata={"ss_output_name": "ink\u0000style", "odd\u0000key": "x"})

    # When it is uploaded
    _, response = upload_all(client, data, "nul.safetensors")

    # Then it is stored, with the NULs replaced
    assert response.status_code == 200, response.json()
    metadata = Upload.objects.get().inspection["metadata"]
    assert "\\u0000" not in json.dumps(metadata)
    assert "ink\ufffdstyle" in json.dumps(metadata, ensure_ascii=False)


# --- offsets and sizes -----------------------------------------------------------------------


def test_append_at_a_wrong_offset_is_409_with_the_real_offset(client: APIClient) -> None:
    data = lora_bytes()
    upload_id = create(client, data).json()["id"]
    append(client, upload_id, 0, data[:100])

    response = append(client, upload_id, 50, data[50:200])

    assert response.status_code == 409
    assert response.json()["code"] == "offset_mismatch"
    assert response.json()["details"]["offset"] == 100


def test_more_bytes_than_declared_is_413_and_the_part_is_dropped(client: APIClient) -> None:
    # Given an upload with its first 100 bytes received
    data = lora_bytes()
    upload_id = create(client, data).json()["id"]
    append(client, upload_id, 0, data[:100])

    # When the next part runs past the declared size
    response = append(client, upload_id, 100, data[100:] + b"extra bytes")

    # Then it is refused and only the first 100 bytes remain
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert client.get(f"{UPLOADS}/{upload_id}").json()["offset"] == 100
    assert part_path(Upload.objects.get(pk=upload_id)).stat().st_size == 100


def test_create_past_the_size_limit_is_413(client: APIClient, settings) -> None:
    settings.ATELIER_MAX_UPLOAD_BYTES = 1000

    response = client.post(UPLOADS, {"filename": "big.safetensors", "size": 1001}, format="json")

    assert response.status_code == 413
    assert response.json()["details"]["limit"] == 1000
    assert Upload.objects.count() == 0


def test_append_without_an_offset_header_is_400(client: APIClient) -> None:
    upload_id = create(client, b"x" * 10).json()["id"]

    response = client.patch(
        f"{UPLOADS}/{upload_id}", data=b"x", content_type="application/offset+octet-stream"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "offset_required"


def test_complete_before_all_bytes_arrived_is_400_with_the_offset(client: APIClient) -> None:
    data = lora_bytes()
    upload_id = create(client, data).json()["id"]
    append(client, upload_id, 0, data[:10])

    response = complete(client, upload_id)

    assert response.status_code == 400
    assert response.json()["code"] == "upload_incomplete"
    assert response.json()["details"]["offset"] == 10


# --- refused content leaves nothing behind ---------------------------------------------------


def test_mismatched_sha256_is_400_and_leaves_no_blob_and_no_part(client: APIClient) -> None:
    data = lora_bytes()

    _, response = upload_all(client, data, sha256="0" * 64)

    assert response.status_code == 400
    assert response.json()["code"] == "hash_mismatch"
    assert_nothing_stored()


def _lora_layout(**overrides: Any) -> tuple[dict[str, Any], bytes]:
    """A header for two F32 tensors of 4 and 8 bytes, and its 12-byte data section."""
    header: dict[str, Any] = {
        "a.lora_down.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        "a.lora_up.weight": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    header.update(overrides)
    return header, bytes(12)


def _truncated_file() -> bytes:
    return lora_bytes()[:-100]


def _header_past_the_file() -> bytes:
    return struct.pack("<Q", 10_000) + b'{"a": {}}'


def _lying_offsets() -> bytes:
    header, data = _lora_layout(
        **{"a.lora_up.weight": {"dtype": "F32", "shape": [2], "data_offsets": [4, 1_000_004]}}
    )
    return safetensors_with_header(header, data)


def _overlapping_offsets() -> bytes:
    header, data = _lora_layout(
        **{"a.lora_up.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    )
    return safetensors_with_header(header, data[:8])


def _unknown_dtype() -> bytes:
    header, data = _lora_layout(
        **{"a.lora_down.weight": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}
    )
    return safetensors_with_header(header, data)


def _hundred_megabyte_header() -> bytes:
    return struct.pack("<Q", 100 * 1024 * 1024) + b'{"__metadata__": {}}' + bytes(64)


@pytest.mark.parametrize(
    ("make_bytes", "code"),
    [
        (_truncated_file, "tensor_out_of_range"),
        (_header_past_the_file, "header_past_end"),
        (_lying_offsets, "tensor_size_mismatch"),
        (_overlapping_offsets, "tensor_overlap"),
        (_unknown_dtype, "tensor_dtype_unknown"),
        (_hundred_megabyte_header, "header_too_large"),
    ],
    ids=["truncated", "header-past-end", "lying-offsets", "overlap", "unknown-dtype", "100MB"],
)
def test_broken_safetensors_is_422_with_the_sdcore_code_and_nothing_stored(
    client: APIClient, make_bytes: Any, code: str
) -> None:
    # Given the bytes of a damaged or lying safetensors file
    data = make_bytes()

    # When it is uploaded and completed
    _, response = upload_all(client, data, "broken.safetensors")

    # Then it is refused with sdcore's code, and nothing is kept
    assert response.status_code == 422
    assert response.json()["code"] == code
    assert_nothing_stored()


def _global_call(module: str, name: str, argument: str) -> bytes:
    """A protocol-2 pickle that calls ``module.name(argument)`` when loaded."""
    arg = argument.encode()
    return (
        b"\x80\x02"
        + b"c"
        + module.encode()
        + b"\n"
        + name.encode()
        + b"\n"
        + b"X"
        + struct.pack("<I", len(arg))
        + arg
        + b"\x85R."
    )


@pytest.mark.parametrize(
    ("module", "name", "command"),
    [
        ("os", "system", "touch {marker}"),
        ("builtins", "eval", "open({marker!r}, 'w').write('pwned')"),
    ],
    ids=["os.system", "builtins.eval"],
)
def test_malicious_ckpt_is_422_never_executed_and_not_stored(
    client: APIClient, tmp_path: Path, module: str, name: str, command: str
) -> None:
    # Given a .ckpt whose pickle would create a marker file if anything loaded it
    marker = tmp_path / "pwned"
    data = _global_call(module, name, command.format(marker=str(marker)))

    # When it is uploaded
    _, response = upload_all(client, data, "model.ckpt")

    # Then it is refused for its import, nothing ran, and nothing is kept
    assert response.status_code == 422
    assert response.json()["code"] == "pickle_dangerous_import"
    assert f"{module}.{name}" in response.json()["message"]
    assert not marker.exists()
    assert_nothing_stored()


def _zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return out.getvalue()


@pytest.mark.parametrize(
    "make_bytes",
    [lambda: _global_call("collections", "OrderedDict", "x"), _zip_bytes],
    ids=["pickle", "zip"],
)
def test_safetensors_name_on_other_bytes_is_422_format_mismatch(
    client: APIClient, make_bytes: Any
) -> None:
    _, response = upload_all(client, make_bytes(), "innocent.safetensors")

    assert response.status_code == 422
    assert response.json()["code"] == "format_mismatch"
    assert_nothing_stored()


@pytest.mark.parametrize("filename", ["../x.safetensors", "a/b.safetensors", ".hidden.safetensors"])
def test_bad_file_names_are_400(client: APIClient, filename: str) -> None:
    response = client.post(UPLOADS, {"filename": filename, "size": 10}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "bad_filename"
    assert Upload.objects.count() == 0


def test_a_file_type_outside_the_allowed_list_is_400(client: APIClient) -> None:
    response = client.post(UPLOADS, {"filename": "run.exe", "size": 10}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "unsupported_type"


# --- who may touch an upload -----------------------------------------------------------------


def test_another_users_upload_is_404_for_every_operation(
    client: APIClient, make_user, token_for
) -> None:
    # Given alice's upload with some bytes in it
    data = lora_bytes()
    upload_id = create(client, data).json()["id"]
    append(client, upload_id, 0, data[:10])
    mallory = APIClient()
    mallory.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(make_user('mallory'))}")

    # When another user reads, appends to, completes or aborts it
    responses = [
        mallory.get(f"{UPLOADS}/{upload_id}"),
        append(mallory, upload_id, 10, data[10:]),
        complete(mallory, upload_id),
        mallory.delete(f"{UPLOADS}/{upload_id}"),
    ]

    # Then every call is 404 and the upload is untouched
    assert [r.status_code for r in responses] == [404, 404, 404, 404]
    assert Upload.objects.get(pk=upload_id).offset == 10


def test_anonymous_upload_is_401(db) -> None:
    response = APIClient().post(UPLOADS, {"filename": "a.safetensors", "size": 10}, format="json")

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
