"""Test data for the journeys: real LoRA files written by sdcore, published through the
services (what a creator's earlier visits would have left behind)."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sdcore.lora import save_lora_kohya

# Two SD 1.x UNet modules: self-attention (320 features) and cross-attention (768 text
# features: what detection reads as SD 1.x), under peft names as the trainer writes them.
_MODULES = (
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 320),
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", 768),
)


def lora_bytes(*, seed: int = 0, rank: int = 4, alpha: float = 4.0) -> bytes:
    """A kohya-format SD 1.x LoRA written by ``sdcore.lora.save_lora_kohya`` (about 28 KB)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for module, in_features in _MODULES:
        state[f"{module}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator)
        state[f"{module}.lora_B.weight"] = torch.randn(320, rank, generator=generator)
    metadata = {"ss_network_dim": str(rank), "ss_network_alpha": f"{alpha:g}"}
    with tempfile.TemporaryDirectory() as folder:
        path = save_lora_kohya(
            Path(folder) / "lora.safetensors", state, alpha=alpha, metadata=metadata
        )
        return path.read_bytes()


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
