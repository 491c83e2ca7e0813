"""Data owners' nodes: registration (public key + a site token shown once), heartbeats,
revocation."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import AccessDeniedError, ApplicationError, ConflictError, NotFoundError
from federated.models import Node
from federated.services.tokens import NODE_TOKEN_PREFIX, secret_digest, secret_issue

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
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
    """An OpenSSH ECDSA or ed25519 public key line, checked by parsing the key itself."""
    parts = (text or "").strip().split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise ApplicationError(
            "The public key must be an OpenSSH ECDSA or ed25519 public key line "
            f"({', '.join(KEY_TYPES)} AAAA...).",
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
    if not isinstance(key, EllipticCurvePublicKey | Ed25519PublicKey):
        raise ApplicationError("Only ECDSA and ed25519 keys are accepted.",
                               code="bad_public_key")
    return PublicKey(f"{key_type} {body}", key_type, hashlib.sha256(blob).hexdigest())


def _clean_name(name: str) -> str:
    cleaned = " ".join((name or "").split())[:100]
    if not cleaned:
        raise ApplicationError("A node needs a name.", code="name_required")
    return cleaned


@transaction.atomic
def node_register(*, owner: AbstractBaseUser, name: str, public_key: str) -> RegisteredNode:
    """Register a node for ``owner``; the returned token is the only copy of the secret."""
    key = public_key_parse(public_key)
    if Node.objects.filter(key_fingerprint=key.fingerprint, revoked_at__isnull=True).exists():
        raise ConflictError("A node with this public key is already registered.",
                            code="duplicate_public_key")
    token, digest = secret_issue(NODE_TOKEN_PREFIX)
    try:
        with transaction.atomic():
            node = Node.objects.create(
                owner=owner, name=_clean_name(name), public_key=key.openssh,
                key_type=key.key_type, key_fingerprint=key.fingerprint,
                token_prefix=token[:12], token_digest=digest,
            )
    except IntegrityError as exc:  # a concurrent registration of the same key
        raise ConflictError("A node with this public key is already registered.",
                            code="duplicate_public_key") from exc
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
                code="bad_manifest_hash", details={"value": str(value)[:80]},
            )
        if digest not in served:
            served.append(digest)
    if len(served) > MAX_SERVED:
        raise ApplicationError(f"A node serves at most {MAX_SERVED} datasets.",
                               code="too_many_datasets")
    node.serving = served
    node.last_seen_at = timezone.now()
    node.flwr_node_id = str(flwr_node_id or node.flwr_node_id)[:40]
    node.software_version = str(version or "")[:60]
    Node.objects.filter(pk=node.pk).update(
        serving=node.serving, last_seen_at=node.last_seen_at, flwr_node_id=node.flwr_node_id,
        software_version=node.software_version,
    )
    return node


@transaction.atomic
def node_revoke(*, node: Node, user: AbstractBaseUser) -> Node:
    """Revoke the node's token (owner or staff). Its datasets cannot join new jobs."""
    if not (user.pk == node.owner_id or user.is_staff):
        raise NotFoundError("No such node.")
    node = Node.objects.select_for_update().get(pk=node.pk)
    if node.revoked_at is None:
        node.revoked_at = timezone.now()
        node.save(update_fields=["revoked_at"])
    return node
