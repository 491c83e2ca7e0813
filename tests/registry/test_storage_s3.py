"""Blobs on S3-compatible storage: moto runs as a real server process on a loopback port.

The project's settings choose ``storages.backends.s3.S3Storage`` when a bucket is named at
import time; here the test overrides ``STORAGES`` and the ``AWS_*`` settings directly (the
``settings`` fixture resets Django's storage cache when ``STORAGES`` changes).
"""

from __future__ import annotations

import io
import json
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

ACCESS_KEY = "atelier-test-key"
SECRET_KEY = "atelier-test-secret"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m moto.server`` on a free loopback port, for the whole session."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(endpoint + "/moto-api/", timeout=1)
            break
        except requests.RequestException:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto server did not start:\n{Path(log).read_text()[-2000:]}")
            time.sleep(0.1)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(  # type: ignore[no-untyped-def]
    settings, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
):
    """A fresh bucket, and Django storage pointed at it; returns a boto3 client and the name."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    bucket = f"atelier-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    client.create_bucket(Bucket=bucket)
    settings.AWS_STORAGE_BUCKET_NAME = bucket
    settings.AWS_S3_ENDPOINT_URL = moto_endpoint
    settings.AWS_S3_REGION_NAME = REGION
    settings.AWS_S3_ACCESS_KEY_ID = ACCESS_KEY
    settings.AWS_S3_SECRET_ACCESS_KEY = SECRET_KEY
    settings.AWS_S3_ADDRESSING_STYLE = "path"
    settings.AWS_S3_SIGNATURE_VERSION = "s3v4"
    settings.AWS_QUERYSTRING_EXPIRE = 300
    settings.AWS_DEFAULT_ACL = None
    settings.AWS_S3_FILE_OVERWRITE = False
    # Last: changing STORAGES drops Django's cached storage instances (and restores them).
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {}},
        "blobs": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"querystring_auth": True, "custom_domain": None},
        },
    }
    return client, bucket


def _tiny_safetensors(seed: int = 1) -> bytes:
    """A small, valid LoRA-shaped safetensors file (two F16 tensors and an alpha)."""
    base = "lora_unet_down_blocks_0_attentions_0_proj_in"
    shapes = {
        f"{base}.lora_down.weight": [4, 8],
        f"{base}.lora_up.weight": [8, 4],
        f"{base}.alpha": [],
    }
    header: dict[str, object] = {"__metadata__": {"ss_network_dim": "4"}}
    offset = 0
    for name, shape in shapes.items():
        size = 2 * (shape[0] * shape[1] if shape else 1)
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    data = bytes((seed * 31 + i) % 251 for i in range(offset - 2)) + struct.pack("<e", 4.0)
    return struct.pack("<Q", len(raw)) + raw + data


def _upload(  # type: ignore[no-untyped-def]
    user, data: bytes, filename: str = "tiny-lora.safetensors"
):
    from registry.services.uploads import upload_whole_file

    return upload_whole_file(user=user, filename=filename, stream=io.BytesIO(data), size=len(data))


def _keys(client, bucket: str) -> list[str]:  # type: ignore[no-untyped-def]
    listing = client.list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in listing.get("Contents", []))


@pytest.mark.django_db
def test_upload_stores_the_blob_in_the_bucket_under_its_sha256(  # type: ignore[no-untyped-def]
    s3_bucket, make_user
) -> None:
    # given a user and S3 storage
    from registry.services.blobs import blob_storage_name

    client, bucket = s3_bucket
    data = _tiny_safetensors()
    # when they upload a safetensors file through the upload services
    upload = _upload(make_user("alice"), data)
    # then the object sits in the bucket under blobs/sha256/.. with the same bytes
    assert _keys(client, bucket) == [blob_storage_name(upload.blob_id)]
    assert upload.blob_id and _keys(client, bucket)[0].startswith("blobs/sha256/")
    body = client.get_object(Bucket=bucket, Key=upload.blob.storage_name)["Body"].read()
    assert body == data


@pytest.mark.django_db
def test_same_bytes_uploaded_twice_make_one_object(  # type: ignore[no-untyped-def]
    s3_bucket, make_user
) -> None:
    # given a file already uploaded once
    client, bucket = s3_bucket
    user = make_user("alice")
    data = _tiny_safetensors()
    first = _upload(user, data)
    # when the same bytes are uploaded again under another name
    second = _upload(user, data, filename="copy.safetensors")
    # then both uploads point at one blob, and the bucket holds one object
    assert second.blob_id == first.blob_id
    assert len(_keys(client, bucket)) == 1


@pytest.mark.django_db
def test_download_redirects_to_a_presigned_url_with_content_disposition(
    s3_bucket,
    make_user,
    client,  # type: ignore[no-untyped-def]
) -> None:
    # given a published model version whose file is on S3
    from registry.services.catalog import FileSpec, model_create, version_create, version_publish
    from registry.services.downloads import content_disposition

    _, bucket = s3_bucket
    owner = make_user("alice")
    data = _tiny_safetensors(seed=2)
    upload = _upload(owner, data, filename="my-lora.safetensors")
    model = model_create(owner=owner, name="My LoRA", kind="lora")
    version = version_create(model=model, user=owner, name="v1", files=[FileSpec(upload=upload)])
    version_publish(version=version, user=owner)
    # when anyone asks the Civitai-style download route for it
    response = client.get(f"/api/download/models/{version.pk}")
    # then it redirects to the bucket with a presigned URL naming the file
    assert response.status_code == 302
    location = response["Location"]
    parts = urlsplit(location)
    query = parse_qs(parts.query)
    assert parts.path.startswith(f"/{bucket}/blobs/sha256/")
    assert query["response-content-disposition"] == [content_disposition("my-lora.safetensors")]
    assert query["response-content-disposition"] == ['attachment; filename="my-lora.safetensors"']
    assert "X-Amz-Signature" in query
    # and GETting that URL returns the bytes with that Content-Disposition
    fetched = requests.get(location, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["Content-Disposition"] == content_disposition("my-lora.safetensors")


@pytest.mark.django_db
def test_blobs_go_to_their_own_private_bucket_and_downloads_are_presigned_from_it(
    s3_bucket,
    make_user,
    client,
    settings,  # type: ignore[no-untyped-def]
) -> None:
    # given public media in one bucket and blobs in a private bucket of their own
    # (AWS_BLOB_BUCKET_NAME)
    from registry.services.catalog import FileSpec, model_create, version_create, version_publish

    s3, media_bucket = s3_bucket
    private = f"atelier-private-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=private)
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": private, "querystring_auth": True, "custom_domain": None},
        },
    }
    owner = make_user("alice")
    data = _tiny_safetensors(seed=3)
    upload = _upload(owner, data, filename="private.safetensors")
    version = version_create(
        model=model_create(owner=owner, name="Private bucket", kind="lora"),
        user=owner,
        name="v1",
        files=[FileSpec(upload=upload)],
    )
    version_publish(version=version, user=owner)
    # then the file is in the private bucket only
    assert _keys(s3, private) == [upload.blob.storage_name]
    assert _keys(s3, media_bucket) == []
    # and the download route redirects to a presigned URL of that bucket, which serves it
    location = client.get(f"/api/download/models/{version.pk}")["Location"]
    assert urlsplit(location).path.startswith(f"/{private}/blobs/sha256/")
    assert "X-Amz-Signature" in parse_qs(urlsplit(location).query)
    assert requests.get(location, timeout=10).content == data
