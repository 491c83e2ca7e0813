"""The demo's embedded SQLite holds a purchase storm served by gunicorn with threads.

`make demo` runs gunicorn (2 workers x 4 threads) on SQLite. Before WAL, a busy timeout and
IMMEDIATE write transactions, 200 concurrent purchases from 20 buyers answered 18-28 % of
them with 500 ``database is locked``. Here the same storm goes through real HTTP to a real
gunicorn on a migrated temporary SQLite file (the rest of the suite runs on PostgreSQL):
no server error, and the ledger still adds up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from bench._server import BenchEnv, Server

BUYERS = 20
PURCHASES_EACH = 10
PRICE = 100
FUNDS = 1500

SEED = f"""
import json
from django.contrib.auth import get_user_model
from core.services import token_create
from marketplace.models import Listing
from marketplace.payments import DemoProvider
from marketplace.services.ledger import wallet_top_up
from registry.models import Blob, Model, ModelFile, ModelVersion

User = get_user_model()
blob = Blob.objects.create(sha256="0" * 64, size=1, storage_name="x", autov1="0" * 8,
                           autov2="0" * 10, crc32="0" * 8, blake3="0" * 64)
listings = []
for i in range({PURCHASES_EACH}):
    seller = User.objects.create_user(username=f"seller{{i}}")
    model = Model.objects.create(owner=seller, name=f"m{{i}}", slug=f"m{{i}}", kind="lora")
    version = ModelVersion.objects.create(model=model, name="v1", status="published")
    ModelFile.objects.create(version=version, blob=blob, path="m.safetensors",
                             format="safetensors", is_primary=True)
    listings.append(Listing.objects.create(seller=seller, model_version=version,
                                           price={PRICE}).pk)
tokens = []
for i in range({BUYERS}):
    buyer = User.objects.create_user(username=f"buyer{{i}}")
    wallet_top_up(user=buyer, amount={FUNDS}, provider=DemoProvider(), idempotency_key="seed")
    tokens.append(token_create(user=buyer, name="storm").secret)
print("SEED=" + json.dumps({{"listings": listings, "tokens": tokens}}))
"""

CHECK = """
import json
from marketplace.models import Entitlement, Purchase
from marketplace.selectors import ledger_reconcile, ledger_total, unbalanced_transactions
print("CHECK=" + json.dumps({
    "total": ledger_total(),
    "unbalanced": unbalanced_transactions(),
    "mismatches": [str(m) for m in ledger_reconcile()],
    "purchases": Purchase.objects.count(),
    "entitlements": Entitlement.objects.count(),
}))
"""


def _marked(output: str, mark: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith(mark):
            found: dict[str, Any] = json.loads(line.removeprefix(mark))
            return found
    raise AssertionError(f"no {mark} line in: {output[-2000:]}")


@pytest.fixture
def sqlite_site() -> Iterator[BenchEnv]:
    """A migrated SQLite file and the demo's environment (no Redis: a local cache, eager
    Celery), as `make demo` has it."""
    workdir = Path(tempfile.mkdtemp(prefix="atelier-sqlite-"))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("CELERY_BROKER_URL", "REDIS_CACHE_URL", "AWS_STORAGE_BUCKET_NAME")
    }
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{workdir / 'atelier.sqlite3'}",
            "SECRET_KEY": "sqlite-storm",
            "ATELIER_HTTPS": "0",
            "DJANGO_DEBUG": "0",
            "HF_HUB_OFFLINE": "1",
            "MEDIA_ROOT": str(workdir / "media"),
            "ATELIER_UPLOAD_DIR": str(workdir / "uploads"),
            "ATELIER_VAR_DIR": str(workdir / "var"),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "ATELIER_PAYMENT_PROVIDER": "demo",  # the demo's top-ups (explicit, as make demo)
            "ATELIER_ALLOW_DEMO_PAYMENTS": "1",
            "LOG_LEVEL": "ERROR",
            "PYTHONUNBUFFERED": "1",
        }
    )
    (workdir / "var" / "static").mkdir(parents=True)
    site = BenchEnv(db_name="sqlite", workdir=workdir, env=env)
    try:
        site.manage("migrate", "--noinput", "-v", "0")
        yield site
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.slow
def test_a_purchase_storm_on_sqlite_gives_no_server_error(sqlite_site: BenchEnv) -> None:
    # Given 20 funded buyers and 10 listings on SQLite, served as the demo serves them
    seed = _marked(sqlite_site.shell(SEED), "SEED=")
    listings, tokens = seed["listings"], seed["tokens"]
    statuses: Counter[int] = Counter()
    bodies: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(BUYERS * PURCHASES_EACH)

    with Server(sqlite_site, workers=2, timeout=120, extra_args=("--threads", "4")) as server:

        def buy(token: str, listing: int) -> None:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"
            barrier.wait(timeout=30)
            response = session.post(
                f"{server.base_url}/api/v1/purchases",
                json={"listing_id": listing},
                timeout=60,
                headers={"Idempotency-Key": f"storm-{listing}"},
            )
            with lock:
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    bodies.append(response.text[:300])

        # When every buyer buys every listing, all 200 at once
        with ThreadPoolExecutor(BUYERS * PURCHASES_EACH) as pool:
            jobs = [pool.submit(buy, t, listing) for t in tokens for listing in listings]
            for job in jobs:
                job.result()
        balances = [
            requests.get(
                f"{server.base_url}/api/v1/wallet",
                timeout=30,
                headers={"Authorization": f"Bearer {t}"},
            ).json()
            for t in tokens
        ]
        log = server.log_tail()

    # Then not one server error, every purchase went through, and the money adds up
    assert statuses == {201: BUYERS * PURCHASES_EACH}, (statuses, bodies[:3], log[-2000:])
    assert "database is locked" not in log
    check = _marked(sqlite_site.shell(CHECK), "CHECK=")
    assert check == {
        "total": 0,
        "unbalanced": [],
        "mismatches": [],
        "purchases": BUYERS * PURCHASES_EACH,
        "entitlements": BUYERS * PURCHASES_EACH,
    }
    assert [b["balance"] for b in balances] == [FUNDS - PURCHASES_EACH * PRICE] * BUYERS, balances
