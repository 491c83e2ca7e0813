"""federated.engine.superlink (the Control API client) against a real ``flower-superlink``
on loopback, TLS (no Django).

One SuperLink for the module and no SuperNodes: a run that must stay ``running`` asks for more
nodes than there are. Completed runs (traffic, compute time) are in test_coordinator.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federated.engine import superlink
from federated.engine.localfed import LocalFederation, free_port
from federated.engine.pki import generate_node_key
from federated.engine.superlink import (
    APP_DIR,
    Connection,
    InvalidRunConfig,
    RunNotFound,
    RunStatus,
    SuperLinkUnavailable,
    SuperNodeKeyInUse,
    run_log,
    run_start,
    run_status,
    run_stop,
    runs_list,
    supernode_find,
    supernode_register,
    supernode_unregister,
    supernodes_list,
)
from sdcore.tiny import TinyModelPaths, save_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    return save_tiny_model(tmp_path_factory.mktemp("link-model"), seed=0)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    with LocalFederation([], tmp_path_factory.mktemp("link")) as fed:
        yield fed


@pytest.fixture(scope="module")
def connection(federation: LocalFederation, tmp_path_factory: pytest.TempPathFactory) -> Connection:
    """The site's own connection: its own FLWR_HOME and connection name, TLS with the
    federation's CA."""
    assert federation.certs is not None
    return Connection(
        address=f"127.0.0.1:{federation.port}",
        flwr_home=tmp_path_factory.mktemp("flwr"),
        root_certificates=federation.certs.ca_cert,
    )


@pytest.fixture(scope="module")
def runs(
    connection: Connection, model: TinyModelPaths, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Two runs started together (their ServerApps boot side by side, which saves time):

    ``waiting`` asks for 5 nodes where there are none, so it stays ``running`` training nothing;
    ``failing`` lacks the base model the ServerApp needs.
    """
    out = tmp_path_factory.mktemp("runs")
    return {
        "waiting": run_start(
            APP_DIR,
            connection,
            {
                "out-dir": str(out / "waiting"),
                "base-model-path": str(model.diffusers_dir),
                "min-nodes": 5,
                "wait-for-nodes": 120.0,
            },
        ),
        "failing": run_start(APP_DIR, connection, {"out-dir": str(out / "failing")}),
    }


def wait_for(
    run_id: str, connection: Connection, done: object, timeout: float = 60.0
) -> list[RunStatus]:
    """Poll until ``done(status)``; every status seen, in order."""
    seen: list[RunStatus] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(run_status(run_id, connection))
        if done(seen[-1]):  # type: ignore[operator]
            return seen
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} never got there: {[s.status for s in seen]}")


def test_a_run_goes_through_starting_to_running_and_stops_when_asked(
    connection: Connection, runs: dict[str, str]
) -> None:
    # Given a run that waits for nodes
    run_id = runs["waiting"]
    assert run_id.isdigit()
    seen = wait_for(run_id, connection, lambda s: s.status == "running")
    # Then it went forward only: pending/starting before running
    order = ["pending", "starting", "running"]
    assert [order.index(s.status) for s in seen] == sorted(order.index(s.status) for s in seen)
    assert not seen[-1].finished and seen[-1].pending_at is not None
    # When it is stopped
    assert run_stop(run_id, connection) is True
    final = wait_for(run_id, connection, lambda s: s.finished)[-1]
    # Then it ends "stopped", and stopping it again says it had already finished
    assert final.status == "finished:stopped" and final.stopped and not final.completed
    assert final.elapsed_seconds > 0 and final.finished_at is not None
    assert run_stop(run_id, connection) is False
    assert run_id in {run.run_id for run in runs_list(connection)}


def test_a_failing_server_app_ends_failed_with_its_exception_in_the_details_and_log(
    connection: Connection, runs: dict[str, str]
) -> None:
    final = wait_for(runs["failing"], connection, lambda s: s.finished)[-1]
    assert final.failed and final.status == "finished:failed"
    assert "base-model-path" in final.details
    log = run_log(runs["failing"], connection, max_chars=3000)
    assert "ConfigError" in log and len(log) <= 3000


def test_the_run_config_holding_tokens_is_not_written_to_disk(
    connection: Connection, runs: dict[str, str]
) -> None:
    # Run configs carry bearer tokens: they travel in the request only; config.toml (the
    # connection, for an operator's own `flwr ls`) is the only file
    leftovers = [p.name for p in connection.flwr_home.iterdir() if p.suffix == ".toml"]
    assert leftovers == ["config.toml"]
    assert 'default = "atelier"' in (connection.flwr_home / "config.toml").read_text()


def test_unknown_run_ids_are_run_not_found(connection: Connection) -> None:
    with pytest.raises(RunNotFound):
        run_status("12345", connection)
    with pytest.raises(RunNotFound):
        run_stop("12345", connection)
    with pytest.raises(RunNotFound):
        run_log("12345", connection)


def test_run_ids_that_are_not_flower_run_ids_are_run_not_found(connection: Connection) -> None:
    for bad in ("", "abc", "-1", "1.5", str(2**64), "1; ls"):
        with pytest.raises(RunNotFound):
            run_status(bad, connection)
        with pytest.raises(RunNotFound):
            run_stop(bad, connection)


def test_polls_reuse_one_kept_connection_and_spawn_no_process(
    connection: Connection, runs: dict[str, str]
) -> None:
    import resource

    superlink.control_clients_close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(10):
        assert run_status(runs["failing"], connection).run_id == runs["failing"]
    # One client for this SuperLink in this process, holding one TCP connection
    mine = [key for key in superlink._clients if key[1] == connection.address]
    assert len(mine) == 1
    pool = superlink._clients[mine[0]]._client._transport._pool  # type: ignore[attr-defined]
    assert len(pool.connections) == 1
    # No CLI: no child process ran meanwhile
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert (after.ru_utime, after.ru_stime) == (children.ru_utime, children.ru_stime)


def test_a_run_config_key_the_app_does_not_declare_is_refused(
    connection: Connection, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRunConfig):
        run_start(APP_DIR, connection, {"out-dir": str(tmp_path), "no-such-key": 1})


def test_a_superlink_that_is_down_raises_superlink_unavailable(tmp_path: Path) -> None:
    down = Connection(address=f"127.0.0.1:{free_port()}", flwr_home=tmp_path / "flwr")
    with pytest.raises(SuperLinkUnavailable):
        run_start(APP_DIR, down, {"out-dir": str(tmp_path)})
    with pytest.raises(SuperLinkUnavailable):
        run_status("1", down)
    with pytest.raises(SuperLinkUnavailable):
        runs_list(down)


def test_node_keys_register_once_unregister_once_and_never_come_back(
    connection: Connection, tmp_path: Path
) -> None:
    key = generate_node_key(tmp_path / "node.key").openssh
    node_id = supernode_register(key, connection, name="site node 1")
    assert node_id.isdigit() and 0 < int(node_id) < 2**64
    # The same key again: refused, and found by its key
    with pytest.raises(SuperNodeKeyInUse):
        supernode_register(key, connection)
    found = supernode_find(key, connection)
    assert found is not None and (found.node_id, found.status) == (node_id, "registered")
    # Unregistered once; a second time is not an error (already gone)
    assert supernode_unregister(node_id, connection) is True
    assert supernode_unregister(node_id, connection) is False
    found = supernode_find(key, connection)
    assert found is not None and not found.registered
    # The SuperLink never registers that key again
    with pytest.raises(SuperNodeKeyInUse):
        supernode_register(key, connection)
    assert supernode_find(generate_node_key(tmp_path / "other.key").openssh, connection) is None


def test_node_key_calls_to_a_superlink_that_is_down_raise_superlink_unavailable(
    tmp_path: Path,
) -> None:
    down = Connection(address=f"127.0.0.1:{free_port()}", flwr_home=tmp_path / "flwr")
    with pytest.raises(SuperLinkUnavailable):
        supernode_register(generate_node_key(tmp_path / "node.key").openssh, down)
    with pytest.raises(SuperLinkUnavailable):
        supernodes_list(down)
