"""System checks of the marketplace's configuration (run by every manage.py command)."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Warning, register

from marketplace.payments import provider_configuration_problem

HINT = (
    "Set ATELIER_PAYMENT_PROVIDER to the dotted path of a PaymentProvider class, or to "
    "'none' to turn top-ups off on purpose; 'demo' is for the local demo (DEBUG on) or, "
    "with ATELIER_ALLOW_DEMO_PAYMENTS=1, a staging site. See docs/production.md."
)


@register()
def payment_provider_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    problem = provider_configuration_problem()
    if problem is None:
        return []
    check_id, message = problem
    if check_id.startswith("E"):
        return [Error(message, hint=HINT, id=f"marketplace.{check_id}")]
    return [Warning(message, hint=HINT, id=f"marketplace.{check_id}")]
