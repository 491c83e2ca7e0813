"""What the coordinator's tests share: data owners' SuperNodes on loopback with generated
datasets, those datasets listed on the site, the site's coordinator settings for the test
process and its Celery worker, and waiting for something to happen.

Tiny settings (those of the federation tests: rank 1, lr 0.1, clip 0.05, resolution 32), so
that a run takes well under a minute.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from federated.engine.dataset import read_dataset
from federated.engine.ledger import PrivacyLedger
from federated.engine.localfed import CA_DIR_ENV, LocalFederation, NodeSpec
from federated.engine.pki import CA_CERT
from federated.engine.synthetic import generate_synthetic_dataset
from tests.support import load_license_catalogue as load_license_catalogue  # re-exported

RESOLUTION = 32
IMAGES = 16
PRICE_PER_EXAMPLE_ROUND = 2
# Node settings of the tests' federations (``LocalFederation(node_config=...)``): the release
# check draws one sample, not eight (15 s a node per run on the tiny model, quiet machine).
# Every run still asks every node and records its verdict; what the check catches is
# tests/federated/flower/test_release_check.py's, with the owners' own settings.
TEST_NODE_CONFIG: dict[str, object] = {"release-samples": 1}
T = TypeVar("T")


@dataclass(frozen=True)
class OwnerData:
    """One data owner's machine: a SuperNode's folders and its dataset's manifest."""

    spec: NodeSpec
    manifest: dict[str, Any]

    @property
    def manifest_hash(self) -> str:
        return str(self.manifest["manifest_hash"])

    @property
    def registration(self) -> Path:
        """The node's ``registration.json`` (its site token), in its node-config."""
        return Path(self.spec.extra["registration-file"])

    def register(self, token: str) -> None:
        """Keep the node's token as ``atelier node register`` does (mode 0600)."""
        from client.config import write_private_json

        write_private_json(self.registration, {"site": "", "id": 0, "token": token})


def owners_data(
    root: Path, *, base_model: Path | None, seeds: tuple[int, ...] = (11, 12)
) -> list[OwnerData]:
    """Generated datasets (16 images each), a privacy budget in each node's ledger, and the
    manifest each owner lists. ``base_model`` None: the nodes fetch it from the site."""
    owners = []
    for index, seed in enumerate(seeds):
        folder = root / f"owner-{index}"
        data = generate_synthetic_dataset(
            folder / "data", n_images=IMAGES, seed=seed, resolution=RESOLUTION
        )
        ledger = folder / "ledger.db"
        PrivacyLedger(ledger).set_budget(str(data.resolve()), epsilon=1e6, delta=0.5)
        manifest = read_dataset(data).manifest()
        owners.append(
            OwnerData(
                spec=NodeSpec(
                    data,
                    folder / "cache",
                    ledger,
                    base_model,
                    extra={"registration-file": str(folder / "registration.json")},
                ),
                manifest={**manifest.to_dict(), "manifest_hash": manifest.manifest_hash},
            )
        )
    return owners


def federation_of(owners: list[OwnerData], workdir: Path) -> Iterator[LocalFederation]:
    """A SuperLink and the owners' SuperNodes, for a module-scoped fixture to yield from."""
    with LocalFederation([o.spec for o in owners], workdir, node_config=TEST_NODE_CONFIG) as fed:
        yield fed


def list_datasets(fed: Any, owners: list[OwnerData]) -> list[Any]:
    """Each owner (a new user) registers a node and lists its dataset: the terms, in order."""
    from federated.services.datasets import federated_dataset_create

    listed = []
    for index, owner in enumerate(owners):
        user = fed.user(f"owner{index}")
        registered = fed.node(user, name=f"node {index}")
        owner.register(registered.token)
        node = registered.node
        listed.append(
            federated_dataset_create(
                owner=user,
                node_id=node.pk,
                name=f"Shapes of owner {index}",
                manifest=owner.manifest,
                description="Generated shapes.",
                terms={
                    "price_per_example_round": PRICE_PER_EXAMPLE_ROUND,
                    "epsilon_per_job": 8.0,
                    "epsilon_lifetime": 100.0,
                },
            )
        )
    return listed


def tiny_job(**overrides: Any) -> dict[str, Any]:
    """The job settings of the tests (JobSpec fields)."""
    return {
        "name": "Shapes LoRA",
        "use": "style",
        "trigger_word": "sks",
        "rounds": 1,
        "local_steps": 4,
        "batch_size": 16,
        "learning_rate": 0.1,
        "rank": 1,
        "alpha": 1.0,
        "resolution": RESOLUTION,
        "max_grad_norm": 0.05,
        "target_epsilon": 8.0,
        **overrides,
    }


def coordinator_settings(
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    tmp_path: Path,
    *,
    superlink: str,
    site_url: str,
    poll_seconds: float = 1.0,
    insecure: bool = False,
    node_auth: bool = False,
) -> None:
    """The coordinator's settings, for this process (``settings``) and for the Celery worker
    started afterwards (its environment).

    TLS to the SuperLink with the test session's CA (every ``LocalFederation`` of the session
    has a certificate it signed) unless ``insecure``; ``node_auth``: the site registers and
    unregisters node keys on the SuperLink (otherwise ``LocalFederation`` registers its own
    nodes' keys, as an operator would)."""
    ca_dir = os.environ.get(CA_DIR_ENV)
    values: dict[str, Any] = {
        "ATELIER_SUPERLINK": superlink,
        "ATELIER_SUPERLINK_INSECURE": insecure,
        "ATELIER_SUPERLINK_ROOT_CERTIFICATES": ""
        if insecure or not ca_dir
        else str(Path(ca_dir) / CA_CERT),
        "ATELIER_SUPERLINK_NODE_AUTH": node_auth,
        "ATELIER_FLWR_HOME": tmp_path / "flwr-home",
        "ATELIER_FEDERATION_DIR": tmp_path / "federation",
        "ATELIER_SITE_URL": site_url,
        "ATELIER_JOB_POLL_SECONDS": poll_seconds,
    }
    for key, value in values.items():
        setattr(settings, key, value)
        monkeypatch.setenv(
            key,
            {True: "1", False: "0"}.get(value, str(value))
            if isinstance(value, bool)
            else str(value),
        )


# A wait ends on its event, or at once when a process it depends on is gone; its time bound
# is only a last resort against a hang, never under this (a busy 2-core machine is slow).
LAST_RESORT_S = 300.0


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    log: Callable[[], str] | None = None,
    alive: Callable[[], str | None] | None = None,
) -> T:
    """Poll ``check`` every 0.3 s until it returns something truthy (the event waited on).

    ``alive()`` says why the event can no longer come (a process it needs exited), or None:
    the wait fails at once then. ``timeout`` (at least LAST_RESORT_S) only bounds a hang.
    """
    bound = max(timeout, LAST_RESORT_S)
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        gone = alive() if alive is not None else None
        if gone:
            pytest.fail(f"{gone}, waiting for {what}" + (f"\n{log()}" if log else ""))
        time.sleep(0.3)
    pytest.fail(f"not within {bound:g} s: {what}" + (f"\n{log()}" if log else ""))


def process_alive(proc: Any, name: str) -> Callable[[], str | None]:
    """For ``wait_until(alive=...)``: why the wait must end if ``proc`` has exited."""
    return lambda: None if proc.poll() is None else f"{name} exited ({proc.returncode})"
