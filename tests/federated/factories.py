"""Test data of the federated app that needs no database: node keys and manifests."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def openssh_public_key(kind: str = "ecdsa") -> str:
    """A fresh OpenSSH public key line, as ``ssh-keygen`` writes it (with a comment): ECDSA
    P-384 (``ecdsa``), P-256 (``ecdsa-p256``, as ``atelier node init``) or ``ed25519`` (which
    the site refuses: Flower's node authentication takes NIST ECDSA keys only)."""
    private = (
        Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else ec.generate_private_key(ec.SECP256R1() if kind == "ecdsa-p256" else ec.SECP384R1())
    )
    line = private.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return f"{line} owner@laptop"


def manifest(*, count: int, seed: int) -> dict[str, Any]:
    """A node's manifest: aggregates plus per-file entries that must never be shown."""
    return {
        "count": count,
        "manifest_hash": f"{seed:064x}",
        "resolutions": {"32x32": count},
        "files": [{"name": f"secret_holiday_{i}.png", "caption": "my house"} for i in range(2)],
        "root": "/home/owner/private-photos",
    }


def form_data(w: Any, *datasets: Any, **values: Any) -> dict[str, Any]:
    """The job form's fields for ``w``'s base model and ``datasets``; ``values`` override."""
    data: dict[str, Any] = {
        "name": "Red circles LoRA",
        "base_version": w.base.pk,
        "datasets": [t.dataset_version_id for t in datasets],
        "use": "style",
        "trigger_word": "sks",
        "rank": 2,
        "alpha": "",
        "local_steps": 5,
        "learning_rate": 0.001,
        "resolution": 32,
        "batch_size": 4,
        "rounds": 2,
        "dp": "on",
        "target_epsilon": "",
        "delta": "",
        "max_grad_norm": 0.05,
        "idempotency_key": "key-1",
        "action": "estimate",
    }
    data.update(values)
    return {k: v for k, v in data.items() if v is not None}
