"""Nodes: registration with a real OpenSSH key, a token shown once and kept hashed,
heartbeats (status, datasets served), revocation."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.utils import timezone

from core.errors import ApplicationError, ConflictError, NotFoundError
from federated.models import Node
from federated.services.nodes import (
    node_authenticate,
    node_heartbeat,
    node_register,
    node_revoke,
    public_key_parse,
)
from federated.services.tokens import secret_digest
from tests.federated.factories import openssh_public_key

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")


@pytest.mark.parametrize("kind", ["ecdsa", "ecdsa-p256"])
def test_register_keeps_the_key_without_comment_and_only_the_token_hash(
    make_user: Any, kind: str
) -> None:
    # Given an owner and a fresh OpenSSH public key (with a comment)
    owner = make_user("owner1")
    key = openssh_public_key(kind)
    # When the node is registered
    registered = node_register(owner=owner, name="  my   laptop ", public_key=key)
    # Then the key is stored as "<type> <base64>", the token is atn_ and only its hash is kept
    node = Node.objects.get(pk=registered.node.pk)
    assert node.public_key == " ".join(key.split()[:2])
    assert node.key_type == key.split()[0]
    assert node.name == "my laptop"
    assert registered.token.startswith("atn_")
    assert node.token_digest == secret_digest(registered.token)
    assert registered.token not in str(Node.objects.filter(pk=node.pk).values().first())
    assert node_authenticate(token=registered.token) == node


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not a key",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 rsa@host",  # RSA is not accepted
        openssh_public_key("ed25519"),  # Flower's node authentication takes only NIST ECDSA
        "ssh-ed25519 AAAA!!!notbase64",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBadKeyThatIsTooShort",
        "-----BEGIN PUBLIC KEY-----",
    ],
)
def test_register_refuses_what_is_not_an_ecdsa_openssh_key(make_user: Any, bad: str) -> None:
    owner = make_user("owner1")
    with pytest.raises(ApplicationError) as err:
        node_register(owner=owner, name="n", public_key=bad)
    assert err.value.code == "bad_public_key"
    assert Node.objects.count() == 0


def test_the_same_key_registers_once_and_never_after_it_was_revoked(make_user: Any) -> None:
    owner = make_user("owner1")
    key = openssh_public_key()
    first = node_register(owner=owner, name="a", public_key=key)
    with pytest.raises(ConflictError) as err:
        node_register(owner=owner, name="b", public_key=key)
    assert err.value.code == "duplicate_public_key"
    # Once revoked, the key is burnt (the SuperLink never registers it again): a new key is
    node_revoke(node=first.node, user=owner)
    with pytest.raises(ConflictError) as err:
        node_register(owner=owner, name="b", public_key=key)
    assert err.value.code == "revoked_public_key"
    again = node_register(owner=owner, name="b", public_key=openssh_public_key())
    assert again.node.pk != first.node.pk


def test_fingerprint_is_the_sha256_of_the_key_blob(make_user: Any) -> None:
    import base64
    import hashlib

    key = openssh_public_key("ecdsa")
    parsed = public_key_parse(key)
    assert parsed.fingerprint == hashlib.sha256(base64.b64decode(key.split()[1])).hexdigest()


def test_heartbeat_marks_online_and_records_served_datasets(make_user: Any) -> None:
    owner = make_user("owner1")
    node = node_register(owner=owner, name="n", public_key=openssh_public_key()).node
    assert node.status == "offline"
    node_heartbeat(
        node=node, datasets=["A" * 64, "a" * 64, "b" * 64], flwr_node_id="42", version="atelier 1.0"
    )
    node.refresh_from_db()
    assert node.status == "online"
    assert node.serving == ["a" * 64, "b" * 64]
    assert (node.flwr_node_id, node.software_version) == ("42", "atelier 1.0")
    # Two minutes later without a heartbeat it is offline
    later = node.last_seen_at + datetime.timedelta(seconds=121)
    assert node.status_at(later) == "offline"
    assert node.status_at(node.last_seen_at + datetime.timedelta(seconds=119)) == "online"


def test_heartbeat_refuses_a_malformed_manifest_hash(make_user: Any) -> None:
    owner = make_user("owner1")
    node = node_register(owner=owner, name="n", public_key=openssh_public_key()).node
    with pytest.raises(ApplicationError) as err:
        node_heartbeat(node=node, datasets=["../../etc/passwd"])
    assert err.value.code == "bad_manifest_hash"
    node.refresh_from_db()
    assert node.last_seen_at is None


def test_revoked_token_no_longer_authenticates_and_only_the_owner_revokes(
    make_user: Any,
) -> None:
    owner, other = make_user("owner1"), make_user("mallory")
    registered = node_register(owner=owner, name="n", public_key=openssh_public_key())
    with pytest.raises(NotFoundError):
        node_revoke(node=registered.node, user=other)
    node = node_revoke(node=registered.node, user=owner)
    assert node.status == "revoked"
    assert node.revoked_at is not None and node.revoked_at <= timezone.now()
    assert node_authenticate(token=registered.token) is None


def test_superlink_node_ids_maps_active_registered_nodes_only(make_user: Any) -> None:
    from federated.selectors import superlink_node_ids

    owner = make_user("owner1")
    a, b, c = (
        node_register(owner=owner, name=n, public_key=openssh_public_key()).node for n in "abc"
    )
    Node.objects.filter(pk=a.pk).update(superlink_node_id="18446744073709551615")  # 2**64 - 1
    Node.objects.filter(pk=b.pk).update(superlink_node_id="42")
    node_revoke(node=b, user=owner)
    # c was never registered on the SuperLink; b is revoked
    assert superlink_node_ids(node_ids=[a.pk, b.pk, c.pk]) == {a.pk: "18446744073709551615"}


def test_the_system_check_warns_of_a_superlink_without_tls_or_node_auth(
    settings: Any, tmp_path: Any
) -> None:
    from federated.checks import superlink_security_check

    settings.DEBUG = False
    settings.ATELIER_SUPERLINK = "10.0.0.5:9100"
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings.ATELIER_SUPERLINK_ROOT_CERTIFICATES = str(ca)
    settings.ATELIER_SUPERLINK_INSECURE, settings.ATELIER_SUPERLINK_NODE_AUTH = False, True
    assert superlink_security_check() == []
    settings.ATELIER_SUPERLINK_NODE_AUTH = False
    assert [m.id for m in superlink_security_check()] == ["federated.W001"]
    settings.ATELIER_SUPERLINK_INSECURE = True
    assert [m.id for m in superlink_security_check()] == ["federated.W001"]
    settings.ATELIER_SUPERLINK_INSECURE, settings.ATELIER_SUPERLINK_NODE_AUTH = False, True
    settings.ATELIER_SUPERLINK_ROOT_CERTIFICATES = str(tmp_path / "missing.crt")
    assert [m.id for m in superlink_security_check()] == ["federated.E001"]
    settings.ATELIER_SUPERLINK = ""
    assert superlink_security_check() == []
