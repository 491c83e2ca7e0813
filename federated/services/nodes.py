"""Data owners' nodes: registration (public key + a site token shown once), heartbeats,
revocation, and the node's key on the SuperLink.

With ``ATELIER_SUPERLINK_NODE_AUTH`` (the SuperLink runs ``--enable-supernode-auth``), the
SuperLink admits only keys registered on the site and not revoked: registering a node enqueues
:func:`node_superlink_register` (the key goes to the SuperLink's Control API, its node id comes
back into ``Node.superlink_node_id``), revoking it enqueues :func:`node_superlink_unregister`
(the SuperLink ends the node's next pull). Both are idempotent and retried by Celery while the
SuperLink is unreachable; :func:`nodes_superlink_reconcile` catches up on what was missed."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import AccessDeniedError, ApplicationError, ConflictError, NotFoundError
from core.tasks import enqueue_on_commit
from federated.connection import superlink_connection
from federated.engine.superlink import (
    Connection,
    SuperNodeKeyInUse,
    supernode_find,
    supernode_register,
    supernode_unregister,
)
from federated.models import Node
from federated.services.tokens import NODE_TOKEN_PREFIX, secret_digest, secret_issue

log = logging.getLogger(__name__)
# Flower's SuperNode authentication takes ECDSA keys on NIST curves only.
KEY_TYPES = ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
MAX_SERVED = 100
_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RegisteredNode:
    node: Node
    token: str  # shown once, never stored


@dataclass(frozen=True)
class PublicKey:
    openssh: str  # "<type> <base64>", without the comment
    key_type: str
    fingerprint: str  # SHA-256 of the key blob, hex


def public_key_parse(text: str) -> PublicKey:
    """An OpenSSH ECDSA (NIST curve) public key line, checked by parsing the key itself."""
    parts = (text or "").strip().split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise ApplicationError(
            "The public key must be an OpenSSH ECDSA public key line "
            f"({', '.join(KEY_TYPES)} AAAA...), as `atelier node init` writes; Flower's "
            "node authentication takes no other kind.",
            code="bad_public_key",
        )
    key_type, body = parts[0], parts[1]
    try:
        blob = base64.b64decode(body, validate=True)
        key = load_ssh_public_key(f"{key_type} {body}".encode())
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ApplicationError(
            f"The public key does not parse as {key_type}: {exc}", code="bad_public_key"
        ) from exc
    if not isinstance(key, EllipticCurvePublicKey):
        raise ApplicationError("Only ECDSA keys are accepted.", code="bad_public_key")
    return PublicKey(f"{key_type} {body}", key_type, hashlib.sha256(blob).hexdigest())


def _clean_name(name: str) -> str:
    cleaned = " ".join((name or "").split())[:100]
    if not cleaned:
        raise ApplicationError("A node needs a name.", code="name_required")
    return cleaned


@transaction.atomic
def node_register(*, owner: User, name: str, public_key: str) -> RegisteredNode:
    """Register a node for ``owner``; the returned token is the only copy of the secret."""
    key = public_key_parse(public_key)
    if Node.objects.filter(key_fingerprint=key.fingerprint, revoked_at__isnull=True).exists():
        raise ConflictError(
            "A node with this public key is already registered.", code="duplicate_public_key"
        )
    if Node.objects.filter(key_fingerprint=key.fingerprint).exists():
        # The SuperLink never registers a key again once it was unregistered.
        raise ConflictError(
            "This public key belonged to a revoked node; make a new key "
            "(atelier node init --force).",
            code="revoked_public_key",
        )
    token, digest = secret_issue(NODE_TOKEN_PREFIX)
    try:
        with transaction.atomic():
            node = Node.objects.create(
                owner=owner,
                name=_clean_name(name),
                public_key=key.openssh,
                key_type=key.key_type,
                key_fingerprint=key.fingerprint,
                token_prefix=token[:12],
                token_digest=digest,
            )
    except IntegrityError as exc:  # a concurrent registration of the same key
        raise ConflictError(
            "A node with this public key is already registered.", code="duplicate_public_key"
        ) from exc
    if node_auth_connection() is not None:
        _enqueue("node_superlink_register", node.pk)
    return RegisteredNode(node=node, token=token)


def node_authenticate(*, token: str) -> Node | None:
    """The active node a token belongs to, or None."""
    if not token.startswith(NODE_TOKEN_PREFIX):
        return None
    return (
        Node.objects.select_related("owner")
        .filter(token_digest=secret_digest(token), revoked_at__isnull=True)
        .first()
    )


def node_heartbeat(
    *, node: Node, datasets: Sequence[str], flwr_node_id: str = "", version: str = ""
) -> Node:
    """The node is alive and serves these manifest hashes."""
    if node.revoked_at is not None:
        raise AccessDeniedError("This node was revoked.", code="node_revoked")
    served: list[str] = []
    for value in datasets:
        digest = str(value).strip().lower()
        if not _HASH.match(digest):
            raise ApplicationError(
                "datasets lists manifest hashes (64 hexadecimal digits).",
                code="bad_manifest_hash",
                details={"value": str(value)[:80]},
            )
        if digest not in served:
            served.append(digest)
    if len(served) > MAX_SERVED:
        raise ApplicationError(
            f"A node serves at most {MAX_SERVED} datasets.", code="too_many_datasets"
        )
    node.serving = served
    node.last_seen_at = timezone.now()
    node.flwr_node_id = str(flwr_node_id or node.flwr_node_id)[:40]
    node.software_version = str(version or "")[:60]
    Node.objects.filter(pk=node.pk).update(
        serving=node.serving,
        last_seen_at=node.last_seen_at,
        flwr_node_id=node.flwr_node_id,
        software_version=node.software_version,
    )
    return node


@transaction.atomic
def node_revoke(*, node: Node, user: User) -> Node:
    """Revoke the node's token (owner or staff). Its datasets cannot join new jobs."""
    if not (user.pk == node.owner_id or user.is_staff):
        raise NotFoundError("No such node.")
    node = Node.objects.select_for_update().get(pk=node.pk)
    if node.revoked_at is None:
        node.revoked_at = timezone.now()
        node.save(update_fields=["revoked_at"])
    if node.superlink_unregistered_at is None and node_auth_connection() is not None:
        _enqueue("node_superlink_unregister", node.pk)
    return node


# --- the node's key on the SuperLink (SuperNode authentication) ------------------------------


def node_auth_connection() -> Connection | None:
    """The SuperLink whose node keys the site keeps, or None (no SuperLink, or no node auth)."""
    if not settings.ATELIER_SUPERLINK_NODE_AUTH:
        return None
    return superlink_connection()


def _enqueue(task: str, node_id: int) -> None:
    """Send ``federated.tasks.<task>(node_id)`` once the transaction commits; if the broker is
    down, :func:`nodes_superlink_reconcile` does it later."""
    enqueue_on_commit(f"federated.tasks.{task}", args=[node_id])


def node_superlink_register(*, node_id: int) -> Node:
    """Register the node's public key on the SuperLink and keep the node id it gives.

    Idempotent: a node already registered, revoked, or a site without node auth is left as it
    is; a key the SuperLink already has (an earlier answer that was lost) is looked up. Raises
    :class:`federated.engine.superlink.SuperLinkUnavailable` for the task to retry.
    """
    connection = node_auth_connection()
    node = Node.objects.get(pk=node_id)
    if connection is None or node.revoked_at is not None or node.superlink_node_id:
        return node
    try:
        superlink_id = supernode_register(
            node.public_key, connection, name=f"atelier-node-{node.pk}"
        )
    except SuperNodeKeyInUse as exc:
        found = supernode_find(node.public_key, connection)
        if found is None or not found.registered:
            raise ConflictError(
                "The SuperLink refuses this key: it was unregistered before.",
                code="revoked_public_key",
            ) from exc
        superlink_id = found.node_id
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node_id)
        if not node.superlink_node_id:
            node.superlink_node_id = superlink_id
            node.save(update_fields=["superlink_node_id"])
    if node.revoked_at is not None:  # revoked while we registered it: take the key back
        return node_superlink_unregister(node_id=node_id)
    return node


def node_superlink_unregister(*, node_id: int) -> Node:
    """Remove a revoked node's key from the SuperLink: its next pull is refused, and the key
    can never connect again. Idempotent; an active node is left alone."""
    connection = node_auth_connection()
    node = Node.objects.get(pk=node_id)
    if connection is None or node.revoked_at is None or node.superlink_unregistered_at:
        return node
    ids = {node.superlink_node_id} - {""}
    found = supernode_find(node.public_key, connection)  # a registration whose answer was lost
    if found is not None and found.registered:
        ids.add(found.node_id)
    for superlink_id in sorted(ids):
        supernode_unregister(superlink_id, connection)
    node.superlink_unregistered_at = timezone.now()
    Node.objects.filter(pk=node.pk).update(superlink_unregistered_at=node.superlink_unregistered_at)
    return node


def nodes_superlink_reconcile() -> list[int]:
    """Enqueue what the SuperLink is missing: active nodes without a SuperLink id, revoked
    nodes whose key was not unregistered yet. The ids of the nodes concerned."""
    if node_auth_connection() is None:
        return []
    pending = []
    for node in Node.objects.filter(revoked_at__isnull=True, superlink_node_id="").only("pk"):
        _enqueue("node_superlink_register", node.pk)
        pending.append(node.pk)
    for node in Node.objects.filter(
        revoked_at__isnull=False, superlink_unregistered_at__isnull=True
    ).only("pk"):
        _enqueue("node_superlink_unregister", node.pk)
        pending.append(node.pk)
    return pending


@dataclass(frozen=True)
class SuperLinkSync:
    registered: list[int]  # site node ids whose key was (re)registered on the SuperLink
    relinked: list[int]  # site node ids whose SuperLink id was corrected
    unregistered: list[int]  # revoked site node ids whose key was removed
    refused: list[int]  # active site node ids whose key the SuperLink refuses (unregistered)


def nodes_superlink_sync() -> SuperLinkSync:
    """Make the SuperLink's node keys match the site's, now (``manage.py superlink nodes
    --sync``; after the SuperLink lost its database, or to check it): every active node's key
    registered with the id the site keeps, every revoked node's key unregistered."""
    connection = node_auth_connection()
    if connection is None:
        raise ApplicationError(
            "No SuperLink with node authentication is configured (ATELIER_SUPERLINK, "
            "ATELIER_SUPERLINK_NODE_AUTH).",
            code="superlink_not_configured",
        )
    registered, relinked, unregistered, refused = [], [], [], []
    for node in Node.objects.filter(revoked_at__isnull=True).order_by("pk"):
        found = supernode_find(node.public_key, connection)
        if found is not None and found.registered:
            if found.node_id != node.superlink_node_id:
                Node.objects.filter(pk=node.pk).update(superlink_node_id=found.node_id)
                relinked.append(node.pk)
            continue
        Node.objects.filter(pk=node.pk).update(superlink_node_id="")
        try:
            node_superlink_register(node_id=node.pk)
        except ConflictError:  # unregistered on the SuperLink by hand: the owner needs a new key
            refused.append(node.pk)
            continue
        registered.append(node.pk)
    for node in Node.objects.filter(
        revoked_at__isnull=False, superlink_unregistered_at__isnull=True
    ):
        node_superlink_unregister(node_id=node.pk)
        unregistered.append(node.pk)
    return SuperLinkSync(registered, relinked, unregistered, refused)
