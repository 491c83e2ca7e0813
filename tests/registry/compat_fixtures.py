"""Fixtures for the compatible endpoints (Hugging Face, Civitai) and ``publish_tiny_model``.

Use them from a test module with ``pytest_plugins = ["tests.registry.compat_fixtures"]``.
Data is published through the services themselves (uploads, catalog), as the site does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from sdcore.tiny import TINY_DIFFUSERS_DIR_NAME, TINY_SINGLE_FILE_NAME, TinyModelPaths


@dataclass(frozen=True)
class PublishedTiny:
    owner: Any
    model: Any
    diffusers: Any
    single: Any
    paths: TinyModelPaths


@pytest.fixture
def tiny_paths(tiny_model_dir: Path) -> TinyModelPaths:
    """The session-built tiny model (both layouts)."""
    return TinyModelPaths(
        diffusers_dir=tiny_model_dir / TINY_DIFFUSERS_DIR_NAME,
        single_file=tiny_model_dir / TINY_SINGLE_FILE_NAME,
    )


@pytest.fixture
def publish_tiny(
    make_user: Callable[..., Any], tiny_paths: TinyModelPaths
) -> Callable[..., PublishedTiny]:
    """Publish the tiny model as ``alice`` (by default) with ``publish_tiny_model``'s service."""
    from registry.management.commands.publish_tiny_model import tiny_model_publish

    def publish(owner: Any = None, name: str = "Tiny SD 1.5") -> PublishedTiny:
        owner = owner or make_user("alice")
        result = tiny_model_publish(owner=owner, paths=tiny_paths, name=name, seed=0)
        diffusers, single = (p.version for p in result.versions)
        return PublishedTiny(owner, result.model, diffusers, single, tiny_paths)

    return publish


@pytest.fixture
def published_tiny(publish_tiny: Callable[..., PublishedTiny]) -> PublishedTiny:
    return publish_tiny()


@pytest.fixture
def published_single_tiny(
    make_user: Callable[..., Any], tiny_paths: TinyModelPaths
) -> tuple[Any, Any]:
    """Alice's "Tiny SD 1.5" with one version, "v1.0": the tiny single file only (cheaper
    than both layouts, for tests that only need a repository)."""
    return publish_file(
        owner=make_user("alice"),
        name="Tiny SD 1.5",
        kind="checkpoint",
        file=tiny_paths.single_file,
    )


@pytest.fixture
def hf_online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Let ``huggingface_hub`` make requests (the suite runs with HF_HUB_OFFLINE=1), with no
    saved token; yields an empty cache folder."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    yield cache


@pytest.fixture
def download_policy() -> Iterator[Callable[[Any], None]]:
    """Install a download policy for one test (as the marketplace does) and restore it."""
    from registry import access

    previous = access._download_policy
    yield access.set_download_policy
    access.set_download_policy(previous)


# Civitai catalogue ----------------------------------------------------------------------------


def save_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    # sdcore.sniff reads a header length whose first bytes are 0x80 0x02..0x05 as a pickle
    # protocol mark; keep the fixtures clear of that (reported to the sdcore owner).
    if path.read_bytes()[:1] == b"\x80":
        save_file(tensors, str(path), metadata={**metadata, "padding": "-" * 64})
    return path


def checkpoint_file(path: Path, seed: int) -> Path:
    """A small SD 1.x-looking checkpoint, over 1.1 MiB so that its AutoV1 is its own."""
    rng = np.random.default_rng(seed)
    prefix = "model.diffusion_model."
    tensors = {
        f"{prefix}input_blocks.0.0.weight": rng.standard_normal((320, 4, 3, 3), np.float32),
        f"{prefix}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": rng.standard_normal(
            (320, 768), np.float32
        ),
        f"{prefix}out.2.weight": rng.standard_normal((4, 320, 3, 3), np.float32),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (
            rng.standard_normal((400, 768), np.float32)
        ),
        "first_stage_model.decoder.conv_in.weight": rng.standard_normal((512, 4, 3, 3), np.float32),
    }
    return save_safetensors(path, tensors, {"modelspec.title": f"checkpoint {seed}"})


def lora_file(path: Path, seed: int) -> Path:
    """A small kohya LoRA for SD 1.x."""
    rng = np.random.default_rng(seed)
    unet = "lora_unet_down_blocks_0_attentions_0_proj_in"
    te = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    tensors = {
        f"{unet}.lora_down.weight": rng.standard_normal((4, 320), np.float32),
        f"{unet}.lora_up.weight": rng.standard_normal((320, 4), np.float32),
        f"{unet}.alpha": np.array(4.0, dtype=np.float32),
        f"{te}.lora_down.weight": rng.standard_normal((4, 768), np.float32),
        f"{te}.lora_up.weight": rng.standard_normal((3072, 4), np.float32),
    }
    metadata = {"ss_network_dim": "4", "ss_network_alpha": "4", "ss_base_model_version": "sd_v1"}
    return save_safetensors(path, tensors, metadata)


def publish_file(
    *,
    owner: Any,
    name: str,
    kind: str,
    file: Path,
    tags: tuple[str, ...] = (),
    base_model: str = "",
    trigger_words: tuple[str, ...] = (),
    visibility: str = "public",
    publish: bool = True,
    downloads: int = 0,
) -> tuple[Any, Any]:
    """A model with one single-file version, through the upload and catalogue services."""
    from registry.services.catalog import (
        FileSpec,
        download_count_increment,
        model_create,
        version_create,
        version_publish,
    )
    from registry.services.uploads import upload_whole_file

    model = model_create(owner=owner, name=name, kind=kind, tags=tags, visibility=visibility)
    with open(file, "rb") as fh:
        upload = upload_whole_file(
            user=owner, filename=file.name, stream=fh, size=file.stat().st_size
        )
    version = version_create(
        model=model,
        user=owner,
        name="v1.0",
        files=[FileSpec(upload=upload)],
        base_model=base_model,
        trigger_words=trigger_words,
    )
    if publish:
        version = version_publish(version=version, user=owner)
    for _ in range(downloads):
        download_count_increment(target=version)
    model.refresh_from_db()
    return model, version


@dataclass(frozen=True)
class CivitaiCatalogue:
    checkpoint: Any
    checkpoint_version: Any
    lora: Any
    lora_version: Any
    xl_lora: Any
    private: Any
    draft_only: Any
    users: dict[str, Any]


@pytest.fixture(scope="session")
def civitai_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The catalogue's files, written once per session (the same seeds give the same bytes)."""
    folder = tmp_path_factory.mktemp("civitai-files")
    return {
        "photo": checkpoint_file(folder / "photoCheckpoint_v10.safetensors", seed=1),
        "ink": lora_file(folder / "inkStyle_v10.safetensors", seed=2),
        "glow": lora_file(folder / "xlGlow_v10.safetensors", seed=3),
        "secret": checkpoint_file(folder / "secret_v10.safetensors", seed=4),
        "unfinished": checkpoint_file(folder / "unfinished_v10.safetensors", seed=5),
    }


@pytest.fixture
def civitai_catalogue(
    make_user: Callable[..., Any], civitai_files: dict[str, Path]
) -> CivitaiCatalogue:
    """Three listed models (alice's SD 1.5 checkpoint, bob's SD 1.5 LoRA and bob's SDXL LoRA
    tagged nsfw), carol's private checkpoint and dave's model with only a draft version."""
    users = {name: make_user(name) for name in ("alice", "bob", "carol", "dave")}
    checkpoint, checkpoint_version = publish_file(
        owner=users["alice"],
        name="Photo Checkpoint",
        kind="checkpoint",
        file=civitai_files["photo"],
        tags=("photo", "base model"),
        downloads=3,
    )
    lora, lora_version = publish_file(
        owner=users["bob"],
        name="Ink Style",
        kind="lora",
        file=civitai_files["ink"],
        tags=("ink", "style"),
        trigger_words=("inkstyle",),
        downloads=7,
    )
    xl_lora, _ = publish_file(
        owner=users["bob"],
        name="XL Glow",
        kind="lora",
        file=civitai_files["glow"],
        tags=("glow", "nsfw"),
        base_model="sdxl",
        downloads=1,
    )
    private, _ = publish_file(
        owner=users["carol"],
        name="Secret Checkpoint",
        kind="checkpoint",
        file=civitai_files["secret"],
        visibility="private",
    )
    draft_only, _ = publish_file(
        owner=users["dave"],
        name="Unfinished",
        kind="checkpoint",
        file=civitai_files["unfinished"],
        publish=False,
    )
    return CivitaiCatalogue(
        checkpoint=checkpoint,
        checkpoint_version=checkpoint_version,
        lora=lora,
        lora_version=lora_version,
        xl_lora=xl_lora,
        private=private,
        draft_only=draft_only,
        users=users,
    )
