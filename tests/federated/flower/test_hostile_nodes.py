"""A hostile data owner in a job, on real processes: a SuperLink (TLS, node authentication),
three SuperNodes, the ServerApp, the site over HTTP (``live_server``) and its coordinator.

Three owners list a dataset each and a trainer's job trains on the three. Owner 2's node is
hostile: its ClientApp process runs with a ``sitecustomize`` shim on its ``PYTHONPATH`` (no
test hook in the product) that, every round,

- replies with a poisoned update that names owner 0's dataset (to take owner 0's pay and
  poison the model): the ServerApp binds the reply to its sender as the SuperLink knows it
  (``src_node_id``, mapped to the site's node by the job's credentials file), rejects it, leaves
  it out of the average, and the site records the rejection;
- posts progress reports for the job with every value of the run config it can read, and
  with its own node token: every one is refused (401).

The honest owners are paid exactly what their nodes trained, the hostile owner nothing, and
the published LoRA is the average of the honest updates only: the same arrays as a run of the
same job config (same job id, so the same seeds) without the hostile node. No secret is in the
run config the SuperLink keeps in its state database.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest

from federated.engine.flower.state import load_state
from federated.engine.ledger import PrivacyLedger
from federated.engine.localfed import LocalFederation, NodeSpec
from federated.models import FederatedJob, JobDataset, JobEvent, JobRound
from sdcore.tiny import TINY_SINGLE_FILE_NAME
from tests.conftest import _tiny_model
from tests.federated.live import (
    IMAGES,
    PRICE_PER_EXAMPLE_ROUND,
    TEST_NODE_CONFIG,
    OwnerData,
    coordinator_settings,
    load_license_catalogue,
    owners_data,
    tiny_job,
)

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fast_passwords")]
HOSTILE = 2
CREDITS = 10_000
TOKEN_LIKE = re.compile(rb"at[jpn]_[A-Za-z0-9_-]{20,}")

# The hostile owner's patch of their own ClientApp (their machine, their code): imported by
# every Python process started with this folder on PYTHONPATH.
SHIM = '''
import os

if os.environ.get("ATELIER_HOSTILE_CLAIM"):
    import dataclasses
    import json
    import urllib.error
    import urllib.request
    from collections import OrderedDict

    import federated.engine.flower.task as _task

    _honest = _task.run_node_round

    def _post_progress(run_config, node_config):
        """Report a round 1 that pays only the dataset we claim, with each secret we hold."""
        claim = os.environ["ATELIER_HOSTILE_CLAIM"]
        held = {f"run-config:{k}": str(v) for k, v in run_config.items()}
        registration = str(node_config.get("registration-file", ""))
        if registration:
            with open(registration, encoding="utf-8") as handle:
                held["node-token"] = json.load(handle)["token"]
        body = json.dumps({
            "job-id": run_config.get("job-id"), "status": "running", "round": 1,
            "nodes": {"1": {"num-examples": 16.0, "epsilon": 0.1, "train-loss": 0.1}},
            "node-datasets": {"1": claim}, "num-examples": 16, "train-loss": 0.1,
        }).encode()
        answers = []
        for source, secret in held.items():
            request = urllib.request.Request(
                str(run_config.get("progress-url")), data=body, method="POST",
                headers={"Authorization": f"Bearer {secret}",
                         "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    status = response.status
            except urllib.error.HTTPError as err:
                status = err.code
            except OSError as err:
                status = repr(err)
            answers.append({"source": source, "status": status})
        with open(os.environ["ATELIER_HOSTILE_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps(answers) + "\\n")

    def run_node_round(**kwargs):
        reply = _honest(**kwargs)
        _post_progress(kwargs["run_config"], kwargs["node_config"])
        poisoned = OrderedDict((k, v * 100.0 + 1.0) for k, v in reply.arrays.items())
        return dataclasses.replace(
            reply, arrays=poisoned, manifest_hash=os.environ["ATELIER_HOSTILE_CLAIM"])

    _task.run_node_round = run_node_round
'''


def _start_node(link: LocalFederation, index: int, spec: NodeSpec, env: dict[str, str]) -> None:
    """Start SuperNode ``index`` (its key registered by the site already) with ``env`` added
    to its environment, which its ClientApp processes inherit."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        link.node_procs.append(link.start_node(index, spec))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _drive(job: FederatedJob, timeout: float = 900.0) -> None:
    """The coordinator's chain for one job, run here step by step (what its Celery tasks do)."""
    from federated import coordinator

    deadline = time.monotonic() + timeout
    step = coordinator.job_start(job_id=job.pk)
    while not step.done:
        assert time.monotonic() < deadline, "the job did not finish in time"
        time.sleep(min(step.countdown, 2.0))
        step = getattr(coordinator, str(step.task))(
            job_id=job.pk, lease=step.lease, attempt=step.attempt
        )


@pytest.fixture(scope="module")
def owners(tmp_path_factory: pytest.TempPathFactory) -> list[OwnerData]:
    """Three owners' machines; none holds the base model (each fetches it from the site)."""
    return owners_data(tmp_path_factory.mktemp("owners"), base_model=None, seeds=(11, 12, 13))


@pytest.fixture
def hostile_run(
    request: pytest.FixtureRequest,
    live_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    tmp_path: Path,
    fed: Any,
    owners: list[OwnerData],
) -> Iterator[dict[str, Any]]:
    from federated.services.datasets import federated_dataset_create
    from federated.services.nodes import node_register, node_superlink_register

    load_license_catalogue()
    request.addfinalizer(load_license_catalogue)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM, encoding="utf-8")
    attack_log = tmp_path / "hostile-progress.jsonl"
    with (
        LocalFederation(
            [o.spec for o in owners],
            tmp_path / "fed",
            register_nodes=False,
            start_nodes=False,
            node_config=TEST_NODE_CONFIG,
        ) as link,
        mock.patch("federated.services.jobs._enqueue"),  # the test drives the coordinator
        mock.patch("federated.services.nodes._enqueue"),  # and registers keys itself
    ):
        coordinator_settings(
            monkeypatch,
            settings,
            tmp_path,
            superlink=f"127.0.0.1:{link.port}",
            site_url=live_server.url,
            node_auth=True,
        )
        # Each owner registers their node's key on the site, which registers it on the
        # SuperLink (the service its Celery task runs) and keeps the SuperLink's node id,
        # then lists their dataset served by that node
        terms, nodes = [], []
        for index, owner in enumerate(owners):
            user = fed.user(f"owner{index}")
            registered = node_register(
                owner=user, name=f"node {index}", public_key=link.node_key(index).openssh
            )
            node = node_superlink_register(node_id=registered.node.pk)
            assert node.superlink_node_id
            owner.register(registered.token)
            nodes.append(node)
            terms.append(
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
        for index, owner in enumerate(owners):
            env = (
                {}
                if index != HOSTILE
                else {
                    "PYTHONPATH": os.pathsep.join(
                        filter(None, [str(shim), os.environ.get("PYTHONPATH")])
                    ),
                    "ATELIER_HOSTILE_CLAIM": owners[0].manifest_hash,
                    "ATELIER_HOSTILE_LOG": str(attack_log),
                }
            )
            _start_node(link, index, owner.spec, env)
        # A trainer's job on the three datasets; two nodes are enough for a round
        trainer = fed.user("trainer", credits=CREDITS)
        base = fed.base_version(fed.user("creator"))
        job = fed.launch(trainer, fed.spec(base, terms, **tiny_job(rounds=1, min_nodes=2)))
        _drive(job)
        yield {
            "job": FederatedJob.objects.get(pk=job.pk),
            "link": link,
            "nodes": nodes,
            "terms": terms,
            "attack_log": attack_log,
            "trainer": trainer,
            "credentials": fed.credentials(job),
        }


def _comparison_run(
    job: FederatedJob, owners: list[OwnerData], base_model: Path, workdir: Path
) -> Path:
    """The same job config (same job id: the same seeds) on fresh copies of the two honest
    owners' machines (their datasets, a new cache and ledger), without the hostile node and
    without the site (no progress, the base model on disk): its out-dir."""
    from federated.services.jobs import _run_config

    specs = []
    for index in (0, 1):
        data = owners[index].spec.dataset_path
        assert data is not None
        ledger = workdir / f"owner-{index}" / "ledger.db"
        PrivacyLedger(ledger).set_budget(str(data.resolve()), epsilon=1e6, delta=0.5)
        specs.append(NodeSpec(data, workdir / f"owner-{index}" / "cache", ledger, base_model))
    out = workdir / "out"
    config = {
        **_run_config(job),
        "out-dir": str(out),
        "progress-url": "",
        "base-model-url": "",
        "base-model-path": str(base_model),
        "server-cache-dir": str(workdir / "server-cache"),
    }
    with LocalFederation(specs, workdir / "fed", node_config=TEST_NODE_CONFIG) as link:
        outcome = link.run(config, timeout=600)
    assert outcome.ok, (outcome.details, link.logs()["superlink"][-3000:])
    return out


@pytest.mark.django_db(transaction=True)
def test_a_node_claiming_another_owners_dataset_is_rejected_and_paid_nothing(
    hostile_run: dict[str, Any],
    owners: list[OwnerData],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    job, nodes, terms = hostile_run["job"], hostile_run["nodes"], hostile_run["terms"]
    hostile_id = nodes[HOSTILE].superlink_node_id
    honest_ids = {nodes[0].superlink_node_id, nodes[1].superlink_node_id}
    # The job completes on the two honest nodes
    assert job.state == "completed", job.failure_reason
    [record] = JobRound.objects.filter(job=job)
    assert set(record.nodes) == honest_ids
    assert record.node_datasets == {
        nodes[i].superlink_node_id: terms[i].dataset_version.manifest_hash for i in (0, 1)
    }
    # The hostile reply is rejected, recorded on the round and in the job's log
    assert list(record.rejected) == [hostile_id]
    assert record.rejected[hostile_id][0].startswith("dataset_not_owned")
    rejected = JobEvent.objects.get(job=job, kind="reply_rejected")
    assert rejected.level == "error" and hostile_id in rejected.message
    # The coordinator's replay of the ServerApp's saved rounds matched its reports: no conflict
    assert not JobEvent.objects.filter(job=job, kind="round_conflict").exists()
    # The honest owners are paid exactly their examples; the hostile owner nothing
    lines = {jd.dataset_version_id: jd for jd in JobDataset.objects.filter(job=job)}
    for index in (0, 1):
        jd = lines[terms[index].dataset_version_id]
        assert (jd.rounds_completed, jd.example_rounds) == (1, IMAGES)
        assert jd.earned == PRICE_PER_EXAMPLE_ROUND * IMAGES
    hostile_line = lines[terms[HOSTILE].dataset_version_id]
    assert (hostile_line.rounds_completed, hostile_line.earned) == (0, 0)
    assert job.owners_paid == 2 * PRICE_PER_EXAMPLE_ROUND * IMAGES

    # Its progress reports, with everything it could read, were all refused
    attempts = [
        a for line in hostile_run["attack_log"].read_text().splitlines() for a in json.loads(line)
    ]
    assert {a["source"] for a in attempts} >= {
        "node-token",
        "run-config:job-id",
        "run-config:progress-url",
    }
    assert {a["status"] for a in attempts} == {401}, attempts

    # No secret in what the SuperLink keeps: its state database holds the run config in clear
    state = b"".join(p.read_bytes() for p in (hostile_run["link"].workdir).glob("state.db*"))
    assert b"progress-url" in state  # the run config is there...
    credentials = hostile_run["credentials"]
    for secret in (credentials["progress-token"], credentials["job-token"]):
        assert secret.encode() not in state  # ...without the ServerApp's secrets
    assert not TOKEN_LIKE.search(state)

    # The published LoRA is the average of the honest updates only: the arrays of the same
    # job run without the hostile node
    _, published, _ = load_state(Path(job.out_dir))
    base_model = _tiny_model(tmp_path_factory) / TINY_SINGLE_FILE_NAME
    out = _comparison_run(job, owners, base_model, tmp_path_factory.mktemp("honest-only"))
    _, honest_only, _ = load_state(out)
    assert list(published) == list(honest_only)
    for name in published:
        np.testing.assert_allclose(published[name], honest_only[name], rtol=1e-5, atol=1e-7)
