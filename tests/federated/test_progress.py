"""The ServerApp's round reports: participation per dataset, the privacy mirror, idempotency,
and what is refused (finished jobs, malformed reports)."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import ApplicationError, ConflictError
from federated.models import FederatedJob, JobDataset, JobEvent, JobRound, PrivacySpend
from federated.services.jobs import job_create, job_fail, job_progress_record

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")


@pytest.fixture
def run(fed: Any) -> dict[str, Any]:
    """A running job on two datasets (10 and 20 examples), 3 rounds."""
    trainer = fed.user("trainer", credits=10_000)
    base = fed.base_version(fed.user("creator"))
    d1 = fed.dataset(fed.user("owner1"), count=10)
    d2 = fed.dataset(fed.user("owner2"), count=20)
    job, _ = fed.running(trainer, fed.spec(base, [d1, d2], rounds=3, target_epsilon=6.0))
    return {
        "job": job,
        "d1": d1,
        "d2": d2,
        "h1": d1.dataset_version.manifest_hash,
        "h2": d2.dataset_version.manifest_hash,
        "trainer": trainer,
        "base": base,
    }


def _row(job: FederatedJob, terms: Any) -> JobDataset:
    return JobDataset.objects.get(job=job, dataset_version_id=terms.dataset_version_id)


def test_a_round_maps_each_node_to_its_dataset(fed: Any, run: Any) -> None:
    job = run["job"]
    # When the ServerApp reports round 1 with both nodes
    record = job_progress_record(
        job=job,
        payload=fed.report(job, 1, {"101": (run["h1"], 10, 2.5), "202": (run["h2"], 20, 3.0)}),
    )
    # Then the round is recorded with its loss, epsilon, nodes and bytes
    assert record is not None
    assert (record.index, record.num_examples, record.bytes_out_per_node) == (1, 30, 1234)
    assert record.train_loss == pytest.approx(0.4)
    assert record.epsilon_max == 3.0
    assert set(record.nodes) == {"101", "202"}
    # And each dataset completed one round with its examples, and its node's epsilon
    r1, r2 = _row(job, run["d1"]), _row(job, run["d2"])
    assert (r1.rounds_completed, r1.example_rounds, r1.flwr_node_ids) == (1, 10, ["101"])
    assert (r2.rounds_completed, r2.example_rounds, r2.flwr_node_ids) == (1, 20, ["202"])
    spends = {s.dataset_version_id: s.epsilon for s in PrivacySpend.objects.filter(job=job)}
    assert spends == {run["d1"].dataset_version_id: 2.5, run["d2"].dataset_version_id: 3.0}


def test_the_same_round_twice_is_recorded_once(fed: Any, run: Any) -> None:
    job = run["job"]
    report = fed.report(job, 1, {"101": (run["h1"], 10, 2.5)})
    first = job_progress_record(job=job, payload=report)
    again = job_progress_record(job=job, payload=report)
    assert first is not None and again is not None and again.pk == first.pk
    assert JobRound.objects.filter(job=job).count() == 1
    assert _row(job, run["d1"]).rounds_completed == 1
    assert _row(job, run["d1"]).example_rounds == 10


def test_epsilon_keeps_the_largest_reported_and_examples_are_capped_by_the_manifest(
    fed: Any, run: Any
) -> None:
    job = run["job"]
    job_progress_record(job=job, payload=fed.report(job, 1, {"101": (run["h1"], 10, 4.0)}))
    # A node that claims more examples than its manifest holds is counted for the manifest
    job_progress_record(job=job, payload=fed.report(job, 2, {"101": (run["h1"], 999, 3.0)}))
    row = _row(job, run["d1"])
    assert (row.rounds_completed, row.example_rounds) == (2, 20)
    assert PrivacySpend.objects.get(job=job).epsilon == 4.0


def test_a_node_or_manifest_not_in_the_job_is_logged_and_not_counted(fed: Any, run: Any) -> None:
    job = run["job"]
    other = fed.dataset(fed.user("owner3"), count=50)  # listed, but not in this job
    job_progress_record(
        job=job,
        payload=fed.report(
            job,
            1,
            {
                "101": (run["h1"], 10, 2.0),
                "303": (other.dataset_version.manifest_hash, 50, 1.0),
                "404": ("f" * 64, 5, 1.0),
            },
        ),
    )
    assert _row(job, run["d1"]).rounds_completed == 1
    assert (
        not JobDataset.objects.filter(job=job, rounds_completed__gt=0)
        .exclude(dataset_version_id=run["d1"].dataset_version_id)
        .exists()
    )
    assert not PrivacySpend.objects.filter(dataset_version=other.dataset_version).exists()
    event = JobEvent.objects.get(job=job, kind="unknown_dataset")
    assert {n["node"] for n in event.data["nodes"]} == {"303", "404"}


def test_refusals_and_missing_replies_are_logged(fed: Any, run: Any) -> None:
    job = run["job"]
    job_progress_record(
        job=job,
        payload=fed.report(
            job,
            1,
            {"101": (run["h1"], 10, 2.0)},
            refused={"202": "[4001] privacy_budget_exceeded: dataset budget spent"},
            **{"no-reply": ["303"]},
        ),
    )
    kinds = list(JobEvent.objects.filter(job=job, level="warning").values_list("kind", flat=True))
    assert kinds == ["node_refused", "node_no_reply"]
    assert _row(job, run["d2"]).rounds_completed == 0


def test_final_and_failure_reports_are_logged_and_leave_the_state_to_the_coordinator(
    fed: Any, run: Any
) -> None:
    job = run["job"]
    assert (
        job_progress_record(
            job=job, payload={"job-id": job.flower_job_id, "status": "completed", "final": {}}
        )
        is None
    )
    assert (
        job_progress_record(job=job, payload={"status": "failed", "reason": "round 2: 1 accepted"})
        is None
    )
    job.refresh_from_db()
    assert job.state == FederatedJob.State.RUNNING
    assert "round 2: 1 accepted" in JobEvent.objects.get(job=job, kind="server_failed").message


@pytest.mark.parametrize(
    "change",
    [
        {"round": 0},
        {"round": 4},
        {"round": "1"},
        {"nodes": ["101"]},
        {"nodes": {"101": "fast"}},
        {"status": "exploded"},
        {"no-reply": "303"},
        {"train-loss": "low"},
    ],
)
def test_a_malformed_report_is_400_and_records_nothing(
    fed: Any, run: Any, change: dict[str, Any]
) -> None:
    job = run["job"]
    with pytest.raises(ApplicationError) as err:
        job_progress_record(
            job=job, payload={**fed.report(job, 1, {"101": (run["h1"], 10, 2.0)}), **change}
        )
    assert err.value.status_code == 400 and err.value.code == "bad_progress"
    assert not JobRound.objects.filter(job=job).exists()
    assert _row(job, run["d1"]).rounds_completed == 0


def test_a_report_for_another_job_id_is_refused(fed: Any, run: Any) -> None:
    job = run["job"]
    payload = {**fed.report(job, 1, {"101": (run["h1"], 10, 2.0)}), "job-id": "job-999999"}
    with pytest.raises(ApplicationError) as err:
        job_progress_record(job=job, payload=payload)
    assert err.value.code == "wrong_job"
    assert not JobRound.objects.exists()


def test_a_finished_or_unlaunched_job_takes_no_report(fed: Any, run: Any) -> None:
    job = run["job"]
    job_fail(job=job, reason="stopped")
    with pytest.raises(ConflictError) as err:
        job_progress_record(job=job, payload=fed.report(job, 1, {"101": (run["h1"], 10, 2.0)}))
    assert err.value.status_code == 409
    draft = job_create(trainer=run["trainer"], spec=fed.spec(run["base"], [run["d1"]]))
    with pytest.raises(ConflictError):
        job_progress_record(job=draft, payload=fed.report(draft, 1, {}))
    assert not JobRound.objects.exists()
    assert not PrivacySpend.objects.exists()
