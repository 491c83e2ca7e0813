"""Test data made the way users make it: real tiny files through the upload services.

Files are tiny safetensors LoRAs with SD 1.x kohya keys (``lora_unet_..._attn1_to_q``:
down (rank, 320), up (320, rank), alpha), so detection, hashing and storage are the real ones.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from django.contrib.auth.models import User
from PIL import Image
from safetensors.numpy import save as save_safetensors

from registry.models import (
    Dataset,
    DatasetKind,
    DatasetVersion,
    Model,
    ModelVersion,
    Upload,
    Visibility,
)
from registry.services.catalog import (
    FileSpec,
    ParentSpec,
    dataset_create,
    dataset_version_create_private,
    dataset_version_create_public,
    model_create,
    version_create,
    version_publish,
)
from registry.services.uploads import upload_whole_file

LORA_MODULE = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
# attn2 (cross-attention) to_k reads the text encoder's 768 features: what says "SD 1.x".
LORA_CROSS_MODULE = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"


def lora_tensors(*, seed: int = 0, rank: int = 4, alpha: float = 4.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for module, in_features in ((LORA_MODULE, 320), (LORA_CROSS_MODULE, 768)):
        out_features = 320
        tensors[f"{module}.lora_down.weight"] = rng.standard_normal(
            (rank, in_features), dtype=np.float32
        )
        tensors[f"{module}.lora_up.weight"] = rng.standard_normal(
            (out_features, rank), dtype=np.float32
        )
        tensors[f"{module}.alpha"] = np.array(alpha, dtype=np.float32)
    return tensors


def lora_bytes(
    *, seed: int = 0, rank: int = 4, alpha: float = 4.0, metadata: dict[str, str] | None = None
) -> bytes:
    """A valid SD 1.x kohya LoRA safetensors file (about 40 KB at rank 4)."""
    return save_safetensors(lora_tensors(seed=seed, rank=rank, alpha=alpha), metadata=metadata)


def safetensors_with_header(header: dict[str, Any], data: bytes = b"") -> bytes:
    """A file with exactly this JSON header and data section: for lying headers."""
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def png_bytes(*, size: tuple[int, int] = (8, 8), color: str = "red", **info: str) -> bytes:
    """A small PNG; keyword arguments become text chunks (A1111 writes ``parameters``)."""
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    for key, value in info.items():
        meta.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG", pnginfo=meta)
    return out.getvalue()


def dataset_zip_bytes(*, images: int = 3) -> bytes:
    """A public dataset archive: ``img_N.png`` with ``img_N.txt`` captions."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for i in range(images):
            archive.writestr(f"img_{i}.png", png_bytes(color=("red", "green", "blue")[i % 3]))
            archive.writestr(f"img_{i}.txt", f"a photo number {i}")
    return out.getvalue()


def private_manifest(*, count: int = 12, seed: int = 0) -> dict[str, Any]:
    """What a data owner's node reports: aggregates, plus per-file entries that must never
    be shown (the names are distinctive so tests can search the responses for them)."""
    return {
        "count": count,
        "manifest_hash": f"{seed:064x}",
        "total_bytes": 123456,
        "resolutions": {"512x512": count},
        "files": [{"name": f"secret_holiday_{i}.jpg", "caption": "my house"} for i in range(3)],
        "root": "/home/owner/photos",
    }


def complete_upload(
    *, user: User, data: bytes | None = None, filename: str = "lora.safetensors"
) -> Upload:
    """A completed upload through the real service (hashing, inspection, storage)."""
    payload = lora_bytes() if data is None else data
    return upload_whole_file(
        user=user, filename=filename, stream=io.BytesIO(payload), size=len(payload)
    )


def make_version(
    *,
    model: Model,
    user: User | None = None,
    name: str = "v1",
    upload: Upload | None = None,
    publish: bool = True,
    license_code: str = "",
    base_model: str = "",
    description: str = "",
    parents: Sequence[ParentSpec] = (),
) -> ModelVersion:
    owner = user or model.owner
    version = version_create(
        model=model,
        user=owner,
        name=name,
        files=[FileSpec(upload or complete_upload(user=owner))],
        license_code=license_code,
        base_model=base_model,
        description=description,
        parents=parents,
    )
    if publish:
        version = version_publish(version=version, user=owner)
    return version


def make_model(
    *,
    owner: User,
    name: str = "Tiny LoRA",
    kind: str = "lora",
    description: str = "",
    tags: Sequence[str] = (),
    visibility: str = Visibility.PUBLIC,
    publish: bool = True,
    upload: Upload | None = None,
    license_code: str = "",
    base_model: str = "",
) -> ModelVersion:
    """A model with one version (published unless ``publish=False``); returns the version."""
    model = model_create(
        owner=owner,
        name=name,
        kind=kind,
        description=description,
        tags=tags,
        visibility=visibility,
    )
    return make_version(
        model=model,
        upload=upload,
        publish=publish,
        license_code=license_code,
        base_model=base_model,
    )


def make_private_dataset(
    *, owner: User, name: str = "Holiday photos", visibility: str = Visibility.PUBLIC
) -> DatasetVersion:
    dataset = dataset_create(
        owner=owner, name=name, kind=DatasetKind.PRIVATE, visibility=visibility
    )
    return dataset_version_create_private(
        dataset=dataset, user=owner, name="v1", manifest=private_manifest()
    )


def make_public_dataset(*, owner: User, name: str = "Colors") -> DatasetVersion:
    dataset: Dataset = dataset_create(owner=owner, name=name, kind=DatasetKind.PUBLIC)
    upload = complete_upload(user=owner, data=dataset_zip_bytes(), filename="colors.zip")
    return dataset_version_create_public(dataset=dataset, user=owner, name="v1", upload=upload)
