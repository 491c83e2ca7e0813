"""Suite-wide fixtures: temporary storage and upload folders, users, tokens, API clients."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_files(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """Storage and upload parts go to a per-test folder (only for tests that use Django)."""
    django_fixtures = {"db", "transactional_db", "live_server", "settings", "client"}
    if not django_fixtures & set(request.fixturenames) and not request.node.get_closest_marker(
        "django_db"
    ):
        yield
        return
    settings = request.getfixturevalue("settings")
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.UPLOAD_TEMP_DIR = tmp_path / "uploads"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    yield


@pytest.fixture
def make_user(db) -> Callable[..., object]:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    def make(username: str = "alice", *, password: str = "a-long-passphrase", **extra: object):
        return get_user_model().objects.create_user(
            username=username, email=f"{username}@example.test", password=password, **extra
        )

    return make


@pytest.fixture
def token_for() -> Callable[[object], str]:
    from core.services import token_create

    def make(user: object) -> str:
        return token_create(user=user, name="test").secret  # type: ignore[arg-type]

    return make


@pytest.fixture
def api_client():  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD 1.x model (diffusers folder and single file), built once per session."""
    return _tiny_model(tmp_path_factory)


_TINY: dict[str, Path] = {}


def _tiny_model(factory: pytest.TempPathFactory) -> Path:
    if "dir" not in _TINY:
        from sdcore.tiny import save_tiny_model

        out = factory.mktemp("tiny-sd")
        save_tiny_model(out, seed=0)
        _TINY["dir"] = out
    return _TINY["dir"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The suite must run on PostgreSQL: refuse to pretend otherwise."""
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        return
    if any(item.get_closest_marker("django_db") for item in items) and not os.environ.get(
        "ATELIER_ALLOW_SQLITE_TESTS"
    ):
        raise pytest.UsageError(
            "Database tests need DATABASE_URL=postgres://... (run `make test`)."
        )
