"""Reads beyond a plain get: nodes, federated datasets with budgets and earnings, jobs with
their rounds, the approval inbox, and the jobs the coordinator reconciles."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from federated.models import (
    ApprovalState,
    DatasetTerms,
    FederatedJob,
    JobDataset,
    JobEvent,
    JobRound,
    Node,
    PrivacySpend,
)
from registry.models import DatasetKind, Visibility

User = AbstractBaseUser | AnonymousUser
State = FederatedJob.State


# --- nodes -----------------------------------------------------------------------------------


def nodes_of_owner(*, owner: AbstractBaseUser, include_revoked: bool = False) -> QuerySet[Node]:
    qs = Node.objects.filter(owner_id=owner.pk).prefetch_related(
        Prefetch("datasets", queryset=DatasetTerms.objects.select_related(
            "dataset_version__dataset"))
    )
    return qs if include_revoked else qs.filter(revoked_at__isnull=True)


# --- datasets and privacy budgets ---------------------------------------------------------------


@dataclass(frozen=True)
class JobSpend:
    job_id: int
    job_name: str
    state: str
    epsilon: float  # reported by the nodes (the largest)
    reserved: float  # target not yet reported, held while the job is active


@dataclass(frozen=True)
class Budget:
    """A dataset version's privacy budget as the site's ledger shows it."""

    epsilon_per_job: float
    epsilon_lifetime: float
    delta: float
    spent: float
    reserved: float
    jobs: list[JobSpend] = field(default_factory=list)

    @property
    def remaining(self) -> float:
        return max(0.0, self.epsilon_lifetime - self.spent - self.reserved)


def dataset_budgets(
    terms: Iterable[DatasetTerms], *, exclude_job_id: int | None = None
) -> dict[int, Budget]:
    """Budgets by dataset version id. Spent: the sum over jobs of the epsilon reported;
    reserved: what active DP jobs may still spend (their target minus what they reported)."""
    terms = list(terms)
    ids = [t.dataset_version_id for t in terms]
    spends: dict[tuple[int, int], float] = {
        (s.dataset_version_id, s.job_id): s.epsilon
        for s in PrivacySpend.objects.filter(dataset_version_id__in=ids)
    }
    rows = (
        JobDataset.objects.filter(dataset_version_id__in=ids)
        .exclude(approval=ApprovalState.REJECTED)
        .select_related("job")
        .order_by("job_id")
    )
    jobs: dict[int, list[JobSpend]] = defaultdict(list)
    seen: set[tuple[int, int]] = set()
    for row in rows:
        job = row.job
        if job.pk == exclude_job_id or job.state == State.DRAFT:
            continue
        spent = spends.get((row.dataset_version_id, job.pk), 0.0)
        target = job.target_epsilon or 0.0
        reserved = max(0.0, target - spent) if job.state in FederatedJob.ACTIVE else 0.0
        jobs[row.dataset_version_id].append(
            JobSpend(job.pk, job.name, job.state, spent, reserved))
        seen.add((row.dataset_version_id, job.pk))
    for (dv_id, job_id), eps in spends.items():  # spends of jobs no longer listed (defensive)
        if (dv_id, job_id) not in seen and job_id != exclude_job_id:
            jobs[dv_id].append(JobSpend(job_id, "", "", eps, 0.0))
    return {
        t.dataset_version_id: Budget(
            epsilon_per_job=t.epsilon_per_job, epsilon_lifetime=t.epsilon_lifetime,
            delta=t.delta,
            spent=sum(j.epsilon for j in jobs[t.dataset_version_id]),
            reserved=sum(j.reserved for j in jobs[t.dataset_version_id]),
            jobs=jobs[t.dataset_version_id],
        )
        for t in terms
    }


def dataset_budget(*, terms: DatasetTerms) -> Budget:
    return dataset_budgets([terms])[terms.dataset_version_id]


def federated_datasets_available(*, user: User) -> QuerySet[DatasetTerms]:
    """Private datasets a trainer may pick: listed (not private, not removed), node active."""
    visible = Q(dataset_version__dataset__is_removed=False) & ~Q(
        dataset_version__dataset__visibility=Visibility.PRIVATE)
    if user.is_authenticated:
        visible |= Q(dataset_version__dataset__owner_id=user.pk)
    return (
        DatasetTerms.objects.filter(visible, node__revoked_at__isnull=True,
                                    dataset_version__dataset__kind=DatasetKind.PRIVATE)
        .select_related("dataset_version__dataset__owner", "node")
        .order_by("-created_at", "-pk")
    )


def federated_terms_for(*, dataset_version_id: int, user: User) -> DatasetTerms | None:
    """A dataset's terms as ``user`` may see them (owner and staff: always)."""
    terms = (
        DatasetTerms.objects.select_related("dataset_version__dataset__owner", "node")
        .filter(dataset_version_id=dataset_version_id).first()
    )
    if terms is None:
        return None
    dataset = terms.dataset_version.dataset
    if user.is_authenticated and (user.pk == dataset.owner_id or user.is_staff):
        return terms
    if dataset.is_removed or dataset.visibility == Visibility.PRIVATE:
        return None
    return terms


@dataclass(frozen=True)
class OwnerDataset:
    """One of an owner's federated datasets, for the owner's dashboard."""

    terms: DatasetTerms
    budget: Budget
    earned: int
    jobs: int


def earnings_by_dataset(*, owner: AbstractBaseUser) -> dict[int, tuple[int, int]]:
    """``{dataset_version_id: (credits earned, settled jobs)}`` for the owner's datasets."""
    rows = (
        JobDataset.objects.filter(dataset_version__dataset__owner_id=owner.pk,
                                  job__settled_at__isnull=False)
        .values("dataset_version_id")
        .annotate(total=Coalesce(Sum("earned"), 0), jobs=Count("pk"))
    )
    return {r["dataset_version_id"]: (int(r["total"]), int(r["jobs"])) for r in rows}


def datasets_of_owner(*, owner: AbstractBaseUser) -> list[OwnerDataset]:
    """The owner's federated datasets with budget spent and remaining, and earnings."""
    terms = list(
        DatasetTerms.objects.filter(dataset_version__dataset__owner_id=owner.pk)
        .select_related("dataset_version__dataset", "node")
        .order_by("-created_at", "-pk")
    )
    budgets = dataset_budgets(terms)
    earnings = earnings_by_dataset(owner=owner)
    return [
        OwnerDataset(t, budgets[t.dataset_version_id],
                     *earnings.get(t.dataset_version_id, (0, 0)))
        for t in terms
    ]


@dataclass(frozen=True)
class DatasetEarning:
    job_id: int
    job_name: str
    state: str
    rounds_completed: int
    example_rounds: int
    earned: int


def earnings_for_dataset(*, terms: DatasetTerms) -> list[DatasetEarning]:
    rows = (
        JobDataset.objects.filter(dataset_version_id=terms.dataset_version_id,
                                  job__settled_at__isnull=False)
        .select_related("job").order_by("-job_id")
    )
    return [
        DatasetEarning(r.job_id, r.job.name, r.job.state, r.rounds_completed, r.example_rounds,
                       r.earned)
        for r in rows
    ]


# --- jobs ----------------------------------------------------------------------------------------


def jobs_to_reconcile() -> QuerySet[FederatedJob]:
    """Jobs the coordinator must drive or check against the SuperLink."""
    return FederatedJob.objects.filter(
        state__in=[State.QUEUED, State.RUNNING, State.PUBLISHING]
    ).order_by("pk")


def jobs_of_trainer(*, trainer: AbstractBaseUser) -> QuerySet[FederatedJob]:
    return (
        FederatedJob.objects.filter(trainer_id=trainer.pk)
        .select_related("base_version__model", "result_version__model")
        .order_by("-created_at", "-pk")
    )


def _job_queryset() -> QuerySet[FederatedJob]:
    return FederatedJob.objects.select_related(
        "trainer", "base_version__model", "result_version__model"
    ).prefetch_related(
        Prefetch("datasets", queryset=JobDataset.objects.select_related(
            "dataset_version__dataset__owner").order_by("pk")),
        Prefetch("rounds", queryset=JobRound.objects.order_by("index")),
    )


def job_visible_to(*, job: FederatedJob, user: User) -> bool:
    """Trainer and staff see a job; owners of its datasets see it too (approvals, earnings)."""
    if not user.is_authenticated:
        return False
    if user.pk == job.trainer_id or user.is_staff:
        return True
    return job.datasets.filter(dataset_version__dataset__owner_id=user.pk).exists()


def job_detail(*, job_id: int, user: User) -> FederatedJob | None:
    """The job with its datasets (approval, participation, earnings) and rounds (loss and
    epsilon per round), for those who may see it."""
    job = _job_queryset().filter(pk=job_id).first()
    if job is None or not job_visible_to(job=job, user=user):
        return None
    return job


def job_rounds(*, job: FederatedJob, after: int = 0) -> QuerySet[JobRound]:
    return JobRound.objects.filter(job_id=job.pk, index__gt=after).order_by("index")


def job_events(*, job: FederatedJob, limit: int = 200) -> list[JobEvent]:
    return list(reversed(JobEvent.objects.filter(job_id=job.pk).order_by("-pk")[:limit]))


def approval_inbox(*, owner: AbstractBaseUser, pending_only: bool = True) -> QuerySet[JobDataset]:
    """Requests to train on the owner's datasets (manual approval), newest first."""
    qs = JobDataset.objects.filter(
        dataset_version__dataset__owner_id=owner.pk, auto_approved=False,
    ).exclude(job__state=State.DRAFT).exclude(job__trainer_id=owner.pk)
    if pending_only:
        qs = qs.filter(approval=ApprovalState.PENDING, job__state=State.AWAITING_APPROVAL)
    return qs.select_related(
        "job__trainer", "job__base_version__model", "dataset_version__dataset"
    ).order_by("-job__created_at", "-pk")
