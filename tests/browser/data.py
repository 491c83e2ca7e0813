"""Test data for the journeys: real LoRA files (the suite's ``lora_bytes``), published through the
services (what a creator's earlier visits would have left behind)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from tests.registry.factories import lora_bytes


def publish_model(
    owner: Any,
    name: str,
    *,
    seed: int,
    kind: str = "lora",
    tags: Sequence[str] = (),
    price: int = 0,
    license_code: str = "creativeml-openrail-m",
    publish: bool = True,
    parents: Sequence[Any] = (),
) -> Any:
    """A model with one version holding a real LoRA file, listed at ``price`` when > 0."""
    from marketplace.services.listings import listing_create
    from registry.services.catalog import (
        FileSpec,
        ParentSpec,
        model_create,
        version_create,
        version_publish,
    )
    from registry.services.uploads import upload_whole_file

    data = lora_bytes(seed=seed)
    upload = upload_whole_file(
        user=owner,
        filename=f"{name.lower().replace(' ', '-')}.safetensors",
        stream=io.BytesIO(data),
        size=len(data),
    )
    model = model_create(
        owner=owner, name=name, kind=kind, tags=list(tags), description=f"{name}: a test model."
    )
    version = version_create(
        model=model,
        user=owner,
        name="v1",
        files=[FileSpec(upload)],
        license_code=license_code,
        parents=[ParentSpec("finetune", version=p) for p in parents],
    )
    if price:
        listing_create(seller=owner, target=version, price=price)
    if publish:
        version = version_publish(version=version, user=owner)
    return version
