"""The SuperLink the site talks to, read from settings (the coordinator and node services)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from federated.engine.superlink import Connection


def superlink_connection() -> Connection | None:
    """The SuperLink from settings; None when ``ATELIER_SUPERLINK`` is empty (no federation)."""
    address = str(settings.ATELIER_SUPERLINK or "")
    if not address:
        return None
    certificates = str(settings.ATELIER_SUPERLINK_ROOT_CERTIFICATES or "")
    return Connection(
        address=address,
        flwr_home=Path(settings.ATELIER_FLWR_HOME),
        insecure=bool(settings.ATELIER_SUPERLINK_INSECURE),
        root_certificates=Path(certificates) if certificates else None,
    )
