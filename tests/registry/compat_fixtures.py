"""Fixtures for the compatible endpoints (Hugging Face, Civitai) and ``publish_tiny_model``.

Use them from a test module with ``pytest_plugins = ["tests.registry.compat_fixtures"]``.
Data is published through the services themselves (uploads, catalogue), as the site does.

Read-only HTTP tests share one live server and one published catalogue per module
(:func:`hf_site`, :func:`civitai_site`): the data is committed once, the tests only make
requests, and the module's teardown deletes what it created. (pytest-django's ``live_server``
needs a transactional database that is flushed after every test, which would mean publishing
the catalogue again for each request.) Tests that write use ``live_server`` as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from sdcore.tiny import TINY_DIFFUSERS_DIR_NAME, TINY_SINGLE_FILE_NAME, TinyModelPaths


def _tiny_paths(folder: Path) -> TinyModelPaths:
    return TinyModelPaths(
        diffusers_dir=folder / TINY_DIFFUSERS_DIR_NAME,
        single_file=folder / TINY_SINGLE_FILE_NAME,
    )


@pytest.fixture
def tiny_paths(tiny_model_dir: Path) -> TinyModelPaths:
    """The session-built tiny model (both layouts)."""
    return _tiny_paths(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_paths_session(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    """The same session-built tiny model, for module-scoped fixtures."""
    from tests.conftest import _tiny_model  # the suite's one build of the tiny model

    return _tiny_paths(_tiny_model(tmp_path_factory))


@dataclass(frozen=True)
class PublishedTiny:
    owner: Any
    model: Any
    diffusers: Any
    single: Any
    paths: TinyModelPaths


def publish_tiny_as(
    owner: Any, paths: TinyModelPaths, *, name: str = "Tiny SD 1.5", license_code: str | None = None
) -> PublishedTiny:
    """Publish the tiny model with ``publish_tiny_model``'s own service."""
    from registry.management.commands.publish_tiny_model import tiny_model_publish

    extra = {} if license_code is None else {"license_code": license_code}
    result = tiny_model_publish(owner=owner, paths=paths, name=name, seed=0, **extra)
    diffusers, single = (p.version for p in result.versions)
    return PublishedTiny(owner, result.model, diffusers, single, paths)


@pytest.fixture
def publish_tiny(
    make_user: Callable[..., Any], tiny_paths: TinyModelPaths
) -> Callable[..., PublishedTiny]:
    """Publish the tiny model as ``alice`` (unless another owner is given)."""

    def publish(owner: Any = None, name: str = "Tiny SD 1.5") -> PublishedTiny:
        return publish_tiny_as(owner or make_user("alice"), tiny_paths, name=name)

    return publish


# Files and single-file models -----------------------------------------------------------------


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
    extra_files: dict[str, Path] | None = None,
    license_code: str = "",
) -> tuple[Any, Any]:
    """A model with one version "v1.0" holding ``file`` (primary) and ``extra_files`` (by path),
    through the upload and catalogue services."""
    from registry.services.catalog import (
        FileSpec,
        download_count_increment,
        model_create,
        version_create,
        version_publish,
    )
    from registry.services.uploads import upload_whole_file

    model = model_create(owner=owner, name=name, kind=kind, tags=tags, visibility=visibility)
    specs = []
    for path, local in {file.name: file, **(extra_files or {})}.items():
        with open(local, "rb") as fh:
            upload = upload_whole_file(
                user=owner, filename=local.name, stream=fh, size=local.stat().st_size
            )
        specs.append(FileSpec(upload=upload, path=path, is_primary=local == file))
    version = version_create(
        model=model,
        user=owner,
        name="v1.0",
        files=specs,
        base_model=base_model,
        trigger_words=trigger_words,
        layout="diffusers" if extra_files else "single",
        license_code=license_code,
    )
    if publish:
        version = version_publish(version=version, user=owner)
    for _ in range(downloads):
        download_count_increment(target=version)
    model.refresh_from_db()
    return model, version


@pytest.fixture
def published_single_tiny(
    make_user: Callable[..., Any], tiny_paths: TinyModelPaths
) -> tuple[Any, Any]:
    """Alice's "Tiny SD 1.5" with one version, "v1.0": the tiny single file only."""
    return publish_file(
        owner=make_user("alice"), name="Tiny SD 1.5", kind="checkpoint", file=tiny_paths.single_file
    )


# huggingface_hub ------------------------------------------------------------------------------


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


# A live server with committed data, shared by a module's read-only tests ----------------------


@dataclass
class SharedSite:
    url: str
    users: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def user(self, username: str) -> Any:
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.create_user(
            username=username, email=f"{username}@example.test", password="a-long-passphrase"
        )
        self.users[username] = user
        return user

    def token(self, username: str) -> str:
        from core.services import token_create

        self.tokens[username] = token_create(user=self.users[username], name="test").secret
        return self.tokens[username]


def _delete_created(users: list[Any]) -> None:
    """Delete what a shared site's users published (their models, uploads, blobs), then them."""
    from registry.models import Blob, Model, ModelFile, Upload

    blob_ids = set(
        ModelFile.objects.filter(version__model__owner__in=users).values_list("blob_id", flat=True)
    )
    blob_ids |= set(Upload.objects.filter(user__in=users).values_list("blob_id", flat=True))
    Model.objects.filter(owner__in=users).delete()
    Upload.objects.filter(user__in=users).delete()
    Blob.objects.filter(
        pk__in=blob_ids, model_files__isnull=True, dataset_versions__isnull=True
    ).delete()
    for user in users:
        user.delete()


@contextmanager
def shared_site(django_db_blocker: Any, folder: Path) -> Iterator[SharedSite]:
    """Start a live server on committed data, with storage under ``folder``; clean up after."""
    from django.conf import settings
    from django.test.utils import override_settings
    from pytest_django.live_server_helper import LiveServer

    media = folder / "media"
    storages = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(media)},
        },
        "blobs": {
            "BACKEND": "registry.storage.PrivateFileSystemStorage",
            "OPTIONS": {"location": str(folder / "blobs")},
        },
    }
    with (
        django_db_blocker.unblock(),
        override_settings(
            MEDIA_ROOT=str(media),
            BLOB_ROOT=folder / "blobs",
            UPLOAD_TEMP_DIR=folder / "uploads",
            STORAGES=storages,
        ),
    ):
        server = LiveServer("localhost")
        server._live_server_modified_settings.enable()
        site = SharedSite(url=server.url)
        try:
            yield site
        finally:
            server.stop()
            server._live_server_modified_settings.disable()
            _delete_created(list(site.users.values()))


@pytest.fixture(scope="module")
def hf_site(
    django_db_setup: None,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_paths_session: TinyModelPaths,
) -> Iterator[SharedSite]:
    """alice/tiny-sd-15 (both layouts; main is the diffusers folder), alice/secret-tiny
    (private, single file) and alice/counted-tiny (single file, only for download counting);
    tokens for alice and mallory."""
    with shared_site(django_db_blocker, tmp_path_factory.mktemp("hf-site")) as site:
        alice = site.user("alice")
        site.user("mallory")
        # The license catalogue is a data migration's; transactional tests may have flushed
        # it by the time these run, and the license plays no part in serving files.
        site.data["tiny"] = publish_tiny_as(alice, tiny_paths_session, license_code="")
        for name, visibility in (("Secret Tiny", "private"), ("Counted Tiny", "public")):
            site.data[name] = publish_file(
                owner=alice,
                name=name,
                kind="checkpoint",
                file=tiny_paths_session.single_file,
                visibility=visibility,
            )
        site.token("alice")
        site.token("mallory")
        yield site


# Civitai catalogue ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def civitai_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The catalogue's files, written once per session (the same seeds give the same bytes)."""
    folder = tmp_path_factory.mktemp("civitai-files")
    config = folder / "config.json"
    config.write_text('{"_class_name": "Example"}\n')
    return {
        "photo": checkpoint_file(folder / "photoCheckpoint_v10.safetensors", seed=1),
        "ink": lora_file(folder / "inkStyle_v10.safetensors", seed=2),
        "glow": lora_file(folder / "xlGlow_v10.safetensors", seed=3),
        "secret": lora_file(folder / "secret_v10.safetensors", seed=4),
        "unfinished": lora_file(folder / "unfinished_v10.safetensors", seed=5),
        "config": config,
    }


def add_draft_version(model: Any, file: Path, name: str = "v2.0-draft") -> Any:
    """A draft (unpublished) version of ``model`` holding ``file``, through the services."""
    from registry.services.catalog import FileSpec, version_create
    from registry.services.uploads import upload_whole_file

    owner = model.owner
    with open(file, "rb") as fh:
        upload = upload_whole_file(
            user=owner, filename=file.name, stream=fh, size=file.stat().st_size
        )
    return version_create(
        model=model, user=owner, name=name, files=[FileSpec(upload=upload, path=file.name)]
    )


def add_sample_images(version: Any, prompts: tuple[str, ...]) -> list[Any]:
    """Sample images (tiny PNGs) on ``version``, in the given order."""
    import io

    from django.core.files.base import ContentFile
    from PIL import Image

    from registry.models import SampleImage

    images = []
    for n, prompt in enumerate(prompts):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (n * 40, 10, 10)).save(buffer, format="PNG")
        images.append(
            SampleImage.objects.create(
                version=version,
                image=ContentFile(buffer.getvalue(), f"sample-{n}.png"),
                prompt=prompt,
            )
        )
    return images


@dataclass(frozen=True)
class CivitaiCatalogue:
    checkpoint: Any
    checkpoint_version: Any
    lora: Any
    lora_version: Any
    xl_lora: Any
    private: Any
    draft_only: Any
    folder: Any
    folder_version: Any


def civitai_catalogue_publish(
    make_user: Callable[[str], Any], files: dict[str, Path]
) -> CivitaiCatalogue:
    """Three listed models (alice's SD 1.5 checkpoint, which also has a draft version, bob's
    SD 1.5 LoRA with two sample images and bob's SDXL LoRA tagged nsfw), carol's private model,
    dave's model with only a draft version, and alice's unlisted two-file (diffusers layout)
    model."""
    alice, bob, carol, dave = (make_user(n) for n in ("alice", "bob", "carol", "dave"))
    checkpoint, checkpoint_version = publish_file(
        owner=alice,
        name="Photo Checkpoint",
        kind="checkpoint",
        file=files["photo"],
        tags=("photo", "base model"),
        downloads=2,
    )
    add_draft_version(checkpoint, files["unfinished"])
    lora, lora_version = publish_file(
        owner=bob,
        name="Ink Style",
        kind="lora",
        file=files["ink"],
        tags=("ink", "style"),
        trigger_words=("inkstyle",),
        downloads=3,
    )
    add_sample_images(lora_version, ("ink cat", "ink dog"))
    xl_lora, _ = publish_file(
        owner=bob,
        name="XL Glow",
        kind="lora",
        file=files["glow"],
        tags=("glow", "nsfw"),
        base_model="sdxl",
        downloads=1,
    )
    private, _ = publish_file(
        owner=carol,
        name="Secret Checkpoint",
        kind="checkpoint",
        file=files["secret"],
        visibility="private",
    )
    draft_only, _ = publish_file(
        owner=dave, name="Unfinished", kind="checkpoint", file=files["unfinished"], publish=False
    )
    folder, folder_version = publish_file(
        owner=alice,
        name="Folder Model",
        kind="checkpoint",
        file=files["photo"],
        extra_files={"unet/config.json": files["config"]},
        visibility="unlisted",
    )
    return CivitaiCatalogue(
        checkpoint,
        checkpoint_version,
        lora,
        lora_version,
        xl_lora,
        private,
        draft_only,
        folder,
        folder_version,
    )


@pytest.fixture
def civitai_catalogue(
    make_user: Callable[..., Any], civitai_files: dict[str, Path]
) -> CivitaiCatalogue:
    return civitai_catalogue_publish(make_user, civitai_files)


@pytest.fixture(scope="module")
def civitai_site(
    django_db_setup: None,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
    civitai_files: dict[str, Path],
) -> Iterator[SharedSite]:
    """The Civitai catalogue on a shared live server; ``data["catalogue"]``; carol's and
    alice's tokens."""
    with shared_site(django_db_blocker, tmp_path_factory.mktemp("civitai-site")) as site:
        site.data["catalogue"] = civitai_catalogue_publish(site.user, civitai_files)
        site.token("carol")
        site.token("alice")
        yield site
