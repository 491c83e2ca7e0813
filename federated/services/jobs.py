"""Federated jobs: estimate, create, launch (escrow), approvals, the coordinator's calls
(run config, running, progress, complete, fail) and cancel. The only writer of a job's state.

States: draft -> awaiting_approval -> queued -> running -> publishing -> completed, and
failed / cancelled from any state before publishing ends. Completed, failed and cancelled are
terminal: a second ``job_complete``, ``job_fail`` or ``job_cancel`` changes nothing, so
nothing is published or paid twice.

Lock order: the job row, then its dataset rows (or the datasets' terms rows, ascending pk),
then the escrow hold and the ledger accounts (ascending pk, inside the ledger service).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import ApplicationError, ConflictError, NotFoundError
from core.tasks import enqueue_on_commit
from federated.engine.dp_advice import DPAdvice, dp_advice
from federated.engine.errors import ConfigError
from federated.engine.flower.credentials import credentials_path, write_credentials
from federated.models import (
    ApprovalMode,
    ApprovalState,
    DatasetTerms,
    FederatedJob,
    JobDataset,
    JobEvent,
)
from federated.selectors import job_nodes
from federated.services.events import job_event
from federated.services.job_spec import (
    AGGREGATION_COSTS,
    AggregationCost,
    JobSpec,
    ResolvedSpec,
    job_spec_resolve,
)
from federated.services.progress import job_progress_record
from federated.services.publishing import PublishError, job_publish
from federated.services.settlement import fee_for, job_settle, terms_max_cost
from federated.services.tokens import (
    JOB_TOKEN_PREFIX,
    PROGRESS_TOKEN_PREFIX,
    secret_issue,
    secret_matches,
)
from marketplace.services.ledger import escrow_hold_create
from marketplace.services.purchases import platform_fee_bps

__all__ = [
    "JobEstimate",
    "JobSpec",
    "job_approve",
    "job_cancel",
    "job_complete",
    "job_create",
    "job_create_and_launch",
    "job_estimate",
    "job_fail",
    "job_launch",
    "job_mark_running",
    "job_credentials_path",
    "job_progress_record",
    "job_reject",
    "job_run_config",
    "job_run_resume",
    "job_token_check",
]

log = logging.getLogger(__name__)
State = FederatedJob.State
PREPARE_TIMEOUT_SECONDS = 600.0
MAX_KEY_CHARS = 200


# --- the estimate ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimateLine:
    dataset_version_id: int
    dataset: str
    owner_id: int
    pricing: str  # "example_round" or "job"
    price: int
    examples: int
    rounds: int
    max_cost: int


@dataclass(frozen=True)
class JobEstimate:
    """The most the job can cost: what owners can earn, plus the platform fee on it."""

    lines: list[EstimateLine]
    owners_max: int
    fee_bps: int
    fee: int
    problems: list[dict[str, Any]]
    aggregation: AggregationCost | None = None  # None: an aggregation that does not exist
    rounds: int = 0
    # What DP-SGD will leave of the signal (None: no DP, or a problem in the DP settings)
    advice: DPAdvice | None = None

    @property
    def aggregation_extra_seconds(self) -> float:
        return self.aggregation.extra_seconds(self.rounds) if self.aggregation else 0.0

    @property
    def total(self) -> int:
        return self.owners_max + self.fee


# A problem with one of these leaves nothing to advise on (the problem is shown instead).
ADVICE_CLAUSES = frozenset(
    {"batch_size", "rounds", "local_steps", "max_grad_norm", "target_epsilon", "delta"}
)


def _dp_advice(resolved: ResolvedSpec) -> DPAdvice | None:
    """The noise multiplier, sampling rate and noise-to-signal ratio per dataset
    (:mod:`federated.engine.dp_advice`); 400 on a dataset without examples or smaller than
    the batch, which no node could train on with DP-SGD."""
    c = resolved.config
    if not resolved.spec.dp or c.get("target_epsilon") is None or c.get("delta") is None:
        return None
    if any(p.clause in ADVICE_CLAUSES for p in resolved.problems):
        return None
    datasets = [
        (t.dataset_version_id, t.dataset_version.dataset.name, t.dataset_version.image_count)
        for t in resolved.terms
    ]
    try:
        return dp_advice(
            datasets,
            batch_size=int(c["batch_size"]),
            rounds=int(c["rounds"]),
            local_steps=int(c["local_steps"]),
            max_grad_norm=float(c["max_grad_norm"]),
            target_epsilon=float(c["target_epsilon"]),
            delta=float(c["delta"]),
        )
    except ConfigError as err:
        raise ApplicationError(err.message, code=err.code, details=err.details) from err


def _estimate(resolved: ResolvedSpec, fee_bps: int, *, advise: bool = False) -> JobEstimate:
    rounds = int(resolved.config["rounds"]) if isinstance(resolved.config["rounds"], int) else 0
    lines = [
        EstimateLine(
            dataset_version_id=t.dataset_version_id,
            dataset=t.dataset_version.dataset.name,
            owner_id=t.dataset_version.dataset.owner_id,
            pricing=t.pricing,
            price=t.price_per_job if t.pricing == "job" else t.price_per_example_round,
            examples=t.dataset_version.image_count,
            rounds=rounds,
            max_cost=terms_max_cost(terms=t, rounds=rounds),
        )
        for t in resolved.terms
    ]
    owners_max = sum(line.max_cost for line in lines)
    return JobEstimate(
        lines,
        owners_max,
        fee_bps,
        fee_for(owners_max, fee_bps),
        [p.as_dict() for p in resolved.problems],
        AGGREGATION_COSTS.get(str(resolved.config.get("aggregation"))),
        rounds,
        _dp_advice(resolved) if advise else None,
    )


def job_estimate(*, trainer: User, spec: JobSpec) -> JobEstimate:
    """The cost before launch, with every problem the launch would refuse for, and the DP
    advice (what the noise will leave of the signal)."""
    resolved = job_spec_resolve(trainer=trainer, spec=spec)
    return _estimate(resolved, platform_fee_bps(), advise=True)


# --- create and launch -----------------------------------------------------------------------


def _enqueue(task: str, job_id: int) -> None:
    """Send ``federated.tasks.<task>(job_id)`` once the transaction commits; if the broker is
    down, the coordinator's ``jobs_reconcile`` starts or stops the saved job later."""
    enqueue_on_commit(f"federated.tasks.{task}", args=[job_id])


def _lock(job: FederatedJob) -> FederatedJob:
    return (
        FederatedJob.objects.select_for_update(of=("self",))
        .select_related("trainer", "base_version__model", "escrow")
        .get(pk=job.pk)
    )


def lock_for_finish(job: FederatedJob) -> FederatedJob:
    """The job locked to finish it (publish, withhold): a finished job comes back as it is (the
    caller returns it unchanged); one that never ran is a 409."""
    locked = _lock(job)
    if not locked.is_terminal and locked.state not in (
        State.QUEUED,
        State.RUNNING,
        State.PUBLISHING,
    ):
        raise ConflictError(
            f"The job is {locked.state}; it never ran.",
            code="bad_state",
            details={"state": locked.state},
        )
    return locked


@transaction.atomic
def job_create(*, trainer: User, spec: JobSpec) -> FederatedJob:
    """A draft job, after every check (400 naming the first problem and listing all)."""
    resolved = job_spec_resolve(trainer=trainer, spec=spec)
    resolved.raise_first()
    job = FederatedJob.objects.create(
        trainer=trainer,
        name=spec.name.strip()[:200],
        base_version=resolved.base_version,
        config=resolved.config,
        use=spec.use,
        commercial_use=spec.commercial_use,
        trigger_word=spec.trigger_word.strip(),
        request_hash=spec.fingerprint(),
    )
    rounds = int(resolved.config["rounds"])
    JobDataset.objects.bulk_create(
        JobDataset(
            job=job,
            dataset_version_id=t.dataset_version_id,
            manifest_hash=t.dataset_version.manifest_hash,
            examples=t.dataset_version.image_count,
            price_per_example_round=t.price_per_example_round,
            price_per_job=t.price_per_job,
            max_cost=terms_max_cost(terms=t, rounds=rounds),
        )
        for t in resolved.terms
    )
    job_event(job=job, kind="created", message=f"Job created by {trainer.get_username()}.")
    return job


def _check_key(key: str) -> str:
    key = (key or "").strip()
    if not key or len(key) > MAX_KEY_CHARS:
        raise ApplicationError(
            f"An Idempotency-Key (1-{MAX_KEY_CHARS} characters) is required.",
            code="idempotency_key_required",
        )
    return key


def _queue(job: FederatedJob) -> None:
    job.state = State.QUEUED
    minutes = int(job.config.get("timeout_minutes", 24 * 60))
    job.deadline_at = timezone.now() + timedelta(minutes=minutes)
    job.save(update_fields=["state", "deadline_at", "updated_at"])
    job_event(job=job, kind="queued", message="Every dataset is approved; the job is queued.")
    _enqueue("job_start", job.pk)


@transaction.atomic
def job_launch(*, job: FederatedJob, idempotency_key: str) -> FederatedJob:
    """Check the draft again, hold its maximum cost in escrow (402 when the wallet is short:
    nothing changes), ask manual datasets' owners for approval, and queue it when none is
    needed. Launching again with the same key returns the job; another key is 409."""
    key = _check_key(idempotency_key)
    job = _lock(job)
    if job.state != State.DRAFT:
        if job.idempotency_key == key:
            return job
        raise ConflictError(
            "This job was already launched.",
            code="job_already_launched",
            details={"job_id": job.pk, "state": job.state},
        )
    if (
        FederatedJob.objects.filter(trainer_id=job.trainer_id, idempotency_key=key)
        .exclude(pk=job.pk)
        .exists()
    ):
        raise ConflictError(
            "That Idempotency-Key was used for another job.", code="idempotency_key_reused"
        )
    spec = JobSpec.from_dict(job.config)
    # Lock the datasets' terms (ascending pk): launches sharing a dataset check its privacy
    # budget one at a time.
    list(
        DatasetTerms.objects.select_for_update()
        .filter(dataset_version_id__in=spec.dataset_version_ids)
        .order_by("pk")
    )
    resolved = job_spec_resolve(trainer=job.trainer, spec=spec, exclude_job_id=job.pk)
    resolved.raise_first()
    estimate = _estimate(resolved, platform_fee_bps())
    terms = {t.dataset_version_id: t for t in resolved.terms}
    pending = 0
    for jd in job.datasets.select_for_update().order_by("pk"):
        t = terms[jd.dataset_version_id]
        jd.price_per_example_round = t.price_per_example_round
        jd.price_per_job = t.price_per_job
        jd.examples = t.dataset_version.image_count
        jd.manifest_hash = t.dataset_version.manifest_hash
        jd.max_cost = terms_max_cost(terms=t, rounds=job.num_rounds)
        own = t.dataset_version.dataset.owner_id == job.trainer_id
        if t.approval == ApprovalMode.MANUAL and not own:
            jd.approval, jd.auto_approved = ApprovalState.PENDING, False
            pending += 1
        else:
            jd.approval, jd.auto_approved = ApprovalState.APPROVED, True
            jd.decided_at = timezone.now()
        jd.save()
    job.config = resolved.config
    job.fee_bps = estimate.fee_bps
    job.max_cost = estimate.total
    job.idempotency_key = key
    if estimate.total > 0:
        job.escrow = escrow_hold_create(
            payer=job.trainer, amount=estimate.total, reference=f"federated-job:{job.pk}"
        )
    job.launched_at = timezone.now()
    job.state = State.AWAITING_APPROVAL if pending else State.QUEUED
    job.save()
    job_event(
        job=job,
        kind="launched",
        message=(
            f"Launched: {estimate.total} credits held in escrow ({estimate.owners_max} for the "
            f"data owners at most, {estimate.fee} platform fee)."
        ),
        data={"max_cost": estimate.total},
    )
    if pending:
        job_event(
            job=job,
            kind="awaiting_approval",
            message=f"Waiting for {pending} dataset owner(s) to approve.",
        )
    else:
        _queue(job)
    return job


def _same_request(existing: FederatedJob, fingerprint: str) -> FederatedJob:
    if existing.request_hash != fingerprint:
        raise ConflictError(
            "That Idempotency-Key was used for a different job request.",
            code="idempotency_key_reused",
            details={"job_id": existing.pk},
        )
    return existing


def job_create_and_launch(
    *, trainer: User, spec: JobSpec, idempotency_key: str
) -> tuple[FederatedJob, bool]:
    """Create and launch in one transaction: ``(job, created)``. The same key with the same
    request returns the first job (created False) and charges nothing more; the same key with
    another request is 409; any refusal (400, 402, ...) leaves nothing behind."""
    key = _check_key(idempotency_key)
    fingerprint = spec.fingerprint()
    existing = FederatedJob.objects.filter(trainer_id=trainer.pk, idempotency_key=key).first()
    if existing is not None:
        return _same_request(existing, fingerprint), False
    try:
        with transaction.atomic():
            job = job_create(trainer=trainer, spec=spec)
            # Claim the key first: a concurrent request with it waits here, then fails.
            job.idempotency_key = key
            job.save(update_fields=["idempotency_key"])
            return job_launch(job=job, idempotency_key=key), True
    except IntegrityError:
        existing = FederatedJob.objects.filter(trainer_id=trainer.pk, idempotency_key=key).first()
        if existing is None:
            raise
        return _same_request(existing, fingerprint), False


# --- approvals -------------------------------------------------------------------------------


def _job_dataset_for_owner(job_dataset: JobDataset, user: User) -> JobDataset:
    jd = JobDataset.objects.select_related("dataset_version__dataset").get(pk=job_dataset.pk)
    if jd.dataset_version.dataset.owner_id != user.pk:
        raise NotFoundError("No such approval request.", code="approval_not_found")
    return jd


@transaction.atomic
def job_approve(*, job_dataset: JobDataset, user: User) -> FederatedJob:
    """The dataset's owner approves; when every dataset is approved the job is queued."""
    jd = _job_dataset_for_owner(job_dataset, user)
    job = _lock(jd.job)
    jd = JobDataset.objects.select_for_update().get(pk=jd.pk)
    if jd.approval == ApprovalState.APPROVED:
        return job
    if job.state != State.AWAITING_APPROVAL or jd.approval != ApprovalState.PENDING:
        raise ConflictError(
            f"The job is {job.state}; it awaits no approval.",
            code="not_awaiting_approval",
            details={"state": job.state},
        )
    jd.approval, jd.decided_by, jd.decided_at = ApprovalState.APPROVED, user, timezone.now()
    jd.save(update_fields=["approval", "decided_by", "decided_at"])
    job_event(
        job=job,
        kind="approved",
        message=f"{user.get_username()} approved dataset version {jd.dataset_version_id}.",
    )
    if not job.datasets.exclude(approval=ApprovalState.APPROVED).exists():
        _queue(job)
    return job


@transaction.atomic
def job_reject(*, job_dataset: JobDataset, user: User, note: str = "") -> FederatedJob:
    """The dataset's owner refuses: the job is cancelled and its escrow refunded in full."""
    jd = _job_dataset_for_owner(job_dataset, user)
    job = _lock(jd.job)
    jd = JobDataset.objects.select_for_update().get(pk=jd.pk)
    if job.state != State.AWAITING_APPROVAL or jd.approval != ApprovalState.PENDING:
        raise ConflictError(
            f"The job is {job.state}; it awaits no approval.",
            code="not_awaiting_approval",
            details={"state": job.state},
        )
    jd.approval, jd.decided_by, jd.decided_at = ApprovalState.REJECTED, user, timezone.now()
    jd.decision_note = note.strip()[:500]
    jd.save(update_fields=["approval", "decided_by", "decided_at", "decision_note"])
    reason = f"The owner of dataset {jd.dataset_version.dataset.name!r} declined the job" + (
        f": {jd.decision_note}" if jd.decision_note else "."
    )
    _finish(job, State.CANCELLED, reason)
    return job


# --- the coordinator's calls -----------------------------------------------------------------


def _site_url() -> str:
    return str(settings.ATELIER_SITE_URL or settings.SITE_URL).rstrip("/")


def _federation_dir() -> Path:
    return Path(settings.ATELIER_FEDERATION_DIR)


def job_credentials_path(*, job: FederatedJob) -> Path:
    """Where the coordinator writes the job's ServerApp credentials: in its out-dir, which
    the workers share with the SuperLink host and no node sees."""
    return credentials_path(job.out_dir)


def _run_config(job: FederatedJob) -> dict[str, Any]:
    """The Flower run config: every SuperNode reads it and the SuperLink keeps it in clear, so
    it holds nothing secret (the ServerApp's tokens go to its credentials file)."""
    c = job.config
    base_file = job.base_version.files.select_related("blob").get(is_primary=True)
    hashes = list(
        job.datasets.filter(approval=ApprovalState.APPROVED)
        .order_by("pk")
        .values_list("manifest_hash", flat=True)
    )
    site = _site_url()
    config: dict[str, Any] = {
        "job-id": job.flower_job_id,
        "out-dir": job.out_dir,
        "progress-url": f"{site}/api/v1/federated/jobs/{job.pk}/progress",
        "base-model-url": f"{site}/api/v1/federated/jobs/{job.pk}/base-model",
        "base-model-sha": base_file.blob_id,
        "dataset-manifests": ",".join(hashes),
        "prepare-timeout": PREPARE_TIMEOUT_SECONDS,
        "aggregation": c["aggregation"],
        "num-server-rounds": int(c["rounds"]),
        "min-nodes": int(c["min_nodes"]),
        "resolution": int(c["resolution"]),
        "local-steps": int(c["local_steps"]),
        "batch-size": int(c["batch_size"]),
        "lr": float(c["learning_rate"]),
        "rank": int(c["rank"]),
        "alpha": float(c["alpha"]),
        "adapter-mode": c["adapter_mode"],
        "buckets": bool(c.get("buckets", True)),
        "text-encoder-lora": bool(c.get("text_encoder_lora", False)),
        "seed": int(c["seed"]),
        "dp": "on" if c["dp"] else "off",
    }
    if c["dp"]:
        config.update(
            {
                "dp-target-epsilon": float(c["target_epsilon"]),
                "dp-delta": float(c["delta"]),
                "dp-max-grad-norm": float(c["max_grad_norm"]),
                "dp-planned-rounds": int(c["rounds"]),
            }
        )
    return config


@transaction.atomic
def job_run_config(*, job: FederatedJob) -> dict[str, object]:
    """The job's Flower run config, with no secret in it. Issues fresh ServerApp credentials
    (a progress token and a job token, only their hashes kept: the previous ones stop working)
    and writes them, with the map SuperLink node id -> the datasets that node serves in the
    job, into the 0600 credentials file in the job's out-dir (the SuperLink host's side: nodes
    never see it). Nodes fetch the base model with their own node token."""
    job = _lock(job)
    if job.state not in (State.QUEUED, State.RUNNING):
        raise ConflictError(
            f"The job is {job.state}; only a queued or running job runs.",
            code="bad_state",
            details={"state": job.state},
        )
    job_token, job.job_token_digest = secret_issue(JOB_TOKEN_PREFIX)
    progress_token, job.progress_token_digest = secret_issue(PROGRESS_TOKEN_PREFIX)
    if not job.out_dir:
        job.out_dir = str(_federation_dir() / job.flower_job_id)
    nodes = job_nodes(job=job)
    unbound = [n.node_id for n in nodes if not n.superlink_node_id]
    senders = {n.superlink_node_id: (n.node_id, n.manifests) for n in nodes if n.superlink_node_id}
    write_credentials(
        job.out_dir,
        job.flower_job_id,
        progress_token=progress_token,
        job_token=job_token,
        senders=senders,
    )
    job.save(update_fields=["job_token_digest", "progress_token_digest", "out_dir", "updated_at"])
    if unbound:
        # Some nodes known, some not: those replies will be refused (a warning). None known
        # (node authentication off: the demo on loopback): the federation's setting (info).
        level = JobEvent.Level.WARNING if senders else JobEvent.Level.INFO
        job_event(
            job=job,
            kind="nodes_unbound",
            level=level,
            message=(
                f"{len(unbound)} node(s) of this job have no SuperLink identity (node "
                "authentication off or key not registered): "
                + (
                    "their replies will be rejected."
                    if senders
                    else "replies are not bound to their senders."
                )
            ),
            data={"nodes": unbound},
        )
    return _run_config(job)


@transaction.atomic
def job_mark_running(*, job: FederatedJob, run_id: str) -> FederatedJob:
    """queued -> running with the Flower run id; the same run id again changes nothing."""
    run_id = str(run_id).strip()
    if not run_id:
        raise ApplicationError("A run id is required.", code="run_id_required")
    job = _lock(job)
    if job.state == State.RUNNING and job.run_id == run_id:
        return job
    if job.state != State.QUEUED:
        raise ConflictError(
            f"The job is {job.state} (run {job.run_id or 'none'}); only a "
            "queued job starts running.",
            code="bad_state",
            details={"state": job.state, "run_id": job.run_id},
        )
    job.state, job.run_id, job.started_at = State.RUNNING, run_id[:64], timezone.now()
    job.save(update_fields=["state", "run_id", "started_at", "updated_at"])
    job_event(job=job, kind="running", message=f"Flower run {run_id} started.")
    return job


@transaction.atomic
def job_run_resume(
    *, job: FederatedJob, run_id: str, previous_run_id: str, from_round: int
) -> FederatedJob:
    """A running job goes on in a new Flower run (the previous one was lost with the
    SuperLink) that resumes after round ``from_round``; the same run id again changes
    nothing. Rounds already recorded stay recorded (and paid) once."""
    run_id = str(run_id).strip()
    if not run_id:
        raise ApplicationError("A run id is required.", code="run_id_required")
    job = _lock(job)
    if job.state == State.RUNNING and job.run_id == run_id:
        return job
    if job.state != State.RUNNING or job.run_id != previous_run_id:
        raise ConflictError(
            f"The job is {job.state} (run {job.run_id or 'none'}); only a running job whose "
            f"run {previous_run_id} was lost resumes.",
            code="bad_state",
            details={"state": job.state, "run_id": job.run_id},
        )
    job.run_id = run_id[:64]
    job.save(update_fields=["run_id", "updated_at"])
    job_event(
        job=job,
        kind="run_resumed",
        message=(
            f"Flower run {previous_run_id} was lost (SuperLink restarted); run {run_id} resumes "
            + (f"after round {from_round}." if from_round else "from round 1.")
        ),
        data={"previous_run_id": previous_run_id, "run_id": run_id, "from_round": from_round},
    )
    return job


def job_token_check(*, job: FederatedJob, secret: str, kind: str) -> bool:
    """Whether ``secret`` is the job's current ``job`` or ``progress`` token."""
    digest = job.job_token_digest if kind == "job" else job.progress_token_digest
    return secret_matches(digest, secret)


def _finish(job: FederatedJob, state: str, reason: str) -> None:
    """Move a locked job to failed or cancelled, and settle what was earned."""
    job.state = state
    job.failure_reason = reason[:4000]
    job.finished_at = timezone.now()
    job.save(update_fields=["state", "failure_reason", "finished_at", "updated_at"])
    job_settle(job=job)
    level = JobEvent.Level.ERROR if state == State.FAILED else JobEvent.Level.WARNING
    job_event(
        job=job,
        kind=state,
        level=level,
        message=(
            f"{state.capitalize()}: {reason} Owners paid {job.owners_paid} credits for the rounds "
            f"completed, fee {job.fee_paid}, {job.refunded} refunded to the trainer."
        ),
    )


def job_complete(*, job: FederatedJob, out_dir: Path) -> FederatedJob:
    """running -> publishing -> completed: publish the LoRA, pay owners by participation and
    refund the rest. A finished job is returned unchanged (a second call publishes and pays
    nothing). Output that cannot be published fails the job (paying what was earned)."""
    with transaction.atomic():
        locked = lock_for_finish(job)
        if locked.is_terminal:
            return locked
        if locked.state != State.PUBLISHING:
            locked.state = State.PUBLISHING
            locked.out_dir = str(out_dir)
            locked.save(update_fields=["state", "out_dir", "updated_at"])
            job_event(job=locked, kind="publishing", message="The run finished; publishing.")
    # Committed: a crash from here on leaves "publishing", and reconcile calls this again.
    try:
        with transaction.atomic():
            locked = _lock(job)
            if locked.state != State.PUBLISHING:
                return locked
            version = job_publish(job=locked, out_dir=Path(out_dir))
            locked.result_version = version
            locked.state = State.COMPLETED
            locked.finished_at = timezone.now()
            locked.save(
                update_fields=[
                    "result_version",
                    "publish_note",
                    "state",
                    "finished_at",
                    "updated_at",
                ]
            )
            job_settle(job=locked)
            job_event(
                job=locked,
                kind="completed",
                message=(
                    f"Completed. Owners paid {locked.owners_paid} credits, fee {locked.fee_paid}, "
                    f"{locked.refunded} refunded to the trainer."
                ),
            )
            return locked
    except PublishError as err:
        log.warning("job %s: publishing failed: %s", job.pk, err.message)
        return job_fail(job=job, reason=f"Publishing failed: {err.message}")


@transaction.atomic
def job_fail(*, job: FederatedJob, reason: str) -> FederatedJob:
    """The run failed: pay what was earned in completed rounds, refund the rest, keep why.
    A finished job is returned unchanged."""
    locked = _lock(job)
    if locked.is_terminal:
        return locked
    _finish(locked, State.FAILED, reason.strip() or "The run failed.")
    return locked


@transaction.atomic
def job_cancel(*, job: FederatedJob, user: User) -> FederatedJob:
    """The trainer (or staff) cancels: pay what was earned, refund the rest; a started run is
    stopped by ``federated.tasks.job_stop``. Cancelling again changes nothing; a job being
    published or finished cannot be cancelled (409)."""
    locked = _lock(job)
    if not (user.pk == locked.trainer_id or user.is_staff):
        raise NotFoundError("No such job.", code="job_not_found")
    if locked.state == State.CANCELLED:
        return locked
    if locked.is_terminal or locked.state == State.PUBLISHING:
        raise ConflictError(
            f"The job is {locked.state}; it can no longer be cancelled.",
            code="job_finished",
            details={"state": locked.state},
        )
    started = locked.state in (State.QUEUED, State.RUNNING)
    _finish(locked, State.CANCELLED, f"Cancelled by {user.get_username()}.")
    if started:
        _enqueue("job_stop", locked.pk)
    return locked
