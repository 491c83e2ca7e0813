"""Purchase throughput: one hot listing versus many listings, with the ledger checked after.

    python bench/purchases.py --buyers 400 --threads 16 --listings 50

Creates a throw-away PostgreSQL database (``bench/_server.py``), migrates it, and in this
process creates buyers with funded wallets (through the top-up service), sellers, versions
and listings. Then, for each scenario, every buyer buys once, on ``--threads`` threads (each
with its own database connection), and it prints purchases per second:

(a) hot: every buyer buys the same listing, so every purchase locks that seller's wallet;
(b) spread: buyers buy across ``--listings`` listings of different sellers.

It prints (b)/(a) as a ratio measured in the same run, then checks the invariants: the ledger
sums to zero, every balance equals its entries, no balance is negative, one entitlement per
purchase.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import bench_env


def _setup(n_buyers: int, n_listings: int) -> tuple[list, object, list]:  # type: ignore[type-arg]
    from django.contrib.auth import get_user_model

    from marketplace.models import Listing
    from marketplace.payments import DemoProvider
    from marketplace.services.ledger import wallet_top_up
    from registry.models import Blob, Model, ModelFile, ModelVersion

    User = get_user_model()
    blob = Blob.objects.create(
        sha256="0" * 64,
        size=1,
        storage_name="x",
        autov1="0" * 8,
        autov2="0" * 10,
        crc32="0" * 8,
        blake3="0" * 64,
    )

    def listed(seller: object, i: int) -> Listing:
        model = Model.objects.create(owner=seller, name=f"m{i}", slug=f"m{i}", kind="lora")
        version = ModelVersion.objects.create(model=model, name="v1", status="published")
        ModelFile.objects.create(
            version=version, blob=blob, path="m.safetensors", format="safetensors", is_primary=True
        )
        return Listing.objects.create(seller=seller, model_version=version, price=100)

    sellers = [User.objects.create_user(username=f"seller{i}") for i in range(n_listings + 1)]
    hot = listed(sellers[0], 0)
    spread = [listed(s, i + 1) for i, s in enumerate(sellers[1:])]
    buyers = []
    for i in range(n_buyers):
        buyer = User.objects.create_user(username=f"buyer{i}")
        wallet_top_up(user=buyer, amount=250, provider=DemoProvider(), idempotency_key="seed")
        buyers.append(buyer)
    return buyers, hot, spread


def _run(pairs: list, threads: int) -> tuple[float, int, int]:  # type: ignore[type-arg]
    from django.db import connections

    from core.errors import ApplicationError
    from marketplace.services.purchases import purchase_create

    ok = refused = 0
    lock = threading.Lock()
    items = iter(pairs)
    barrier = threading.Barrier(threads)

    def worker() -> None:
        nonlocal ok, refused
        try:
            barrier.wait()
            while True:
                with lock:
                    item = next(items, None)
                if item is None:
                    return
                buyer, listing, key = item
                try:
                    purchase_create(buyer=buyer, listing=listing, idempotency_key=key)
                    with lock:
                        ok += 1
                except ApplicationError:
                    with lock:
                        refused += 1
        finally:
            connections.close_all()

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(worker) for _ in range(threads)]:
            f.result()
    return time.perf_counter() - start, ok, refused


def _check() -> list[str]:
    from marketplace.models import Account, Entitlement, Purchase
    from marketplace.selectors import ledger_reconcile, ledger_total, unbalanced_transactions

    problems = []
    if ledger_total() != 0:
        problems.append(f"ledger sums to {ledger_total()}")
    if unbalanced_transactions():
        problems.append(f"unbalanced transactions: {unbalanced_transactions()[:5]}")
    if ledger_reconcile():
        problems.append(f"balances differ from entries: {ledger_reconcile()[:5]}")
    if Account.objects.filter(balance__lt=0).exclude(kind="external").exists():
        problems.append("a negative balance")
    if Entitlement.objects.count() != Purchase.objects.count():
        problems.append("entitlements != purchases")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=400)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--listings", type=int, default=50)
    args = parser.parse_args()
    with bench_env("purchases") as bench:
        os.environ.update(bench.env)
        import django

        django.setup()
        buyers, hot, spread = _setup(args.buyers, args.listings)
        hot_pairs = [(b, hot, "hot") for b in buyers]
        spread_pairs = [(b, spread[i % len(spread)], "spread") for i, b in enumerate(buyers)]
        t_hot, ok_hot, ref_hot = _run(hot_pairs, args.threads)
        t_spread, ok_spread, ref_spread = _run(spread_pairs, args.threads)
        problems = _check()
        from django.db import connections

        connections.close_all()
    hot_rate, spread_rate = ok_hot / t_hot, ok_spread / t_spread
    print(f"purchases: {args.buyers} buyers, {args.threads} threads, {os.cpu_count()} cores")
    print(
        f"  (a) one hot listing : {ok_hot} ok, {ref_hot} refused in {t_hot:.2f}s "
        f"= {hot_rate:.0f} purchases/s"
    )
    print(
        f"  (b) {args.listings} listings  : {ok_spread} ok, {ref_spread} refused in "
        f"{t_spread:.2f}s = {spread_rate:.0f} purchases/s"
    )
    print(f"  ratio (b)/(a): {spread_rate / hot_rate:.2f}")
    print("  invariants: " + ("OK" if not problems else "; ".join(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
