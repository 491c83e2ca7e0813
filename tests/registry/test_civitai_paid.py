"""A paid diffusers version on the Civitai routes: its archive's link goes to buyers only.

Real marketplace (listing, wallet, purchase) and a live server; a module of its own because
the transactional database is flushed after each test, which would wipe the shared catalogue
of ``test_compat_civitai``.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.registry.compat_fixtures import publish_file

pytest_plugins = ["tests.registry.compat_fixtures"]


@dataclass(frozen=True)
class PaidFolder:
    version: Any
    tokens: dict[str, str]


@pytest.fixture
def license_catalogue(django_db_blocker: Any) -> Iterator[None]:
    """The licence catalogue (a data migration) before the test and back after its flush."""
    from tests.security.conftest import load_license_catalogue

    with django_db_blocker.unblock():
        load_license_catalogue()
    yield
    with django_db_blocker.unblock():
        load_license_catalogue()


@pytest.fixture
def paid_folder(
    license_catalogue: None, transactional_db: None, civitai_files: dict[str, Path]
) -> PaidFolder:
    """owner's two-file (diffusers) checkpoint for sale at 900; buyer bought it, shopper not."""
    from django.contrib.auth import get_user_model

    from core.services import token_create
    from marketplace.payments import DemoProvider
    from marketplace.services.ledger import wallet_top_up
    from marketplace.services.listings import listing_create
    from marketplace.services.purchases import purchase_create
    from tests.security.conftest import load_license_catalogue

    load_license_catalogue()
    users = {
        role: get_user_model().objects.create_user(username=f"cp-{role}", password=None)
        for role in ("owner", "buyer", "shopper")
    }
    _, version = publish_file(
        owner=users["owner"],
        name="Paid Folder",
        kind="checkpoint",
        file=civitai_files["photo"],
        extra_files={"unet/config.json": civitai_files["config"]},
        license_code="mit",
    )
    listing = listing_create(seller=users["owner"], target=version, price=900)
    for role in ("buyer", "shopper"):
        wallet_top_up(
            user=users[role], amount=5000, provider=DemoProvider(), idempotency_key=f"cp-{role}"
        )
    purchase_create(buyer=users["buyer"], listing=listing, idempotency_key="cp-buy")
    tokens = {role: token_create(user=u, name="cp").secret for role, u in users.items()}
    return PaidFolder(version=version, tokens=tokens)


def _headers(paid: PaidFolder, role: str) -> dict[str, str]:
    return {} if role == "anon" else {"Authorization": f"Bearer {paid.tokens[role]}"}


def test_paid_archive_link_only_for_buyers(paid_folder, live_server, civitai_files):
    # given the paid diffusers version as the Civitai API describes it (to anyone)
    version = paid_folder.version
    body = requests.get(
        f"{live_server.url}/civitai/api/v1/model-versions/{version.pk}", timeout=30
    ).json()
    (file,) = body["files"]
    assert file["metadata"]["format"] == "Diffusers"
    # when anonymous and a shopper who did not buy follow its downloadUrl
    for role, status in (("anon", 401), ("shopper", 403)):
        response = requests.get(
            file["downloadUrl"],
            headers=_headers(paid_folder, role),
            allow_redirects=False,
            timeout=30,
        )
        # then no link is handed out, and the refusal is Civitai-shaped
        assert response.status_code == status, role
        assert "Location" not in response.headers
        assert response.json()["error"]
    # when the buyer and the owner follow it
    for role in ("buyer", "owner"):
        response = requests.get(
            file["downloadUrl"], headers=_headers(paid_folder, role), timeout=30
        )
        # then they get the archive, whose hash is the one the API shows
        assert [r.status_code for r in response.history] == [302], role
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert archive.read("unet/config.json") == civitai_files["config"].read_bytes()
        assert hashlib.sha256(response.content).hexdigest().upper() == file["hashes"]["SHA256"]


def test_a_buyers_archive_link_stops_working_when_the_version_is_unlisted_for_them(
    paid_folder, live_server
):
    # given a link signed for the buyer
    version = paid_folder.version
    location = requests.get(
        f"{live_server.url}/api/download/models/{version.pk}",
        headers=_headers(paid_folder, "buyer"),
        allow_redirects=False,
        timeout=30,
    ).headers["Location"]
    assert requests.get(location, timeout=30).status_code == 200
    # when the model is made private (the buyer may no longer see it)
    version.model.visibility = "private"
    version.model.save(update_fields=["visibility"])
    # then the same link is refused, Civitai-shaped
    response = requests.get(location, timeout=30)
    assert response.status_code == 403
    assert response.json()["error"]
