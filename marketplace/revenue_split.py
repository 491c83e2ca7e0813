"""How a price is divided: pure integer arithmetic, no Django.

Order: the platform fee first, then upstream royalties (each a share of the gross price),
then collaborators by percent of what remains. Every division rounds down; the remainder goes
to the seller, so the parts always sum to the price exactly.

Royalties are honoured in full when they total at most what the fee leaves (10000 - fee bps);
a listing whose lineage asks more is refused (``marketplace.services.listings``). Should they
exceed it anyway (an ancestor raised its royalty after the listing), what the fee leaves is
shared among the ancestors in proportion to their bps, all alike, and the seller gets the
rounding remainder.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

BPS = 10_000


@dataclass(frozen=True)
class Part:
    recipient: Hashable  # a user id, or the string "platform"
    amount: int
    role: str  # "fee", "royalty", "share", "seller"


def revenue_split(
    *,
    price: int,
    fee_bps: int,
    seller: Hashable,
    royalties: Sequence[tuple[Hashable, int]] = (),
    shares: Sequence[tuple[Hashable, int]] = (),
) -> list[Part]:
    """The parts of ``price``; zero parts are left out. ``shares`` are percents summing to 100
    (or empty: all to the seller)."""
    if price < 0 or not 0 <= fee_bps <= BPS:
        raise ValueError("price must be >= 0 and fee_bps within 0..10000")
    if shares and sum(p for _, p in shares) != 100:
        raise ValueError("shares must sum to 100")
    parts: list[Part] = []
    fee = price * fee_bps // BPS
    parts.append(Part("platform", fee, "fee"))
    left = price - fee
    for _, bps in royalties:
        if not 0 <= bps <= BPS:
            raise ValueError("royalty bps within 0..10000")
    asked = [price * bps // BPS for _, bps in royalties]
    if sum(asked) > left:  # more than the fee leaves: scale all alike
        total_bps = sum(bps for _, bps in royalties)
        asked = [left * bps // total_bps for _, bps in royalties]
    for (recipient, _), amount in zip(royalties, asked, strict=True):
        parts.append(Part(recipient, amount, "royalty"))
        left -= amount
    shared = 0
    for recipient, percent in shares:
        amount = left * percent // 100
        parts.append(Part(recipient, amount, "share"))
        shared += amount
    parts.append(Part(seller, left - shared, "seller"))
    return [p for p in parts if p.amount > 0]
