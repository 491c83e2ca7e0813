"""Jobs: estimate, the checks before launch, escrow at launch, idempotency, approvals, the
coordinator's calls (run config, running) and cancel."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis
from django.conf import settings

from core.errors import AccessDeniedError, ApplicationError, ConflictError, NotFoundError
from federated.models import (
    ApprovalState,
    FederatedJob,
    JobDataset,
    JobEvent,
    PrivacySpend,
)
from federated.selectors import approval_inbox, jobs_to_reconcile
from federated.services.jobs import (
    job_approve,
    job_cancel,
    job_create,
    job_create_and_launch,
    job_estimate,
    job_fail,
    job_launch,
    job_mark_running,
    job_reject,
    job_run_config,
    job_token_check,
)
from federated.services.tokens import secret_digest
from marketplace.models import EscrowHold, EscrowStatus
from marketplace.selectors import wallet_balance
from marketplace.services.ledger import InsufficientFundsError

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")
State = FederatedJob.State


@pytest.fixture
def world(fed: Any) -> dict[str, Any]:
    """A trainer with 10,000 credits, a published base checkpoint, two owners' datasets:
    10 examples at 2 credits per example and round, 20 examples at 1."""
    trainer = fed.user("trainer", credits=10_000)
    base = fed.base_version(fed.user("creator"))
    owner1, owner2 = fed.user("owner1"), fed.user("owner2")
    d1 = fed.dataset(owner1, count=10, price_per_example_round=2)
    d2 = fed.dataset(owner2, count=20, price_per_example_round=1)
    return {
        "trainer": trainer,
        "base": base,
        "owner1": owner1,
        "owner2": owner2,
        "d1": d1,
        "d2": d2,
    }


# --- estimate and checks ---------------------------------------------------------------------


def test_estimate_is_price_times_examples_times_rounds_plus_the_fee(
    fed: Any, world: Any, settings: Any
) -> None:
    settings.ATELIER_PLATFORM_FEE_BPS = 1000
    per_job = fed.dataset(world["owner2"], count=50, price_per_example_round=0, price_per_job=70)
    spec = fed.spec(world["base"], [world["d1"], world["d2"], per_job], rounds=3)
    estimate = job_estimate(trainer=world["trainer"], spec=spec)
    assert [line.max_cost for line in estimate.lines] == [2 * 10 * 3, 1 * 20 * 3, 70]
    assert [line.pricing for line in estimate.lines] == ["example_round", "example_round", "job"]
    assert estimate.owners_max == 190
    assert (estimate.fee_bps, estimate.fee, estimate.total) == (1000, 19, 209)
    assert estimate.problems == []


def test_estimate_lists_the_problems_a_launch_would_meet(fed: Any, world: Any) -> None:
    sdxl_only = fed.dataset(world["owner1"], allowed_families=["sdxl"])
    estimate = job_estimate(
        trainer=world["trainer"], spec=fed.spec(world["base"], [world["d1"], sdxl_only], rank=0)
    )
    assert {p["code"] for p in estimate.problems} == {"bad_rank", "terms_forbid_family"}
    assert FederatedJob.objects.count() == 0


def test_create_fills_defaults_from_the_datasets_terms(fed: Any, world: Any) -> None:
    fed.dataset(world["owner1"])  # not in the job
    tight = fed.dataset(world["owner2"], epsilon_per_job=3.0, delta=1e-6)
    job = job_create(trainer=world["trainer"], spec=fed.spec(world["base"], [world["d1"], tight]))
    assert job.state == State.DRAFT
    assert job.config["alpha"] == 2.0  # the rank
    assert job.config["target_epsilon"] == 3.0  # the smallest per-job budget
    assert job.config["delta"] == 1e-6
    assert job.config["min_nodes"] == 2
    assert job.config["max_grad_norm"] == 0.05
    assert list(job.datasets.values_list("dataset_version_id", flat=True)) == [
        world["d1"].dataset_version_id,
        tight.dataset_version_id,
    ]


@pytest.mark.parametrize(
    ("terms", "job", "code", "clause"),
    [
        ({"allowed_families": ["sdxl"]}, {}, "terms_forbid_family", "allowed_families"),
        ({"allowed_uses": ["research"]}, {"use": "style"}, "terms_forbid_use", "allowed_uses"),
        (
            {"commercial_use": False},
            {"commercial_use": True},
            "terms_forbid_commercial_use",
            "commercial_use",
        ),
        ({"require_dp": True}, {"dp": False}, "terms_require_dp", "require_dp"),
        (
            {"epsilon_per_job": 4.0},
            {"target_epsilon": 4.5},
            "epsilon_above_job_budget",
            "epsilon_per_job",
        ),
        ({"delta": 1e-6}, {"delta": 1e-5}, "delta_above_terms", "delta"),
    ],
)
def test_a_dataset_whose_terms_forbid_the_job_is_refused_naming_it_and_the_clause(
    fed: Any,
    world: Any,
    terms: dict[str, Any],
    job: dict[str, Any],
    code: str,
    clause: str,
) -> None:
    # Given a dataset whose terms forbid something the job asks for, and one that allows all
    ok = fed.dataset(world["owner1"], commercial_use=True, require_dp=False)
    strict = fed.dataset(world["owner2"], name="Strict photos", **terms)
    # When the trainer launches a job on both
    with pytest.raises(ApplicationError) as err:
        fed.launch(world["trainer"], fed.spec(world["base"], [ok, strict], **job))
    # Then a 400 names the dataset and the clause, and nothing was created or held
    assert err.value.status_code == 400
    assert err.value.code == code
    assert err.value.details["dataset_version_id"] == strict.dataset_version_id
    assert err.value.details["dataset"] == "Strict photos"
    assert err.value.details["clause"] == clause
    assert "Strict photos" in err.value.message
    assert FederatedJob.objects.count() == 0
    assert EscrowHold.objects.count() == 0
    assert wallet_balance(user=world["trainer"]) == 10_000


def test_without_dp_only_when_every_dataset_allows_it(fed: Any, world: Any) -> None:
    free = fed.dataset(world["owner1"], require_dp=False)
    job = fed.launch(world["trainer"], fed.spec(world["base"], [free], dp=False))
    assert job.config["dp"] is False and job.target_epsilon is None


def test_target_epsilon_above_the_remaining_lifetime_budget_is_refused(
    fed: Any, world: Any
) -> None:
    # Given a dataset with lifetime 10 whose ledger shows 7 spent by an earlier job
    owner = world["owner1"]
    terms = fed.dataset(owner, epsilon_per_job=8.0, epsilon_lifetime=10.0)
    earlier = fed.launch(world["trainer"], fed.spec(world["base"], [terms], target_epsilon=8.0))
    PrivacySpend.objects.create(job=earlier, dataset_version=terms.dataset_version, epsilon=7.0)
    job_fail(job=earlier, reason="node dropped")
    # When a job asks for epsilon 4 (within the per-job budget of 8)
    with pytest.raises(ApplicationError) as err:
        fed.launch(world["trainer"], fed.spec(world["base"], [terms], target_epsilon=4.0))
    # Then it is refused: only 3 remain
    assert err.value.code == "epsilon_above_remaining_budget"
    assert err.value.details["clause"] == "epsilon_lifetime"
    assert "remaining lifetime budget 3" in err.value.message
    # And a job within what remains is accepted
    assert fed.launch(world["trainer"], fed.spec(world["base"], [terms], target_epsilon=3.0))


def test_an_active_job_reserves_its_target_against_the_lifetime_budget(
    fed: Any, world: Any
) -> None:
    terms = fed.dataset(world["owner1"], epsilon_per_job=6.0, epsilon_lifetime=10.0)
    fed.launch(world["trainer"], fed.spec(world["base"], [terms], target_epsilon=6.0))
    with pytest.raises(ApplicationError) as err:
        fed.launch(world["trainer"], fed.spec(world["base"], [terms], target_epsilon=5.0))
    assert err.value.code == "epsilon_above_remaining_budget"


BAD_HYPERPARAMETERS: list[tuple[dict[str, Any], str]] = [
    ({"rank": 0}, "bad_rank"),
    ({"rank": 129}, "bad_rank"),
    ({"rounds": 0}, "bad_rounds"),
    ({"rounds": 101}, "bad_rounds"),
    ({"learning_rate": 0.0}, "bad_learning_rate"),
    ({"learning_rate": -1e-3}, "bad_learning_rate"),
    ({"resolution": 36}, "bad_resolution"),
    ({"local_steps": 0}, "bad_local_steps"),
    ({"local_steps": 10_001}, "bad_local_steps"),
    ({"max_grad_norm": 0.0}, "bad_max_grad_norm"),
    ({"target_epsilon": -1.0}, "bad_target_epsilon"),
    ({"min_nodes": 3}, "bad_min_nodes"),
    ({"use": "spam"}, "bad_use"),
    ({"trigger_word": "a,b"}, "bad_trigger_word"),
    ({"adapter_mode": "dora"}, "bad_adapter_mode"),
    ({"batch_size": 0}, "bad_batch_size"),
]


def test_hyperparameters_out_of_range_are_refused(fed: Any, world: Any) -> None:
    datasets = [world["d1"], world["d2"]]
    # Each bad value is the first problem the estimate reports
    for values, code in BAD_HYPERPARAMETERS:
        spec = fed.spec(world["base"], datasets, **values)
        problems = job_estimate(trainer=world["trainer"], spec=spec).problems
        assert problems and problems[0]["code"] == code, values
    # And the launch is refused with it
    with pytest.raises(ApplicationError) as err:
        job_create(trainer=world["trainer"], spec=fed.spec(world["base"], datasets, rank=0))
    assert (err.value.code, err.value.details["clause"]) == ("bad_rank", "rank")
    assert FederatedJob.objects.count() == 0
    # In range at the edges is fine
    edges = fed.spec(
        world["base"], datasets, rank=128, rounds=100, local_steps=10_000, resolution=8, min_nodes=1
    )
    assert job_estimate(trainer=world["trainer"], spec=edges).problems == []


def test_a_base_model_the_trainer_must_buy_first_is_refused(fed: Any, world: Any) -> None:
    from marketplace.services.listings import listing_create
    from marketplace.services.purchases import purchase_create

    creator = world["base"].model.owner
    listing = listing_create(seller=creator, target=world["base"], price=500)
    spec = fed.spec(world["base"], [world["d1"]])
    with pytest.raises(AccessDeniedError) as err:
        job_create(trainer=world["trainer"], spec=spec)
    assert err.value.code == "base_not_entitled"
    purchase_create(buyer=world["trainer"], listing=listing, idempotency_key="buy-base")
    assert job_create(trainer=world["trainer"], spec=spec).state == State.DRAFT


def test_a_base_model_whose_license_forbids_derivatives_is_refused(fed: Any, world: Any) -> None:
    base = fed.base_version(world["owner1"], license_code="custom")
    with pytest.raises(ApplicationError) as err:
        job_create(trainer=world["trainer"], spec=fed.spec(base, [world["d1"]]))
    assert err.value.code == "base_license_forbids_derivatives"


def test_the_base_must_be_a_single_file_checkpoint(fed: Any, world: Any) -> None:
    from tests.registry.factories import make_model

    lora = make_model(owner=world["owner1"], kind="lora")
    with pytest.raises(ApplicationError) as err:
        job_create(trainer=world["trainer"], spec=fed.spec(lora, [world["d1"]]))
    assert err.value.code == "base_not_checkpoint"
    draft = fed.base_version(world["owner1"], publish=False)
    with pytest.raises(NotFoundError):  # a draft of someone else's
        job_create(trainer=world["trainer"], spec=fed.spec(draft, [world["d1"]]))


def test_a_public_or_unknown_dataset_is_refused(fed: Any, world: Any) -> None:
    from tests.registry.factories import make_public_dataset

    public = make_public_dataset(owner=world["owner1"])
    spec = fed.spec(world["base"], [world["d1"]])
    with pytest.raises(ApplicationError) as err:
        job_create(
            trainer=world["trainer"],
            spec=spec.__class__(**{**spec.as_dict(), "dataset_version_ids": (public.pk,)}),
        )
    assert err.value.code == "dataset_not_federated"
    with pytest.raises(NotFoundError):
        job_create(
            trainer=world["trainer"],
            spec=spec.__class__(**{**spec.as_dict(), "dataset_version_ids": (10**9,)}),
        )


# --- launch, escrow, idempotency -------------------------------------------------------------


def test_launch_holds_the_maximum_cost_and_queues_the_job(
    fed: Any, world: Any, django_capture_on_commit_callbacks: Any
) -> None:
    spec = fed.spec(world["base"], [world["d1"], world["d2"]], rounds=2)
    with django_capture_on_commit_callbacks() as callbacks:
        job, created = job_create_and_launch(
            trainer=world["trainer"], spec=spec, idempotency_key="k1"
        )
    # 2x10x2 + 1x20x2 = 80 for the owners, 10 % fee
    assert created and job.state == State.QUEUED
    assert (job.max_cost, job.fee_bps) == (88, 1000)
    assert job.escrow.amount == 88 and job.escrow.reference == f"federated-job:{job.pk}"
    assert job.escrow.status == EscrowStatus.HELD
    assert wallet_balance(user=world["trainer"]) == 10_000 - 88
    assert job.deadline_at is not None
    assert set(job.datasets.values_list("approval", flat=True)) == {ApprovalState.APPROVED}
    assert len(callbacks) == 1  # job_start, once committed
    assert list(jobs_to_reconcile()) == [job]


def test_insufficient_credits_is_402_and_nothing_is_held_or_created(fed: Any, world: Any) -> None:
    poor = fed.user("poor", credits=10)
    with pytest.raises(InsufficientFundsError) as err:
        fed.launch(poor, fed.spec(world["base"], [world["d1"], world["d2"]]))
    assert err.value.status_code == 402
    assert FederatedJob.objects.count() == 0
    assert EscrowHold.objects.count() == 0
    assert wallet_balance(user=poor) == 10


def test_launching_twice_with_one_key_returns_the_same_job_charged_once(
    fed: Any, world: Any
) -> None:
    spec = fed.spec(world["base"], [world["d1"]])
    first, created = job_create_and_launch(
        trainer=world["trainer"], spec=spec, idempotency_key="same"
    )
    again, created_again = job_create_and_launch(
        trainer=world["trainer"], spec=spec, idempotency_key="same"
    )
    assert (created, created_again) == (True, False)
    assert again.pk == first.pk
    assert FederatedJob.objects.count() == 1 and EscrowHold.objects.count() == 1
    assert wallet_balance(user=world["trainer"]) == 10_000 - first.max_cost
    # The same key with another body is a conflict, and charges nothing
    with pytest.raises(ConflictError) as err:
        job_create_and_launch(
            trainer=world["trainer"],
            spec=fed.spec(world["base"], [world["d1"]], rounds=5),
            idempotency_key="same",
        )
    assert err.value.status_code == 409 and err.value.code == "idempotency_key_reused"
    assert wallet_balance(user=world["trainer"]) == 10_000 - first.max_cost
    # job_launch on the launched job: the same key returns it, another key is 409
    assert job_launch(job=first, idempotency_key="same").pk == first.pk
    with pytest.raises(ConflictError):
        job_launch(job=first, idempotency_key="other")


def test_free_datasets_launch_without_escrow(fed: Any, world: Any) -> None:
    free = fed.dataset(world["owner1"], price_per_example_round=0)
    job = fed.launch(world["trainer"], fed.spec(world["base"], [free]))
    assert (job.state, job.max_cost, job.escrow) == (State.QUEUED, 0, None)


def test_launch_enqueues_job_start_on_the_broker(
    fed: Any, world: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from celery import current_app

    # Given a queue of this test's own on the real Redis broker
    queue = f"test-fedcore-{uuid.uuid4().hex[:8]}"
    old = current_app.conf.task_default_queue
    current_app.conf.task_default_queue = queue
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        # When a job is launched and its transaction commits
        with django_capture_on_commit_callbacks(execute=True):
            job = fed.launch(world["trainer"], fed.spec(world["base"], [world["d1"]]))
        # Then one job_start message for it waits in the queue
        messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    finally:
        current_app.conf.task_default_queue = old
        client.delete(queue)
    assert [m["headers"]["task"] for m in messages] == ["federated.tasks.job_start"]
    assert json.loads(
        messages[0]["headers"]["argsrepr"].replace("(", "[").replace(",)", "]").replace(")", "]")
    ) == [job.pk]


# --- approvals ---------------------------------------------------------------------------------


def test_manual_datasets_wait_for_approval_then_the_job_is_queued(fed: Any, world: Any) -> None:
    manual = fed.dataset(world["owner2"], approval="manual")
    job = fed.launch(world["trainer"], fed.spec(world["base"], [world["d1"], manual]))
    assert job.state == State.AWAITING_APPROVAL
    request = JobDataset.objects.get(job=job, dataset_version=manual.dataset_version)
    assert list(approval_inbox(owner=world["owner2"])) == [request]
    assert list(approval_inbox(owner=world["owner1"])) == []  # auto-approved
    with pytest.raises(NotFoundError):  # someone else's dataset
        job_approve(job_dataset=request, user=world["owner1"])
    job = job_approve(job_dataset=request, user=world["owner2"])
    assert job.state == State.QUEUED
    request.refresh_from_db()
    assert (request.approval, request.decided_by) == (ApprovalState.APPROVED, world["owner2"])
    assert list(approval_inbox(owner=world["owner2"])) == []
    assert job_approve(job_dataset=request, user=world["owner2"]).state == State.QUEUED


def test_a_rejection_cancels_the_job_and_refunds_the_escrow_in_full(fed: Any, world: Any) -> None:
    manual = fed.dataset(world["owner2"], approval="manual")
    job = fed.launch(world["trainer"], fed.spec(world["base"], [world["d1"], manual]))
    assert wallet_balance(user=world["trainer"]) < 10_000
    request = JobDataset.objects.get(job=job, dataset_version=manual.dataset_version)
    job = job_reject(job_dataset=request, user=world["owner2"], note="not for styles")
    assert job.state == State.CANCELLED
    assert "declined" in job.failure_reason and "not for styles" in job.failure_reason
    assert (job.owners_paid, job.fee_paid, job.refunded) == (0, 0, job.max_cost)
    assert job.escrow.status == EscrowStatus.SETTLED
    assert wallet_balance(user=world["trainer"]) == 10_000
    with pytest.raises(ConflictError):
        job_approve(job_dataset=request, user=world["owner2"])


def test_an_owner_training_on_their_own_manual_dataset_needs_no_approval(
    fed: Any, world: Any
) -> None:
    mine = fed.dataset(world["trainer"], approval="manual")
    assert fed.launch(world["trainer"], fed.spec(world["base"], [mine])).state == State.QUEUED


# --- the coordinator's calls -------------------------------------------------------------------


def test_run_config_is_complete_for_the_engine_and_keeps_only_token_hashes(
    fed: Any, world: Any, settings: Any
) -> None:
    from federated.engine.flower.settings import ServerSettings, train_config_from_run_config

    settings.ATELIER_SITE_URL = "http://site.test:8123"
    job = fed.launch(
        world["trainer"],
        fed.spec(
            world["base"],
            [world["d1"], world["d2"]],
            rounds=4,
            rank=8,
            local_steps=7,
            learning_rate=0.01,
            resolution=64,
            target_epsilon=5.0,
        ),
    )
    config = job_run_config(job=job)
    job.refresh_from_db()
    base_file = world["base"].files.get(is_primary=True)
    assert config["job-id"] == f"job-{job.pk}"
    assert config["progress-url"] == (
        f"http://site.test:8123/api/v1/federated/jobs/{job.pk}/progress"
    )
    assert config["base-model-url"] == (
        f"http://site.test:8123/api/v1/federated/jobs/{job.pk}/base-model"
    )
    assert config["base-model-sha"] == base_file.blob_id
    assert config["dataset-manifests"] == ",".join(
        [world["d1"].dataset_version.manifest_hash, world["d2"].dataset_version.manifest_hash]
    )
    assert str(config["out-dir"]).endswith(f"job-{job.pk}") and job.out_dir == config["out-dir"]
    # No secret in the run config (every node reads it); the ServerApp's credentials are in
    # its own file, and only their hashes in the database
    assert "job-token" not in config and "progress-token" not in config
    secrets = fed.credentials(job)
    assert str(secrets["job-token"]).startswith("atj_")
    assert str(secrets["progress-token"]).startswith("atp_")
    assert job.job_token_digest == secret_digest(str(secrets["job-token"]))
    assert job.progress_token_digest == secret_digest(str(secrets["progress-token"]))
    # The engine reads it as the same job
    server = ServerSettings.from_run_config(config, run_id=1)
    train = train_config_from_run_config(config)
    assert (server.num_rounds, server.min_nodes, server.job_id) == (4, 2, f"job-{job.pk}")
    assert (train.adapter.rank, train.local_steps, train.resolution) == (8, 7, 64)
    assert train.learning_rate == 0.01
    assert train.dp is not None and train.dp.target_epsilon == 5.0
    assert train.dp.max_grad_norm == 0.05
    # Issuing it again replaces the secrets: the old ones stop working
    job_run_config(job=job)
    again = fed.credentials(job)
    job.refresh_from_db()
    assert not job_token_check(job=job, secret=str(secrets["progress-token"]), kind="progress")
    assert job_token_check(job=job, secret=str(again["progress-token"]), kind="progress")


def test_run_config_only_for_a_queued_or_running_job(fed: Any, world: Any) -> None:
    draft = job_create(trainer=world["trainer"], spec=fed.spec(world["base"], [world["d1"]]))
    with pytest.raises(ConflictError):
        job_run_config(job=draft)


def test_mark_running_once_per_run_id(fed: Any, world: Any) -> None:
    job = fed.launch(world["trainer"], fed.spec(world["base"], [world["d1"]]))
    running = job_mark_running(job=job, run_id="7001")
    assert (running.state, running.run_id) == (State.RUNNING, "7001")
    started = running.started_at
    assert job_mark_running(job=job, run_id="7001").started_at == started
    with pytest.raises(ConflictError):
        job_mark_running(job=job, run_id="7002")
    assert JobEvent.objects.filter(job=job, kind="running").count() == 1


def test_cancel_refunds_what_was_not_earned_and_asks_to_stop_the_run(
    fed: Any,
    world: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    job, _ = fed.running(world["trainer"], fed.spec(world["base"], [world["d1"]]))
    with pytest.raises(NotFoundError):
        job_cancel(job=job, user=world["owner1"])
    with django_capture_on_commit_callbacks() as callbacks:
        job = job_cancel(job=job, user=world["trainer"])
    assert job.state == State.CANCELLED
    assert "Cancelled by trainer" in job.failure_reason
    assert wallet_balance(user=world["trainer"]) == 10_000
    assert len(callbacks) == 1  # job_stop
    # Cancelling again changes nothing; a finished job cannot be cancelled
    assert job_cancel(job=job, user=world["trainer"]).settled_at == job.settled_at
    failed = fed.launch(world["trainer"], fed.spec(world["base"], [world["d2"]]))
    job_fail(job=failed, reason="no nodes")
    with pytest.raises(ConflictError):
        job_cancel(job=failed, user=world["trainer"])
    assert jobs_to_reconcile().count() == 0
