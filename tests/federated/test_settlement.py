"""Paying data owners by participation: examples x rounds completed, the platform fee, the
refund, on failure and cancel too, and never twice."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import ConflictError
from federated.models import FederatedJob, JobDataset
from federated.services.jobs import job_cancel, job_complete, job_fail, job_progress_record
from federated.services.settlement import dataset_earned, job_settle
from marketplace.models import LedgerTransaction
from marketplace.selectors import platform_revenue_total, wallet_balance
from marketplace.services.ledger import escrow_settle

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")
State = FederatedJob.State


@pytest.fixture
def two_owners(fed: Any) -> dict[str, Any]:
    """A running 2-round job: owner1's 10 examples at 3 credits per example and round,
    owner2's 20 at 2. Maximum: 60 + 80 = 140 for owners, 14 fee (10 %), 154 held."""
    trainer = fed.user("trainer", credits=1_000)
    base = fed.base_version(fed.user("creator"))
    owner1, owner2 = fed.user("owner1"), fed.user("owner2")
    d1 = fed.dataset(owner1, count=10, price_per_example_round=3)
    d2 = fed.dataset(owner2, count=20, price_per_example_round=2)
    job, _ = fed.running(trainer, fed.spec(base, [d1, d2], rounds=2))
    return {
        "job": job,
        "trainer": trainer,
        "owner1": owner1,
        "owner2": owner2,
        "h1": d1.dataset_version.manifest_hash,
        "h2": d2.dataset_version.manifest_hash,
    }


def test_a_node_that_completed_one_of_two_rounds_is_paid_for_one(
    fed: Any, two_owners: Any, server_out: Any
) -> None:
    w = two_owners
    job = w["job"]
    assert (job.max_cost, wallet_balance(user=w["trainer"])) == (154, 1_000 - 154)
    # Round 1: both nodes; round 2: owner2's node dropped
    job_progress_record(
        job=job, payload=fed.report(job, 1, {"1": (w["h1"], 10, 1.0), "2": (w["h2"], 20, 1.0)})
    )
    job_progress_record(job=job, payload=fed.report(job, 2, {"1": (w["h1"], 10, 2.0)}))
    # When the job completes
    job = job_complete(job=job, out_dir=server_out(job))
    # Then owner1 earns 3 x 10 x 2, owner2 2 x 20 x 1, the fee is 10 % of that, the rest back
    assert job.state == State.COMPLETED
    assert wallet_balance(user=w["owner1"]) == 60
    assert wallet_balance(user=w["owner2"]) == 40
    assert (job.owners_paid, job.fee_paid) == (100, 10)
    assert job.refunded == 154 - 110
    assert wallet_balance(user=w["trainer"]) == 1_000 - 110
    assert platform_revenue_total() == 10
    earned = dict(JobDataset.objects.filter(job=job).values_list("manifest_hash", "earned"))
    assert earned == {w["h1"]: 60, w["h2"]: 40}


def test_job_fail_after_partial_rounds_pays_what_was_earned_and_says_why(
    fed: Any, two_owners: Any
) -> None:
    w = two_owners
    job = w["job"]
    job_progress_record(
        job=job, payload=fed.report(job, 1, {"1": (w["h1"], 10, 1.0), "2": (w["h2"], 20, 1.0)})
    )
    job = job_fail(job=job, reason="round 2: 0 accepted replies, min-nodes is 2")
    assert job.state == State.FAILED
    assert job.failure_reason == "round 2: 0 accepted replies, min-nodes is 2"
    assert (wallet_balance(user=w["owner1"]), wallet_balance(user=w["owner2"])) == (30, 40)
    assert (job.owners_paid, job.fee_paid, job.refunded) == (70, 7, 154 - 77)
    assert wallet_balance(user=w["trainer"]) == 1_000 - 77
    # Failing or completing again changes nothing and pays nothing
    settled = LedgerTransaction.objects.filter(kind="escrow_settle").count()
    assert job_fail(job=job, reason="again").failure_reason.startswith("round 2")
    assert job_complete(job=job, out_dir=job.out_dir).state == State.FAILED
    assert LedgerTransaction.objects.filter(kind="escrow_settle").count() == settled == 1


def test_cancel_while_running_pays_the_completed_round(fed: Any, two_owners: Any) -> None:
    w = two_owners
    job = w["job"]
    job_progress_record(job=job, payload=fed.report(job, 1, {"1": (w["h1"], 10, 1.0)}))
    job = job_cancel(job=job, user=w["trainer"])
    assert (job.state, job.owners_paid, job.fee_paid) == (State.CANCELLED, 30, 3)
    assert wallet_balance(user=w["owner1"]) == 30 and wallet_balance(user=w["owner2"]) == 0
    assert wallet_balance(user=w["trainer"]) == 1_000 - 33


def test_settling_twice_moves_nothing_more(fed: Any, two_owners: Any) -> None:
    w = two_owners
    job = job_fail(job=w["job"], reason="x")
    before = (wallet_balance(user=w["trainer"]), LedgerTransaction.objects.count())
    locked = FederatedJob.objects.select_related("escrow").get(pk=job.pk)
    job_settle(job=locked)  # the state machine's guard
    with pytest.raises(ConflictError):  # and the ledger's own
        escrow_settle(escrow_hold=locked.escrow, payouts=[], fee=0)
    assert (wallet_balance(user=w["trainer"]), LedgerTransaction.objects.count()) == before


def test_a_per_job_price_is_earned_by_share_of_rounds_completed(fed: Any) -> None:
    trainer = fed.user("trainer", credits=1_000)
    base = fed.base_version(fed.user("creator"))
    owner = fed.user("owner1")
    terms = fed.dataset(owner, price_per_example_round=0, price_per_job=90)
    job, _ = fed.running(trainer, fed.spec(base, [terms], rounds=3))
    assert job.max_cost == 99
    h = terms.dataset_version.manifest_hash
    for index in (1, 2):
        job_progress_record(job=job, payload=fed.report(job, index, {"5": (h, 10, 1.0)}))
    job = job_fail(job=job, reason="deadline")
    assert (wallet_balance(user=owner), job.fee_paid) == (60, 6)
    assert wallet_balance(user=trainer) == 1_000 - 66


def test_the_fee_is_the_one_agreed_at_launch(fed: Any, two_owners: Any, settings: Any) -> None:
    w = two_owners
    settings.ATELIER_PLATFORM_FEE_BPS = 5000  # raised after the launch
    job = w["job"]
    job_progress_record(job=job, payload=fed.report(job, 1, {"1": (w["h1"], 10, 1.0)}))
    assert job_fail(job=job, reason="x").fee_paid == 3  # 10 % of 30


def test_earned_never_exceeds_the_datasets_maximum() -> None:
    row = JobDataset(
        price_per_example_round=5,
        price_per_job=0,
        rounds_completed=9,
        example_rounds=1000,
        max_cost=100,
    )
    assert dataset_earned(job_dataset=row, rounds=2) == 100
    per_job = JobDataset(
        price_per_example_round=0, price_per_job=100, rounds_completed=5, max_cost=100
    )
    assert dataset_earned(job_dataset=per_job, rounds=3) == 100
