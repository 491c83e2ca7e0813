"""Studio fixtures: the tiny checkpoint, LoRAs and embeddings published through the registry's
own services, a paid listing, and the worker's model cache in a temporary folder."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sdcore.tiny import TINY_SINGLE_FILE_NAME
from tests.studio.tiny_files import write_embedding, write_kohya_lora

_counter = {"n": 0}


@pytest.fixture(autouse=True)
def _studio_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """Django tests: the worker's local model files go to a per-test folder, and users get a
    fast password hasher (these tests are not about passwords)."""
    django_fixtures = {"db", "transactional_db", "settings", "client"}
    if not django_fixtures & set(request.fixturenames) and not request.node.get_closest_marker(
        "django_db"
    ):
        yield
        return
    settings = request.getfixturevalue("settings")
    settings.ATELIER_MODEL_CACHE_DIR = tmp_path / "model-cache"
    settings.ATELIER_SAMPLE_MAX_STEPS = 2  # sample images rendered on publish: quick
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    yield


@pytest.fixture(scope="session")
def resource_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("studio-resources")
    return {
        "lora": write_kohya_lora(out / "castles.safetensors", seed=1),
        "other_lora": write_kohya_lora(out / "towers.safetensors", seed=2),
        "misfit_lora": write_kohya_lora(out / "misfit.safetensors", in_width=48),
        "embedding": write_embedding(out / "easyneg.safetensors"),
    }


def _upload(owner: Any, path: Path, filename: str | None = None) -> Any:
    from registry.services.uploads import upload_whole_file

    data = path.read_bytes()
    return upload_whole_file(
        user=owner, filename=filename or path.name, stream=io.BytesIO(data), size=len(data)
    )


@pytest.fixture
def publish_file(db) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    """Publish one file as a new model's version (``publish=False``: leave it a draft)."""
    from registry.services.catalog import FileSpec, model_create, version_create, version_publish

    def publish(
        owner: Any,
        path: Path,
        *,
        kind: str,
        base_model: str = "sd1",
        publish: bool = True,
        name: str | None = None,
        trigger_words: tuple[str, ...] = (),
    ) -> Any:
        _counter["n"] += 1
        model = model_create(owner=owner, name=name or f"{kind} {_counter['n']}", kind=kind)
        version = version_create(
            model=model,
            user=owner,
            name="v1",
            files=[FileSpec(_upload(owner, path))],
            base_model=base_model,
            trigger_words=trigger_words,
        )
        return version_publish(version=version, user=owner) if publish else version

    return publish


@pytest.fixture
def tiny_checkpoint(tiny_model_dir: Path) -> Path:
    return tiny_model_dir / TINY_SINGLE_FILE_NAME


@pytest.fixture
def studio(  # type: ignore[no-untyped-def]
    make_user, publish_file, resource_files, tiny_checkpoint
) -> StudioCatalogue:
    """A marketplace: ``creator`` publishes the tiny checkpoint (free), a LoRA and an
    embedding; ``artist`` is the user who generates."""
    creator = make_user("creator")
    artist = make_user("artist")
    base = publish_file(creator, tiny_checkpoint, kind="checkpoint", name="Tiny SD")
    lora = publish_file(creator, resource_files["lora"], kind="lora", name="Castles")
    embedding = publish_file(
        creator,
        resource_files["embedding"],
        kind="embedding",
        name="Easy negative",
        trigger_words=("easyneg",),
    )
    return StudioCatalogue(creator, artist, base, lora, embedding)


@dataclass(frozen=True)
class StudioCatalogue:
    creator: Any
    artist: Any
    base: Any
    lora: Any
    embedding: Any


@pytest.fixture
def sell() -> Callable[..., Any]:
    """List a version for ``price`` credits."""
    from marketplace.services.listings import listing_create

    def make(version: Any, price: int) -> Any:
        return listing_create(seller=version.model.owner, target=version, price=price)

    return make


@pytest.fixture
def buy() -> Callable[..., Any]:
    """Fund ``buyer`` and buy ``listing`` through the ledger."""
    from marketplace.payments import DemoProvider
    from marketplace.services.ledger import wallet_top_up
    from marketplace.services.purchases import purchase_create

    def make(buyer: Any, listing: Any) -> Any:
        _counter["n"] += 1
        wallet_top_up(
            user=buyer,
            amount=listing.price,
            provider=DemoProvider(),
            idempotency_key=f"studio-fund-{_counter['n']}",
        )
        return purchase_create(
            buyer=buyer, listing=listing, idempotency_key=f"studio-buy-{_counter['n']}"
        )

    return make


@pytest.fixture
def client_for(token_for) -> Callable[[Any], Any]:  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    def make(user: Any) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
        return client

    return make
