"""``atelier node register | publish | start`` against a live site (the federated API).

Register posts the node's public key and keeps the node token (0600); publish lists a dataset
(its manifest and the owner's terms, never a file name); start runs a real SuperNode against a
real SuperLink and sends heartbeats in the background. Bad input: a clear message and exit 1
(the site or the node's state says no) or 2 (bad arguments).
"""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from client.http import AtelierClient
from client.node import Heartbeat
from federated.engine.dataset import read_dataset
from federated.engine.localfed import LocalFederation, descendants, free_port
from federated.engine.superlink import supernode_register, supernodes_list
from federated.engine.synthetic import generate_synthetic_dataset
from tests.client.conftest import Result

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("restore_license_catalogue"),
]
REPO = Path(__file__).resolve().parents[2]


def wait_online(fed: LocalFederation, superlink_id: str, timeout: float = 30.0) -> bool:
    """Whether the SuperLink shows node ``superlink_id`` online within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(
            n.node_id == superlink_id and n.status == "online"
            for n in supernodes_list(fed.connection)
        ):
            return True
        time.sleep(0.3)
    return False


@pytest.fixture
def node_dir(tmp_path: Path, cli: Callable[..., Result]) -> Path:
    """A node with a key pair and one dataset (budget epsilon 10, delta 1e-5)."""
    node = tmp_path / "node"
    assert cli("node", "init", "--node-dir", str(node)).code == 0
    data = generate_synthetic_dataset(tmp_path / "photos", n_images=4, seed=5, resolution=32)
    added = cli(
        "node", "add-dataset", str(data), "--epsilon", "10", "--delta", "1e-5",
        "--resolution", "32", "--node-dir", str(node),
    )  # fmt: skip
    assert added.code == 0, added.err
    return node


def _dataset(node: Path) -> Path:
    [key] = json.loads((node / "node.json").read_text())["datasets"]
    return Path(key)


@pytest.fixture
def registered(logged_in: str, node_dir: Path, cli: Callable[..., Result]) -> Path:
    result = cli("node", "register", "--name", "studio laptop", "--node-dir", str(node_dir))
    assert result.code == 0, result.err
    return node_dir


def _publish(cli: Callable[..., Result], node: Path, *extra: str) -> Result:
    return cli(
        "node", "publish", str(_dataset(node)), "--name", "Ink portraits",
        "--description", "My own ink drawings", "--price-per-example", "3",
        "--epsilon-per-job", "2.5", "--node-dir", str(node), *extra,
    )  # fmt: skip


def test_register_posts_the_public_key_and_keeps_the_node_token_private(
    registered: Path, alice: object
) -> None:
    from federated.models import Node

    path = registered / "registration.json"
    saved = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert saved["token"].startswith("atn_") and saved["name"] == "studio laptop"
    node = Node.objects.get(pk=saved["id"])
    assert node.owner == alice and node.name == "studio laptop"
    pub = (registered / "node.key.pub").read_text().split()
    assert node.public_key == " ".join(pub[:2])


def test_register_never_prints_the_token(
    logged_in: str, node_dir: Path, cli: Callable[..., Result]
) -> None:
    result = cli("node", "register", "--name", "n1", "--node-dir", str(node_dir))
    token = json.loads((node_dir / "registration.json").read_text())["token"]
    assert result.code == 0 and token not in result.out + result.err
    assert "registered node 'n1'" in result.out


def test_register_without_login_or_key_fails_clearly(
    site: str, node_dir: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    no_login = cli("node", "register", "--name", "n", "--site", site, "--node-dir", str(node_dir))
    assert no_login.code == 1 and "Not logged in" in no_login.err
    no_key = cli("node", "register", "--name", "n", "--node-dir", str(tmp_path / "empty"))
    assert no_key.code == 1 and "atelier node init" in no_key.err


def test_registering_twice_needs_force_and_the_site_refuses_the_same_key_again(
    registered: Path, cli: Callable[..., Result]
) -> None:
    again = cli("node", "register", "--name", "n", "--node-dir", str(registered))
    assert again.code == 1 and "already registered" in again.err and "--force" in again.err
    forced = cli("node", "register", "--name", "n", "--force", "--node-dir", str(registered))
    assert forced.code == 1
    assert "A node with this public key is already registered." in forced.err


def test_publish_lists_the_manifest_and_terms_and_never_a_file_name(
    registered: Path, cli: Callable[..., Result]
) -> None:
    from federated.models import DatasetTerms

    result = _publish(
        cli, registered, "--approval", "auto", "--families", "sd15,sdxl", "--uses",
        "style,research", "--commercial", "--epsilon-lifetime", "8",
    )  # fmt: skip
    assert result.code == 0, result.err
    manifest = read_dataset(_dataset(registered)).manifest()
    terms = DatasetTerms.objects.select_related("dataset_version__dataset", "node").get()
    version = terms.dataset_version
    assert version.manifest_hash == manifest.manifest_hash and version.manifest["count"] == 4
    assert ".png" not in json.dumps(version.manifest) and "photos" not in json.dumps(
        version.manifest
    )
    assert version.dataset.name == "Ink portraits"
    assert terms.node_id == json.loads((registered / "registration.json").read_text())["id"]
    assert terms.price_per_example_round == 3 and terms.commercial_use is True
    # the node's delta (1e-5) is shared by the 3 jobs its epsilon budget allows (8 // 2.5)
    assert (terms.epsilon_per_job, terms.epsilon_lifetime) == (2.5, 8.0)
    assert terms.delta == pytest.approx(1e-5 / 3)
    assert terms.allowed_families == ["sd1", "sdxl"] and terms.approval == "auto"
    assert sorted(terms.allowed_uses) == ["research", "style"]
    recorded = json.loads((registered / "node.json").read_text())["datasets"]
    assert recorded[str(_dataset(registered))]["published"]["dataset_version_id"] == version.pk


def test_adding_a_published_dataset_again_keeps_its_listing(
    registered: Path, cli: Callable[..., Result]
) -> None:
    # Given a published dataset
    assert _publish(cli, registered).code == 0
    # When its owner adds it again with a new budget
    again = cli(
        "node",
        "add-dataset",
        str(_dataset(registered)),
        "--epsilon",
        "20",
        "--delta",
        "1e-4",
        "--node-dir",
        str(registered),
    )
    # Then the node still knows its listing (and publishing again says it is listed)
    assert again.code == 0, again.err
    recorded = json.loads((registered / "node.json").read_text())["datasets"]
    entry = recorded[str(_dataset(registered))]
    assert entry["published"]["dataset_version_id"] > 0 and entry["epsilon"] == 20


BAD_TERMS = [
    (("--price-per-example", "-1"), 2, "--price-per-example must be 0 or more"),
    (("--epsilon-lifetime", "11"), 2, "more than this node allows"),
    (("--epsilon-lifetime", "2"), 2, "more than the lifetime budget"),
    (("--delta", "1e-3"), 2, "--delta must be positive and at most"),
    (("--families", "sd9"), 2, "unknown family 'sd9'"),
    (("--approval", "sometimes"), 2, "invalid choice: 'sometimes'"),
    (("--uses", "spam"), 1, "allowed_uses: 'spam' is not one of"),  # the site says no
]


def test_publish_with_bad_terms_fails_clearly_and_lists_nothing(
    registered: Path, cli: Callable[..., Result]
) -> None:
    from federated.models import DatasetTerms

    # one node for every case (a live-site setup costs seconds); each case is independent
    for extra, code, message in BAD_TERMS:
        result = _publish(cli, registered, *extra)
        assert (result.code, message in result.err) == (code, True), (extra, result.err)
    assert not DatasetTerms.objects.exists()
    # then the same dataset with only the required terms: the site's defaults fill the rest
    assert _publish(cli, registered).code == 0
    terms = DatasetTerms.objects.get()
    assert terms.allowed_families == ["sd1", "sd2"] and len(terms.allowed_uses) == 4
    assert terms.approval == "manual" and terms.epsilon_lifetime == 10.0  # the node's budget


def test_publish_needs_a_registered_node_and_one_of_its_datasets(
    logged_in: str, node_dir: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    unregistered = _publish(cli, node_dir)
    assert unregistered.code == 1 and "atelier node register" in unregistered.err
    other = cli(
        "node", "publish", str(tmp_path), "--name", "x", "--price-per-example", "1",
        "--epsilon-per-job", "1", "--node-dir", str(node_dir),
    )  # fmt: skip
    assert other.code == 1 and "atelier node add-dataset" in other.err


def test_a_dataset_that_changed_since_add_dataset_is_not_published(
    registered: Path, cli: Callable[..., Result]
) -> None:
    (_dataset(registered) / "00000.txt").write_text("a photo of sks blue square")
    result = _publish(cli, registered)
    assert result.code == 1 and "changed since `atelier node add-dataset`" in result.err


def test_a_failing_heartbeat_is_logged_and_the_thread_keeps_beating(
    site: str, capsys: pytest.CaptureFixture[str]
) -> None:
    beat = Heartbeat(AtelierClient(site, "atn_not-a-node"), ["ab" * 32], interval=0.05)
    beat.start()
    deadline = time.monotonic() + 20
    while beat.failed < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert beat.failed >= 2 and beat.is_alive()
    beat.stop()
    beat.join(timeout=5)
    err = capsys.readouterr().err
    assert f"heartbeat to {site} failed: Invalid or revoked node token." in err


@pytest.mark.slow
def test_start_runs_the_supernode_and_heartbeats_until_it_is_stopped(
    registered: Path, tmp_path: Path
) -> None:
    from federated.models import Node

    manifest = read_dataset(_dataset(registered)).manifest().manifest_hash
    node_id = json.loads((registered / "registration.json").read_text())["id"]
    # A SuperLink with TLS and node authentication, no node yet; the node's key is registered
    # on it (the site does that when the node registers; here the operator does)
    with LocalFederation([], tmp_path / "fed") as fed:
        assert fed.certs is not None
        superlink_id = supernode_register((registered / "node.key.pub").read_text(), fed.connection)
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "client.cli", "node", "start",
                "--superlink", f"127.0.0.1:{fed.port}",
                "--root-certificates", str(fed.certs.ca_cert), "--port", str(free_port()),
                "--node-dir", str(registered), "--heartbeat-seconds", "0.5",
            ],
            cwd=REPO, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            seen: list[object] = []
            deadline = time.monotonic() + 60
            while len(set(seen)) < 2 and time.monotonic() < deadline and proc.poll() is None:
                node = Node.objects.get(pk=node_id)
                if node.last_seen_at is not None:
                    seen.append(node.last_seen_at)
                time.sleep(0.2)
            assert len(set(seen)) >= 2, "no two heartbeats"
            assert node.serving == [manifest] and node.status == "online"
            assert node.software_version == "0.1.0"
            children = descendants(proc.pid)
            cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children]
            assert any(b"flower-supernode" in c and b"node-file" in c for c in cmdlines)
            # The SuperNode verified the SuperLink's certificate and was admitted by its key
            online = wait_online(fed, superlink_id)
            assert online, [(n.node_id, n.status) for n in supernodes_list(fed.connection)]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "heartbeat to" in err and "online" in err
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
