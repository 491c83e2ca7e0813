"""Listings and purchases: validation, idempotency, splits, entitlements."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from core.errors import ApplicationError, ConflictError
from marketplace.models import Entitlement, LedgerEntry, Purchase
from marketplace.selectors import platform_revenue_total, wallet_balance
from marketplace.services.ledger import InsufficientFundsError
from marketplace.services.listings import listing_create, listing_update
from marketplace.services.purchases import purchase_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fee(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ATELIER_PLATFORM_FEE_BPS = 1000


def test_purchase_charges_splits_and_entitles(buyer, seller, listing, ledger_is_balanced) -> None:
    purchase = purchase_create(buyer=buyer, listing=listing, idempotency_key="k1")
    assert wallet_balance(user=buyer) == 900
    assert wallet_balance(user=seller) == 90
    assert platform_revenue_total() == 10
    assert Entitlement.objects.get(user=buyer).purchase == purchase
    ledger_is_balanced()


def test_same_key_same_listing_returns_the_same_purchase_without_a_second_charge(
    buyer, listing
) -> None:
    first = purchase_create(buyer=buyer, listing=listing, idempotency_key="k1")
    second = purchase_create(buyer=buyer, listing=listing, idempotency_key="k1")
    assert first.pk == second.pk
    assert wallet_balance(user=buyer) == 900
    assert Purchase.objects.count() == 1


def test_same_key_for_another_listing_is_a_409(buyer, seller, listing, make_version) -> None:
    other = listing_create(seller=seller, target=make_version(seller), price=5)
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k1")
    with pytest.raises(ConflictError) as err:
        purchase_create(buyer=buyer, listing=other, idempotency_key="k1")
    assert err.value.status_code == 409
    assert wallet_balance(user=buyer) == 900


def test_buying_your_own_listing_is_refused(seller, listing, fund) -> None:
    fund(seller, 500)
    with pytest.raises(ApplicationError) as err:
        purchase_create(buyer=seller, listing=listing, idempotency_key="k")
    assert err.value.code == "own_listing"
    assert wallet_balance(user=seller) == 500


def test_insufficient_balance_is_a_402_and_moves_nothing(make_user, fund, listing) -> None:
    poor = make_user("poor")
    fund(poor, 99)
    entries = LedgerEntry.objects.count()
    with pytest.raises(InsufficientFundsError) as err:
        purchase_create(buyer=poor, listing=listing, idempotency_key="k")
    assert err.value.status_code == 402
    assert "balance 99" in err.value.message
    assert LedgerEntry.objects.count() == entries
    assert not Purchase.objects.filter(buyer=poor).exists()
    assert not Entitlement.objects.filter(user=poor).exists()


def test_buying_twice_with_another_key_is_refused(buyer, listing) -> None:
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k1")
    with pytest.raises(ConflictError) as err:
        purchase_create(buyer=buyer, listing=listing, idempotency_key="k2")
    assert err.value.code == "already_owned"
    assert wallet_balance(user=buyer) == 900


def test_missing_idempotency_key_is_refused(buyer, listing) -> None:
    with pytest.raises(ApplicationError) as err:
        purchase_create(buyer=buyer, listing=listing, idempotency_key="  ")
    assert err.value.code == "idempotency_key_required"


@pytest.mark.parametrize("price", [-1, 1.5, "10", None, True])
def test_listing_price_must_be_a_non_negative_whole_number(seller, make_version, price) -> None:
    with pytest.raises(ApplicationError) as err:
        listing_create(seller=seller, target=make_version(seller), price=price)
    assert err.value.code == "bad_price"


@pytest.mark.parametrize(
    "shares",
    [
        [("seller", 60), ("collab", 30)],
        [("seller", 0), ("collab", 100)],
        [("seller", 50.5), ("collab", 49.5)],
        [("seller", 50), ("seller", 50)],
        [("seller", 50), ("nobody", 50)],
    ],
)
def test_bad_shares_are_refused(seller, make_user, make_version, shares) -> None:
    make_user("collab")
    with pytest.raises(ApplicationError) as err:
        listing_create(seller=seller, target=make_version(seller), price=10, shares=shares)
    assert err.value.code == "bad_shares"


def test_only_the_owner_can_list_a_version(seller, buyer, make_version) -> None:
    with pytest.raises(ApplicationError) as err:
        listing_create(seller=buyer, target=make_version(seller), price=10)
    assert err.value.status_code == 403


def test_only_the_seller_can_update_a_listing(buyer, listing) -> None:
    with pytest.raises(ApplicationError) as err:
        listing_update(listing=listing, user=buyer, price=1)
    assert err.value.status_code == 403


def test_revenue_goes_to_fee_upstream_royalty_and_collaborators(
    make_user, fund, make_version, ledger_is_balanced
) -> None:
    base_owner, seller, collab, buyer = (make_user(n) for n in ("base", "s", "c", "b"))
    fund(buyer, 1000)
    base = make_version(base_owner)
    listing_create(seller=base_owner, target=base, price=0, royalty_bps=500)
    lora = make_version(seller, parents=(base,))
    listing = listing_create(seller=seller, target=lora, price=101, shares=[("s", 50), ("c", 50)])
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k")
    # 101: fee 10, royalty 5% of 101 = 5, 86 left shared 43/43
    assert wallet_balance(user=base_owner) == 5
    assert wallet_balance(user=seller) == 43
    assert wallet_balance(user=collab) == 43
    assert platform_revenue_total() == 10
    assert wallet_balance(user=buyer) == 899
    ledger_is_balanced()


def test_dataset_owner_earns_a_royalty_from_a_lora_trained_on_it(
    make_user, fund, make_version, ledger_is_balanced
) -> None:
    from marketplace.models import Listing
    from registry.models import Dataset, DatasetVersion

    data_owner, seller, buyer = (make_user(n) for n in ("d", "s", "b"))
    fund(buyer, 1000)
    dataset = Dataset.objects.create(owner=data_owner, name="d", slug="d", kind="private")
    dv = DatasetVersion.objects.create(dataset=dataset, name="v1", image_count=3)
    Listing.objects.create(seller=data_owner, dataset_version=dv, price=0, royalty_bps=1000)
    lora = make_version(seller, parents=(dv,))
    listing = listing_create(seller=seller, target=lora, price=200)
    purchase_create(buyer=buyer, listing=listing, idempotency_key="k")
    assert wallet_balance(user=data_owner) == 20
    assert wallet_balance(user=seller) == 160
    ledger_is_balanced()


def test_early_access_is_free_after_its_date(buyer, seller, make_version) -> None:
    past = timezone.now() - datetime.timedelta(days=1)
    listing = listing_create(
        seller=seller,
        target=make_version(seller),
        price=100,
        early_access_until=timezone.now() + datetime.timedelta(days=1),
    )
    listing_update(listing=listing, user=seller, early_access_until=past)
    purchase = purchase_create(buyer=buyer, listing=listing, idempotency_key="k")
    assert purchase.price == 0
    assert purchase.ledger_transaction is None
    assert wallet_balance(user=buyer) == 1000
    assert Entitlement.objects.filter(user=buyer).count() == 1


def test_many_odd_prices_never_create_or_lose_a_credit(
    make_user, fund, make_version, ledger_is_balanced
) -> None:
    seller, a, b = make_user("s"), make_user("a"), make_user("b")
    buyer = make_user("buyer")
    fund(buyer, 10**6)
    total = 0
    for price in (1, 3, 7, 33, 99, 101, 997, 1001):
        listing = listing_create(
            seller=seller,
            target=make_version(seller),
            price=price,
            shares=[("s", 34), ("a", 33), ("b", 33)],
        )
        purchase_create(buyer=buyer, listing=listing, idempotency_key=f"k{price}")
        total += price
    earned = sum(wallet_balance(user=u) for u in (seller, a, b))
    assert earned + platform_revenue_total() == total
    assert wallet_balance(user=buyer) == 10**6 - total
    ledger_is_balanced()
