"""The SuperLink's operator tools.

``manage.py superlink certs DIR [--host NAME_OR_IP ...]``: a CA (kept if DIR has one) and the
SuperLink's TLS certificate for those names (default 127.0.0.1, localhost, ::1); prints the
``flower-superlink`` flags and what to give nodes (``ca.crt``).

``manage.py superlink nodes [--sync]``: the site's nodes with the SuperLink's id and status for
their key; ``--sync`` registers what is missing and unregisters revoked nodes' keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import ApplicationError
from federated.engine.pki import DEFAULT_HOSTS, generate_server_certificates
from federated.engine.superlink import SuperLinkError, public_key_pem, supernodes_list


class Command(BaseCommand):
    help = "SuperLink operator tools: TLS certificates, node keys (SuperNode authentication)."
    # `certs` makes the CA file whose absence the federation's check reports (federated.E001):
    # it must run before that file exists. `nodes` runs them itself.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        certs = sub.add_parser("certs", help="make the CA and the SuperLink's certificate")
        certs.add_argument("dir", type=Path)
        certs.add_argument(
            "--host", action="append", default=[], help="a name or address clients use (repeat)"
        )
        nodes = sub.add_parser("nodes", help="the site's node keys on the SuperLink")
        nodes.add_argument("--sync", action="store_true", help="register/unregister to match")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "certs":
            self._certs(options["dir"], options["host"] or list(DEFAULT_HOSTS))
        else:
            self.check()
            self._nodes(sync=options["sync"])

    def _certs(self, folder: Path, hosts: list[str]) -> None:
        certs = generate_server_certificates(folder, hosts=hosts)
        self.stdout.write(f"CA certificate (give it to nodes and the site): {certs.ca_cert}")
        self.stdout.write(f"server certificate for {', '.join(hosts)}: {certs.server_cert}")
        self.stdout.write("flower-superlink " + " ".join(certs.superlink_args()))

    def _nodes(self, *, sync: bool) -> None:
        from federated.models import Node
        from federated.services.nodes import node_auth_connection, nodes_superlink_sync

        connection = node_auth_connection()
        if connection is None:
            raise CommandError("no SuperLink with node authentication is configured")
        try:
            if sync:
                done = nodes_superlink_sync()
                self.stdout.write(
                    f"registered {done.registered}, relinked {done.relinked}, "
                    f"unregistered {done.unregistered}, refused (need a new key) {done.refused}"
                )
            on_link = {n.public_key_pem: n for n in supernodes_list(connection)}
        except (SuperLinkError, ApplicationError) as exc:
            raise CommandError(str(exc)) from exc
        for node in Node.objects.order_by("pk"):
            info = on_link.get(public_key_pem(node.public_key))
            status = info.status if info else "not on the SuperLink"
            site = "revoked" if node.revoked_at else "active"
            self.stdout.write(
                f"{node.pk}\t{node.name}\t{site}\t{node.superlink_node_id or '-'}\t{status}"
            )
