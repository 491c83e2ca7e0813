"""System checks of the federation's configuration (run by every manage.py command)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

HINT = (
    "Run the SuperLink with --ssl-ca-certfile/--ssl-certfile/--ssl-keyfile and "
    "--enable-supernode-auth (manage.py superlink certs DIR makes the certificates), set "
    "ATELIER_SUPERLINK_ROOT_CERTIFICATES to its CA certificate and leave "
    "ATELIER_SUPERLINK_INSECURE and ATELIER_SUPERLINK_NODE_AUTH at their defaults. See "
    "docs/production.md."
)


@register()
def superlink_security_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``federated.E001``: the SuperLink's CA file is missing; ``federated.W001``: a SuperLink
    without TLS or without node authentication on a site with DEBUG off."""
    if not settings.ATELIER_SUPERLINK:
        return []
    messages: list[CheckMessage] = []
    ca = str(settings.ATELIER_SUPERLINK_ROOT_CERTIFICATES or "")
    insecure = bool(settings.ATELIER_SUPERLINK_INSECURE)
    if ca and not insecure and not Path(ca).is_file():
        messages.append(
            Error(
                f"ATELIER_SUPERLINK_ROOT_CERTIFICATES {ca!r} is not a file: the site cannot "
                "verify the SuperLink.",
                hint=HINT,
                id="federated.E001",
            )
        )
    node_auth = bool(settings.ATELIER_SUPERLINK_NODE_AUTH)
    if not settings.DEBUG and (insecure or not node_auth):
        messages.append(
            Warning(
                "The SuperLink is used without TLS or without SuperNode authentication: any "
                "machine that reaches it can join jobs as a node."
                if insecure
                else "SuperNode authentication is off (ATELIER_SUPERLINK_NODE_AUTH=0): the "
                "site does not keep the SuperLink's node keys, revoking a node does not "
                "shut it out.",
                hint=HINT,
                id="federated.W001",
            )
        )
    return messages
