"""Paid files are reachable only through the entitlement-checked routes.

Model and dataset files live in a private storage of their own (``STORAGES["blobs"]``), apart
from public media; no URL maps to it. An attacker knows every published file's SHA-256 (the
Hugging Face tree's ``lfs.oid``, the by-hash lookups), so each test guesses every path it
could name: the media URL of the blob, the compatible routes, the signed-file route without,
with a forged, an expired or another user's signature. The demo's configuration
(``DJANGO_DEBUG=1``, which serves ``/media/``) runs as a real gunicorn process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.gunicorn_server import gunicorn_server
from tests.registry.factories import complete_upload, dataset_zip_bytes, lora_bytes, make_version

PAID = lora_bytes(seed=41, rank=8)
DATASET = dataset_zip_bytes(images=4)


@dataclass
class Shop:
    owner: Any
    buyer: Any
    shopper: Any
    tokens: dict[str, str]
    version: Any
    model_file: Any
    dataset_version: Any

    def headers(self, role: str) -> dict[str, str]:
        return {} if role == "anon" else {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
def shop(restore_license_catalogue: None, transactional_db: None, settings: Any) -> Shop:
    """A paid LoRA and a paid dataset of owner's; buyer bought both, shopper nothing."""
    from django.contrib.auth import get_user_model

    from core.services import token_create
    from marketplace.payments import DemoProvider
    from marketplace.services.ledger import wallet_top_up
    from marketplace.services.listings import listing_create
    from marketplace.services.purchases import purchase_create
    from registry.services.catalog import (
        dataset_create,
        dataset_version_create_public,
        model_create,
    )
    from tests.support import load_license_catalogue

    settings.ALLOWED_HOSTS = ["*"]
    load_license_catalogue()
    users = {
        role: get_user_model().objects.create_user(
            username=f"pf-{role}", email=f"{role}@example.test", password=None
        )
        for role in ("owner", "buyer", "shopper")
    }
    owner = users["owner"]
    model = model_create(owner=owner, name="Paid ink", kind="lora")
    upload = complete_upload(user=owner, data=PAID, filename="paid-ink.safetensors")
    version = make_version(model=model, upload=upload, license_code="mit")
    dataset = dataset_create(owner=owner, name="Paid colors", kind="public")
    dataset_version = dataset_version_create_public(
        dataset=dataset,
        user=owner,
        name="v1",
        upload=complete_upload(user=owner, data=DATASET, filename="paid-colors.zip"),
    )
    model_listing = listing_create(seller=owner, target=version, price=900)
    dataset_listing = listing_create(seller=owner, target=dataset_version, price=90)
    for role in ("buyer", "shopper"):
        wallet_top_up(
            user=users[role],
            amount=5000,
            provider=DemoProvider(),
            idempotency_key=f"pf-fund-{role}",
        )
    purchase_create(buyer=users["buyer"], listing=model_listing, idempotency_key="pf-1")
    purchase_create(buyer=users["buyer"], listing=dataset_listing, idempotency_key="pf-2")
    return Shop(
        owner=owner,
        buyer=users["buyer"],
        shopper=users["shopper"],
        tokens={role: token_create(user=u, name="pf").secret for role, u in users.items()},
        version=version,
        model_file=version.files.select_related("blob").get(),
        dataset_version=dataset_version,
    )


def _signed(shop: Shop, *, user: Any, ttl: int | None = None, dataset: bool = False) -> str:
    from registry.services.downloads import signed_file_url

    if dataset:
        blob, name = shop.dataset_version.blob, shop.dataset_version.filename
    else:
        blob, name = shop.model_file.blob, shop.model_file.filename
    return signed_file_url(blob=blob, filename=name, user_id=user.pk, ttl=ttl)


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    query = {k: v for k, v in query.items() if v != ""}
    return f"{parts.path}?{urlencode(query)}"


def _guesses(shop: Shop) -> list[tuple[str, str]]:
    """(role, path) of every way a non-buyer could try to reach the paid bytes."""
    from registry.services.blobs import blob_storage_name

    paths: list[str] = []
    for blob in (shop.model_file.blob, shop.dataset_version.blob):
        name = blob_storage_name(blob.sha256)
        paths += [
            f"/media/{name}",
            f"/media/{blob.storage_name}",
            f"/{name}",
            f"/media/../blobs/{name}",
            f"/media/blobs/{blob.sha256}",
        ]
    v, f, d = shop.version, shop.model_file, shop.dataset_version
    repo = f"{shop.owner.get_username()}/{v.model.slug}"
    paths += [
        f"/{repo}/resolve/main/{f.path}",
        f"/{repo}/resolve/{v.pk}/{f.path}",
        f"/api/download/models/{v.pk}",
        f"/civitai/api/download/models/{v.pk}",
        f"/api/v1/files/{f.pk}/download",
        f"/api/download/datasets/{d.pk}",
        # the signed route: no signature, a forged one, an expired one
        f"/files/{f.blob_id}/{f.filename}",
        _with_query(_signed(shop, user=shop.buyer), signature=""),
        _with_query(_signed(shop, user=shop.buyer), signature="0" * 64),
        _signed(shop, user=shop.buyer, ttl=-1),
        _signed(shop, user=shop.buyer, ttl=-1, dataset=True),
    ]
    guesses = [(role, p) for role in ("anon", "shopper") for p in paths]
    # another user's link: the buyer's signature with the shopper's id; the shopper's own
    # genuinely signed link (the shopper is not entitled); the buyer's, re-expired
    buyer_link = _signed(shop, user=shop.buyer)
    guesses += [
        ("shopper", _with_query(buyer_link, uid=str(shop.shopper.pk))),
        ("anon", _with_query(buyer_link, uid="0")),
        ("shopper", _signed(shop, user=shop.shopper)),
        ("shopper", _signed(shop, user=shop.shopper, dataset=True)),
        ("anon", _with_query(buyer_link, expires=str(int(time.time()) + 86400))),
    ]
    return guesses


def _assert_no_paid_bytes(base: str, shop: Shop, role: str, path: str) -> None:
    response = requests.get(base + path, headers=shop.headers(role), timeout=20)
    leaked = PAID in response.content or DATASET in response.content
    assert not leaked, f"{role} got the paid bytes from {path} ({response.status_code})"
    assert response.status_code in (401, 403, 404), (role, path, response.status_code)


def _buyer_routes(shop: Shop) -> list[tuple[str, dict[str, str], bytes]]:
    """(path, headers, expected bytes) of every client route a buyer uses."""
    v, f, d = shop.version, shop.model_file, shop.dataset_version
    repo = f"{shop.owner.get_username()}/{v.model.slug}"
    bearer = shop.headers("buyer")
    return [
        (f"/api/download/models/{v.pk}", bearer, PAID),  # web and REST: 302 to a signed URL
        (f"/api/v1/files/{f.pk}/download", bearer, PAID),
        # Civitai tools put the token in the query
        (f"/civitai/api/download/models/{v.pk}?token={shop.tokens['buyer']}", {}, PAID),
        (f"/{repo}/resolve/main/{f.path}", bearer, PAID),  # huggingface_hub
        (f"/{repo}/resolve/main/{f.path}", {**bearer, "Range": "bytes=10-99"}, PAID[10:100]),
        (f"/api/download/models/{v.pk}", {**bearer, "Range": "bytes=-64"}, PAID[-64:]),
        (f"/api/download/datasets/{d.pk}", bearer, DATASET),
    ]


def _assert_buyer_gets_bytes(base: str, shop: Shop) -> None:
    for path, headers, expected in _buyer_routes(shop):
        response = requests.get(base + path, headers=headers, timeout=20)
        assert response.status_code == (206 if "Range" in headers else 200), (path, response.text)
        assert response.content == expected, path


def _files_under(root: str) -> list[Path]:
    folder = Path(root)
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_demo_server_serves_paid_files_only_to_the_buyer(
    shop: Shop, settings: Any, tmp_path: Path
) -> None:
    # Given the demo's configuration (DEBUG: /media/ is served) in a real gunicorn process
    with gunicorn_server(settings, tmp_path / "gunicorn.log", debug=True) as site:
        # When anonymous and a logged-in non-buyer guess every path to the paid files
        for role, path in _guesses(shop):
            # Then none answers a byte of them
            _assert_no_paid_bytes(site.url, shop, role, path)
        # And the buyer gets them through every client route
        _assert_buyer_gets_bytes(site.url, shop)
        assert "Traceback" not in site.log()


def test_paid_files_are_not_stored_under_the_public_media_folder(shop: Shop, settings: Any):
    # Given paid files stored through the upload services
    # Then nothing under MEDIA_ROOT (what a proxy serves as /media/) holds their bytes
    for path in _files_under(settings.MEDIA_ROOT):
        content = path.read_bytes()
        assert not (PAID in content or DATASET in content), f"paid bytes in {path}"
    # And they are in the private blob storage, which has no URL
    from django.core.files.storage import storages

    from registry.services.blobs import blob_storage

    assert blob_storage() is storages["blobs"] and blob_storage() is not storages["default"]
    with blob_storage().open(shop.model_file.blob.storage_name) as fh:
        assert fh.read() == PAID
    with pytest.raises(ValueError, match="no URL"):
        blob_storage().url(shop.model_file.blob.storage_name)


def test_with_x_accel_redirect_the_proxy_serves_the_file_after_the_check(
    shop: Shop, settings: Any, live_server: Any
) -> None:
    # Given the site behind nginx, which serves the private folder as an internal location
    settings.ATELIER_SENDFILE = "x-accel-redirect"
    settings.ATELIER_SENDFILE_PREFIX = "/_blobs/"
    f = shop.model_file
    repo = f"{shop.owner.get_username()}/{shop.version.model.slug}"
    # When anonymous and the non-buyer ask: no redirect to the file is handed out
    for role in ("anon", "shopper"):
        for path in (f"/{repo}/resolve/main/{f.path}", _signed(shop, user=shop.shopper)):
            response = requests.get(live_server.url + path, headers=shop.headers(role), timeout=20)
            assert response.status_code in (401, 403), (role, path)
            assert "X-Accel-Redirect" not in response.headers
    # When the buyer asks (HF resolve and the signed link of the download route)
    for path in (f"/{repo}/resolve/main/{f.path}", f"/api/download/models/{shop.version.pk}"):
        response = requests.get(live_server.url + path, headers=shop.headers("buyer"), timeout=20)
        # Then the site answers only the internal location, for the proxy to send
        assert response.status_code == 200, path
        assert response.headers["X-Accel-Redirect"] == "/_blobs/" + f.blob.storage_name
        assert response.content == b""
        assert 'filename="paid-ink.safetensors"' in response.headers["Content-Disposition"]
