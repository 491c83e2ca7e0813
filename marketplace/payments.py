"""Payment providers that turn money into credits, and the one the site is configured with.

``ATELIER_PAYMENT_PROVIDER`` names it:

- ``""`` (unset): none. Top-ups are refused (503) and a system check warns at startup.
- ``"none"``: top-ups are off on purpose (a site that sells no credits); no warning.
- ``"demo"``: :class:`DemoProvider`, which approves every charge and moves no money. Only
  with ``DEBUG`` on (the demo, tests), or with ``ATELIER_ALLOW_DEMO_PAYMENTS`` (a staging
  site); otherwise top-ups are refused and the system check is an error.
- a dotted path (``"payments.stripe.StripeProvider"``): a class implementing
  :class:`PaymentProvider`, built with no arguments.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from core.errors import ApplicationError

DEMO = "demo"
NONE = "none"


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


class PaymentsUnavailableError(ApplicationError):
    status_code = 503
    code = "payments_unavailable"


def configured_provider_name() -> str:
    return str(settings.ATELIER_PAYMENT_PROVIDER or "").strip()


def demo_payments_allowed() -> bool:
    """The demo provider may mint credits: DEBUG on, or explicitly allowed (staging)."""
    return bool(settings.DEBUG or settings.ATELIER_ALLOW_DEMO_PAYMENTS)


def default_provider() -> PaymentProvider:
    """The configured provider, or :class:`PaymentsUnavailableError` (503) when top-ups are
    not possible here: none configured, or the demo provider outside the demo."""
    name = configured_provider_name()
    if name == DEMO:
        if not demo_payments_allowed():
            raise PaymentsUnavailableError(
                "Top-ups are unavailable: the demo payment provider is refused with DEBUG "
                "off (set ATELIER_ALLOW_DEMO_PAYMENTS=1 only on a staging site).",
                details={"provider": name},
            )
        return DemoProvider()
    if not name or name == NONE:
        raise PaymentsUnavailableError(
            "Top-ups are unavailable: this site has no payment provider configured "
            "(ATELIER_PAYMENT_PROVIDER).",
            details={"provider": name},
        )
    try:
        provider_class = import_string(name)
    except ImportError as err:
        raise PaymentsUnavailableError(
            f"Top-ups are unavailable: the payment provider {name!r} cannot be loaded.",
            details={"provider": name},
        ) from err
    provider: PaymentProvider = provider_class()
    return provider


def provider_configuration_problem() -> tuple[str, str] | None:
    """``(check id, message)`` when the payment provider setting is wrong or missing, for the
    system check: ``E001`` demo provider with DEBUG off, ``E002`` a provider that cannot be
    loaded, ``W001`` no provider."""
    name = configured_provider_name()
    if name == NONE:
        return None
    if name == DEMO:
        if demo_payments_allowed():
            return None
        return (
            "E001",
            "ATELIER_PAYMENT_PROVIDER is 'demo' with DEBUG off: the demo provider "
            "approves every top-up without taking money, so top-ups are refused.",
        )
    if not name:
        if settings.DEBUG:
            return None
        return (
            "W001",
            "No payment provider (ATELIER_PAYMENT_PROVIDER is unset): wallet "
            "top-ups are refused with 503.",
        )
    try:
        provider_class = import_string(name)
    except ImportError as err:
        return ("E002", f"ATELIER_PAYMENT_PROVIDER {name!r} cannot be imported: {err}.")
    if not callable(getattr(provider_class, "charge", None)):
        return ("E002", f"ATELIER_PAYMENT_PROVIDER {name!r} has no charge() method.")
    return None
