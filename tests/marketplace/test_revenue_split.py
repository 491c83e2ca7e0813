"""Revenue split arithmetic: never creates or loses a credit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketplace.revenue_split import revenue_split


def test_fee_then_royalty_then_shares_with_the_remainder_to_the_seller() -> None:
    parts = revenue_split(
        price=101,
        fee_bps=1000,
        seller="s",
        royalties=[("base", 500)],
        shares=[("s", 50), ("c", 50)],
    )
    # 101: fee 10, royalty 5 (of the gross), 86 left; 43 + 43 shared, nothing left over
    assert [(p.recipient, p.amount, p.role) for p in parts] == [
        ("platform", 10, "fee"),
        ("base", 5, "royalty"),
        ("s", 43, "share"),
        ("c", 43, "share"),
    ]


def test_split_of_an_odd_price_sends_the_rounding_remainder_to_the_seller() -> None:
    parts = revenue_split(
        price=101,
        fee_bps=1000,
        seller="s",
        royalties=[("base", 500)],
        shares=[("a", 33), ("b", 33), ("c", 34)],
    )
    got = {(p.recipient, p.role): p.amount for p in parts}
    # 101: fee 10, royalty 5, 86 left; shares 28 + 28 + 29 = 85; remainder 1 to the seller
    assert got == {
        ("platform", "fee"): 10,
        ("base", "royalty"): 5,
        ("a", "share"): 28,
        ("b", "share"): 28,
        ("c", "share"): 29,
        ("s", "seller"): 1,
    }


def test_royalties_never_take_more_than_is_left_and_are_scaled_all_alike() -> None:
    parts = revenue_split(price=100, fee_bps=5000, seller="s", royalties=[("x", 5000), ("y", 5000)])
    assert sum(p.amount for p in parts) == 100
    assert {p.recipient: p.amount for p in parts} == {"platform": 50, "x": 25, "y": 25}


def test_three_bases_asking_5000_bps_each_share_what_the_fee_leaves_evenly() -> None:
    # The case of issue 18: 37 credits, fee 10% (3); the third ancestor used to get 0
    parts = revenue_split(
        price=37, fee_bps=1000, seller="s", royalties=[("a", 5000), ("b", 5000), ("c", 5000)]
    )
    got = {p.recipient: p.amount for p in parts}
    assert got == {"platform": 3, "a": 11, "b": 11, "c": 11, "s": 1}
    assert sum(got.values()) == 37


def test_shares_that_do_not_sum_to_100_are_refused() -> None:
    with pytest.raises(ValueError):
        revenue_split(price=10, fee_bps=0, seller="s", shares=[("a", 50), ("b", 49)])


@given(
    price=st.integers(min_value=0, max_value=10**9),
    fee_bps=st.integers(min_value=0, max_value=10_000),
    royalties=st.lists(st.integers(min_value=0, max_value=5000), max_size=4),
    cuts=st.lists(st.integers(min_value=1, max_value=99), max_size=5, unique=True),
)
def test_parts_always_sum_to_the_price(price, fee_bps, royalties, cuts) -> None:
    points = sorted(set(cuts))
    bounds = [0, *points, 100]
    pairs = zip(bounds, bounds[1:], strict=False)
    shares = [(f"c{i}", hi - lo) for i, (lo, hi) in enumerate(pairs)]
    parts = revenue_split(
        price=price,
        fee_bps=fee_bps,
        seller="s",
        royalties=[(f"r{i}", bps) for i, bps in enumerate(royalties)],
        shares=shares,
    )
    assert sum(p.amount for p in parts) == price
    assert all(p.amount > 0 for p in parts)
    fee = sum(p.amount for p in parts if p.role == "fee")
    assert fee == price * fee_bps // 10_000


def test_every_odd_price_up_to_10001_splits_exactly() -> None:
    for price in range(1, 10_002, 2):
        parts = revenue_split(
            price=price,
            fee_bps=1234,
            seller="s",
            royalties=[("b", 777)],
            shares=[("a", 33), ("b", 33), ("c", 34)],
        )
        assert sum(p.amount for p in parts) == price
