"""Payment providers that turn money into credits. The demo provider approves at once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PaymentResult:
    approved: bool
    provider_reference: str = ""
    message: str = ""


class PaymentProvider(Protocol):
    """Charges a user for ``amount`` credits; the ledger records what it approves."""

    name: str

    def charge(self, *, user_id: int, amount: int, reference: str) -> PaymentResult: ...


class DemoProvider:
    """Approves every charge instantly (demo and tests); no money moves."""

    name = "demo"

    def charge(self, *, user_id: int, amount: int, reference: str) -> PaymentResult:
        return PaymentResult(approved=True, provider_reference=f"demo-{uuid.uuid4().hex[:16]}")


class DecliningProvider:
    """Declines every charge (tests of the refusal path)."""

    name = "declining"

    def charge(self, *, user_id: int, amount: int, reference: str) -> PaymentResult:
        return PaymentResult(approved=False, message="The card was declined.")


def default_provider() -> PaymentProvider:
    return DemoProvider()
