"""Hundreds of simultaneous purchases over a few listings and tight wallets.

Each worker thread has its own database connection (Django opens one per thread) and closes
it at the end. All workers start together at a barrier. PostgreSQL here allows 100
connections shared by everything on the machine, so the 240 purchase attempts run on
``MARKET_CONCURRENCY_THREADS`` (default 40) threads at once rather than 240.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from core.errors import ApplicationError
from marketplace.models import Account, Entitlement, LedgerEntry, LedgerTransaction, Purchase
from marketplace.selectors import ledger_reconcile, ledger_total, unbalanced_transactions

THREADS = int(os.environ.get("MARKET_CONCURRENCY_THREADS", "40"))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_simultaneous_purchases_keep_every_invariant(
    make_user, make_version, fund, settings, restore_license_catalogue
) -> None:
    from marketplace.services.listings import listing_create
    from marketplace.services.purchases import purchase_create

    # given: 4 listings (one with an upstream royalty and collaborators), 25 buyers with
    # tight balances, two of whom are also sellers (locks cross between wallets)
    settings.ATELIER_PLATFORM_FEE_BPS = 1000
    base_owner = make_user("base")
    make_user("collab")  # a collaborator on the first listing
    buyers = [make_user(f"b{i}") for i in range(25)]
    sellers = [make_user("s0"), buyers[0], buyers[1]]
    base = make_version(base_owner)
    listing_create(seller=base_owner, target=base, price=0, royalty_bps=700)
    listings = [
        listing_create(
            seller=sellers[0],
            target=make_version(sellers[0], parents=(base,)),
            price=29,
            shares=[("s0", 60), ("collab", 40)],
        ),
        listing_create(seller=sellers[1], target=make_version(sellers[1]), price=13),
        listing_create(seller=sellers[2], target=make_version(sellers[2]), price=7),
        listing_create(seller=sellers[0], target=make_version(sellers[0]), price=31),
    ]
    initial = {}
    for i, buyer in enumerate(buyers):
        initial[buyer.pk] = 40 + i % 5  # enough for one or two, never all four
        fund(buyer, initial[buyer.pk])
    attempts = []
    for buyer in buyers:
        for listing in listings:
            attempts.append((buyer, listing, f"{buyer.pk}-{listing.pk}-a"))
            attempts.append((buyer, listing, f"{buyer.pk}-{listing.pk}-b"))
    for buyer in buyers[:10]:  # replays of a key: must not charge twice
        for listing in listings:
            attempts.append((buyer, listing, f"{buyer.pk}-{listing.pk}-a"))
    assert len(attempts) >= 200
    before_ledger = LedgerTransaction.objects.count()

    barrier = threading.Barrier(min(THREADS, len(attempts)))
    outcomes: list[tuple[int, int, str, str]] = []
    lock = threading.Lock()
    queue = iter(attempts)
    queue_lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait(timeout=60)
            while True:
                with queue_lock:
                    item = next(queue, None)
                if item is None:
                    return
                buyer, listing, key = item
                try:
                    purchase = purchase_create(buyer=buyer, listing=listing, idempotency_key=key)
                    result = ("ok", str(purchase.pk))
                except ApplicationError as err:
                    result = ("refused", err.code)
                except Exception as err:  # any other error fails the test below
                    result = ("error", repr(err))
                with lock:
                    outcomes.append((buyer.pk, listing.pk, *result))
        finally:
            connections.close_all()

    # when
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for future in [pool.submit(worker) for _ in range(THREADS)]:
            future.result()

    # then: nothing but purchases and clean refusals happened
    kinds = Counter(o[2] for o in outcomes)
    print(
        f"\nconcurrency: {len(attempts)} attempts on {THREADS} threads: {dict(kinds)}, "
        f"refusals {dict(Counter(o[3] for o in outcomes if o[2] == 'refused'))}"
    )
    assert len(outcomes) == len(attempts)
    assert kinds["error"] == 0, [o for o in outcomes if o[2] == "error"][:5]
    refusals = Counter(o[3] for o in outcomes if o[2] == "refused")
    assert set(refusals) <= {"insufficient_funds", "already_owned", "own_listing"}
    assert refusals["insufficient_funds"] > 0  # balances really were tight

    # the ledger sums to zero, transaction by transaction, and every balance reconciles
    assert ledger_total() == 0
    assert unbalanced_transactions() == []
    assert ledger_reconcile() == []
    assert not Account.objects.filter(balance__lt=0).exclude(kind="external").exists()

    # every accepted purchase: one entitlement, one ledger transaction paying out its price
    purchases = list(Purchase.objects.select_related("ledger_transaction"))
    assert len({o[3] for o in outcomes if o[2] == "ok"}) == len(purchases)
    assert Entitlement.objects.count() == len(purchases)
    per_buyer_listing = Counter((p.buyer_id, p.listing_id) for p in purchases)
    assert max(per_buyer_listing.values()) == 1
    purchase_txns = LedgerTransaction.objects.filter(kind="purchase")
    assert purchase_txns.count() == len(purchases)  # all listed prices are > 0
    for purchase in purchases:
        entries = list(purchase.ledger_transaction.entries.all())
        charge = [e for e in entries if e.memo == "charge"]  # bought credits, then earned
        assert sum(e.amount for e in charge) == -purchase.price
        assert {e.account.owner_id for e in charge} == {purchase.buyer_id}
        assert sum(e.amount for e in entries if e.memo != "charge") == purchase.price
        assert Entitlement.objects.filter(purchase=purchase).count() == 1

    # every refused attempt moved nothing: each buyer's credits (bought and earned) = top-up
    # + earnings - what they bought; the earned ones are never more than they earned
    spent: dict[int, int] = defaultdict(int)
    for p in purchases:
        spent[p.buyer_id] += p.price
    for buyer in buyers:
        accounts = Account.objects.filter(kind__in=("wallet", "earnings"), owner=buyer)
        earned = sum(
            LedgerEntry.objects.filter(account__in=accounts, transaction__kind="purchase")
            .exclude(memo="charge")
            .values_list("amount", flat=True)
        )
        assert sum(a.balance for a in accounts) == initial[buyer.pk] + earned - spent[buyer.pk]
        earnings = accounts.filter(kind="earnings").first()
        assert earnings is None or earnings.balance <= earned
    assert LedgerTransaction.objects.count() == before_ledger + len(purchases)
