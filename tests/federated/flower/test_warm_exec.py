"""ClientApps run by the node's warm executor (client.warm_exec, issue #14): SuperNodes in
Flower's ``process`` isolation, each with an executor that imported the trainer once and forks
a child per message. The ClientApp is the same: the privacy ledger is charged as the
ServerApp reports, and a node whose dataset is not in the job refuses and spends nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from federated.engine.localfed import _BIN, LocalFederation, _wait_port, free_port
from sdcore.tiny import TinyModelPaths
from tests.federated.flower.conftest import Owner, make_owners, run_config

pytestmark = pytest.mark.slow


def start_warm_nodes(fed: LocalFederation, owners: list[Owner]) -> None:
    assert fed.certs is not None
    for index, owner in enumerate(owners):
        fed.register_node(index)
        port = free_port()
        home = fed.workdir / f"warm-node-{index}" / "flwr-home"
        node = fed._spawn(
            f"warm-supernode-{index}",
            [
                str(_BIN / "flower-supernode"),
                "--root-certificates", str(fed.certs.ca_cert),
                "--auth-supernode-private-key", str(fed.node_key(index).private_key),
                "--superlink", f"127.0.0.1:{fed.port}",
                "--port", str(port),
                "--isolation", "process",
                "--node-config", owner.spec.node_config(),
            ],
            home,
        )  # fmt: skip
        _wait_port(port, node.proc, node.log)
        fed._spawn(
            f"warm-exec-{index}",
            [
                sys.executable,
                "-m",
                "client.warm_exec",
                "--runtime-api-address",
                f"127.0.0.1:{port}",
            ],
            home,
        )


@pytest.fixture(scope="module")
def warm(
    tmp_path_factory: pytest.TempPathFactory, fed_model: TinyModelPaths
) -> Iterator[tuple[LocalFederation, list[Owner]]]:
    owners = make_owners(tmp_path_factory.mktemp("warm-owners"), fed_model)
    with LocalFederation(
        [o.spec for o in owners], tmp_path_factory.mktemp("warm-fed"), start_nodes=False
    ) as fed:
        start_warm_nodes(fed, owners)
        yield fed, owners


def test_a_run_on_warm_nodes_completes_and_the_ledgers_hold_what_was_reported(
    warm: tuple[LocalFederation, list[Owner]], fed_model: TinyModelPaths, tmp_path: Path
) -> None:
    fed, owners = warm
    config = run_config(
        tmp_path / "out", fed_model, **{"num-server-rounds": 2, "local-steps": 2, "job-id": "warm"}
    )
    outcome = fed.run(config, timeout=900)
    assert outcome.ok, (outcome.details, fed.logs())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == [1, 2]
    reported = sorted(float(n["epsilon"]) for n in metrics["nodes"].values())
    spends = [o.ledger.job_spend(o.key, "warm") for o in owners]
    assert all(s is not None for s in spends)
    assert np.allclose(reported, sorted(s.epsilon for s in spends if s), rtol=1e-9)
    # Every message ran in a child forked by a warm executor, none in a fresh flwr-clientapp
    logs = fed.logs()
    forked = sum(logs[f"warm-exec-{i}"].count("ClientApp in process") for i in (0, 1))
    assert forked >= 4, logs
    assert not any("flwr-clientapp" in logs[f"warm-supernode-{i}"] for i in (0, 1))


def test_a_warm_node_whose_dataset_is_not_in_the_job_refuses_and_spends_nothing(
    warm: tuple[LocalFederation, list[Owner]], fed_model: TinyModelPaths, tmp_path: Path
) -> None:
    fed, owners = warm
    config = run_config(
        tmp_path / "out",
        fed_model,
        **{
            "num-server-rounds": 1,
            "local-steps": 2,
            "min-nodes": 1,
            "job-id": "warm-refusal",
            "dataset-manifests": owners[0].manifest,
        },
    )
    outcome = fed.run(config, timeout=900)
    assert outcome.ok, (outcome.details, fed.logs())
    (record,) = json.loads((tmp_path / "out" / "metrics.json").read_text())["rounds"]
    assert len(record["nodes"]) == 1
    assert any("dataset_not_in_job" in str(why) for why in record["refused"].values()), record
    assert owners[0].ledger.job_spend(owners[0].key, "warm-refusal") is not None
    assert owners[1].ledger.job_spend(owners[1].key, "warm-refusal") is None
