"""TLS between SuperNodes and the SuperLink, and SuperNode authentication, on real processes.

A ``flower-superlink`` with ``--ssl-*`` and ``--enable-supernode-auth`` on loopback (its
certificate signed by the test session's CA), real ``flower-supernode`` processes:

- a node given another CA refuses the SuperLink's certificate and never comes online;
- a node whose key was never registered is refused by the SuperLink;
- nodes registered through the site (HTTP API -> Celery worker -> the SuperLink's Control API)
  train; once the site revokes one, the SuperLink drops it: its SuperNode is refused at its next
  pull, the next run trains without it, and it cannot come back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from federated.engine.localfed import FederationError, LocalFederation, NodeSpec
from federated.engine.pki import generate_ca, generate_node_key
from federated.engine.superlink import SuperLinkError, runs_list, supernodes_list
from sdcore.tiny import TinyModelPaths
from tests.federated.flower.conftest import make_owners, run_config
from tests.federated.live import (
    TEST_NODE_CONFIG,
    coordinator_settings,
    load_license_catalogue,
    wait_until,
)

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.slow

API = "/api/v1/federated"


def statuses(fed: LocalFederation) -> dict[str, str]:
    """The SuperLink's nodes: id -> registered, online, offline or unregistered."""
    return {node.node_id: node.status for node in supernodes_list(fed.connection)}


def bare_spec(folder: Path) -> NodeSpec:
    """A SuperNode that is refused before it could train: no dataset needed."""
    return NodeSpec(None, folder / "cache", folder / "ledger.db")


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    """A SuperLink with TLS and SuperNode authentication, no node started."""
    # No ClientApp runs on this module's refused nodes: Flower's executor (no warm process)
    with LocalFederation([], tmp_path_factory.mktemp("tls-link"), executor="flower") as fed:
        assert fed.tls and fed.node_auth
        yield fed


def test_the_superlink_serves_tls_only(link: LocalFederation, tmp_path: Path) -> None:
    # The Control API answers over TLS with the right CA...
    assert runs_list(link.connection) == []
    # ...and not to a client that trusts another CA
    other_ca = generate_ca(tmp_path / "other-ca")
    wrong = link.connection.__class__(
        address=link.connection.address,
        flwr_home=tmp_path / "flwr",
        insecure=False,
        root_certificates=other_ca,
        name="wrong",
    )
    with pytest.raises(SuperLinkError) as err:
        supernodes_list(wrong)
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)
    # ...nor in clear text
    try:
        plain = requests.get(f"http://{link.connection.address}/", timeout=10)
    except requests.ConnectionError:
        pass
    else:
        assert not plain.ok, plain.text[:200]


def test_a_node_given_the_wrong_ca_is_refused(link: LocalFederation, tmp_path: Path) -> None:
    # Given a node whose key is registered on the SuperLink, but which trusts another CA
    index = 10
    superlink_id = link.register_node(index)
    spec = NodeSpec(
        None,
        tmp_path / "cache",
        tmp_path / "ledger.db",
        root_certificates=generate_ca(tmp_path / "other-ca"),
    )
    # When it starts, it refuses the SuperLink's certificate and gives up
    proc = link.start_node(index, spec, wait=False, name="wrong-ca")
    code = link.wait_exit(proc)
    log = proc.log.read_text(errors="replace")
    assert code != 0, log
    assert "CERTIFICATE_VERIFY_FAILED" in log, log
    # And the SuperLink never saw it online
    assert statuses(link)[superlink_id] == "registered"
    # While the same node with the federation's CA is admitted (the CA made the difference)
    honest = link.start_node(index, bare_spec(tmp_path / "honest"), name="right-ca")
    wait_until(
        lambda: statuses(link)[superlink_id] == "online",
        timeout=30,
        what="the node with the right CA is online",
        log=lambda: honest.log.read_text(),
    )


def test_a_node_with_an_unregistered_key_is_refused(link: LocalFederation, tmp_path: Path) -> None:
    # Given a node with a key pair the site never registered on the SuperLink
    key = generate_node_key(tmp_path / "stranger.key")
    spec = NodeSpec(None, tmp_path / "cache", tmp_path / "ledger.db", private_key=key.private_key)
    before = statuses(link)
    # When it starts with the right CA, the SuperLink refuses to activate it
    proc = link.start_node(20, spec, wait=False, name="stranger")
    code = link.wait_exit(proc)
    log = proc.log.read_text(errors="replace")
    assert code != 0, log
    assert "Failed to activate SuperNode" in log, log
    # And it is nowhere among the SuperLink's nodes
    assert statuses(link) == before
    assert "No SuperNode found with the given public key" in link.logs()["superlink"]


def test_a_node_cannot_connect_without_tls(link: LocalFederation, tmp_path: Path) -> None:
    # A SuperNode in clear text (and so without node authentication) never connects
    index = 30
    link.register_node(index)
    fed_insecure = LocalFederation([], link.workdir, tls=False, executor="flower")
    fed_insecure.port, fed_insecure.certs = link.port, link.certs
    proc = fed_insecure.start_node(index, bare_spec(tmp_path), wait=False, name="plain")
    try:
        try:  # it gives up or keeps retrying: either way it never gets in
            link.wait_exit(proc, timeout=10)
        except FederationError:
            pass
        assert "SuperNode ID" not in proc.log.read_text(errors="replace")
        assert statuses(link)[link.node_ids[index]] == "registered"
    finally:
        fed_insecure.stop()


# --- registered and revoked through the site -----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_nodes_registered_on_the_site_train_and_a_revoked_node_is_refused_from_the_next_run(
    tmp_path: Path,
    fed_model: TinyModelPaths,
    live_server: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    fed: Any,
    token_for: Any,
) -> None:
    from federated.models import Node

    load_license_catalogue()
    owners = make_owners(tmp_path / "owners", fed_model)
    # Given a SuperLink with TLS and node auth whose node keys the site keeps
    with LocalFederation(
        [o.spec for o in owners],
        tmp_path / "fed",
        register_nodes=False,
        start_nodes=False,
        node_config=TEST_NODE_CONFIG,
    ) as link:
        coordinator_settings(
            monkeypatch,
            settings,
            tmp_path,
            superlink=f"127.0.0.1:{link.port}",
            site_url=live_server.url,
            node_auth=True,
        )
        request.getfixturevalue("celery_worker_process")
        http = requests.Session()
        # When two data owners register their nodes' public keys on the site (HTTP API)
        site_nodes = []
        for index in range(2):
            token = token_for(fed.user(f"owner{index}"))
            answer = http.post(
                f"{live_server.url}{API}/nodes",
                timeout=30,
                json={"name": f"node {index}", "public_key": link.node_key(index).openssh},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 201, answer.text
            site_nodes.append((answer.json()["id"], token))
        # Then the site's worker registers each key on the SuperLink and keeps its node id
        ids = [
            wait_until(
                lambda pk=pk: Node.objects.get(pk=pk).superlink_node_id,
                timeout=60,
                what=f"node {pk} registered on the SuperLink",
            )
            for pk, _ in site_nodes
        ]
        assert set(statuses(link)) == set(ids)
        # And with the federation's CA and those keys, both nodes get in and train
        link.start_nodes()
        wait_until(
            lambda: all(statuses(link)[i] == "online" for i in ids),
            timeout=60,
            what="both nodes online",
        )
        first = link.run(
            run_config(
                tmp_path / "out-1", fed_model, **{"num-server-rounds": 1, "dp-planned-rounds": 2}
            ),
            timeout=400,
        )
        assert first.ok, (first.details, link.logs()["superlink"][-3000:])
        trained = _round_nodes(tmp_path / "out-1")
        assert trained == [set(ids)]

        # When owner 1 revokes their node on the site (HTTP API)
        pk, token = site_nodes[1]
        answer = http.post(
            f"{live_server.url}{API}/nodes/{pk}/revoke",
            timeout=30,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200, answer.text
        # Then the site unregisters its key on the SuperLink, which ends the node's next pull
        wait_until(
            lambda: Node.objects.get(pk=pk).superlink_unregistered_at,
            timeout=60,
            what="the revoked node's key unregistered",
        )
        assert statuses(link)[ids[1]] == "unregistered"
        link.wait_exit(link.node_procs[1], timeout=60)
        # And the next run trains on the remaining node only
        second = link.run(
            run_config(
                tmp_path / "out-2",
                fed_model,
                **{
                    "num-server-rounds": 1,
                    "dp-planned-rounds": 2,
                    "min-nodes": 1,
                    "wait-for-nodes": 10.0,
                },
            ),
            timeout=400,
        )
        assert second.ok, (second.details, link.logs()["superlink"][-3000:])
        assert _round_nodes(tmp_path / "out-2") == [{ids[0]}]
        # And the revoked node cannot come back with its key
        again = link.start_node(1, owners[1].spec, wait=False, name="revoked-again")
        assert link.wait_exit(again) != 0
        assert "Failed to activate SuperNode" in again.log.read_text(errors="replace")
        assert statuses(link)[ids[1]] == "unregistered"
        assert Node.objects.get(pk=site_nodes[0][0]).revoked_at is None


def _round_nodes(out: Path) -> list[set[str]]:
    """Per round of a run, the SuperLink node ids whose replies the ServerApp took."""
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    return [set(record["nodes"]) for record in metrics["rounds"]]


# --- the site's node-key services against the real SuperLink --------------------------------


@pytest.fixture
def site_link(link: LocalFederation, settings: Any, tmp_path: Path, fed: Any) -> LocalFederation:
    """The site's settings pointing at ``link`` with node authentication on (no worker: the
    services are called directly)."""
    assert link.certs is not None
    settings.ATELIER_SUPERLINK = f"127.0.0.1:{link.port}"
    settings.ATELIER_SUPERLINK_INSECURE = False
    settings.ATELIER_SUPERLINK_ROOT_CERTIFICATES = str(link.certs.ca_cert)
    settings.ATELIER_SUPERLINK_NODE_AUTH = True
    settings.ATELIER_FLWR_HOME = tmp_path / "flwr-home"
    return link


@pytest.mark.django_db
def test_registering_a_key_whose_answer_was_lost_finds_it_and_revoking_in_a_race_removes_it(
    site_link: LocalFederation, fed: Any, tmp_path: Path
) -> None:
    from federated.engine.superlink import supernode_find, supernode_register
    from federated.models import Node
    from federated.services.nodes import (
        node_register,
        node_revoke,
        node_superlink_register,
        node_superlink_unregister,
    )

    owner = fed.user("owner-lost")
    key = generate_node_key(tmp_path / "lost.key").openssh
    node = node_register(owner=owner, name="lost answer", public_key=key).node
    # The SuperLink registered the key, but the site never heard back (a lost answer)
    superlink_id = supernode_register(key, site_link.connection)
    # Registering again finds the key on the SuperLink and keeps its id (no second node)
    assert node_superlink_register(node_id=node.pk).superlink_node_id == superlink_id
    assert node_superlink_register(node_id=node.pk).superlink_node_id == superlink_id
    # A node revoked before the site stored its SuperLink id: the key is still found and
    # removed (the register task may have reached the SuperLink first)
    other_key = generate_node_key(tmp_path / "race.key").openssh
    raced = node_register(owner=owner, name="race", public_key=other_key).node
    raced_id = supernode_register(other_key, site_link.connection)
    node_revoke(node=raced, user=owner)
    assert Node.objects.get(pk=raced.pk).superlink_node_id == ""
    done = node_superlink_unregister(node_id=raced.pk)
    assert done.superlink_unregistered_at is not None
    found = supernode_find(other_key, site_link.connection)
    assert found is not None and (found.node_id, found.registered) == (raced_id, False)
    # And registering a revoked node does nothing
    assert node_superlink_register(node_id=raced.pk).superlink_node_id == ""
