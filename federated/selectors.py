"""Reads beyond a plain get: nodes, federated datasets with budgets and earnings, jobs with
their rounds, the approval inbox, and the jobs the coordinator reconciles."""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.db.models import Count, Prefetch, QuerySet, Sum
from django.db.models.functions import Coalesce

from federated.models import (
    TRAINABLE_FAMILIES,
    ApprovalState,
    DatasetTerms,
    FederatedJob,
    JobDataset,
    JobEvent,
    JobRound,
    Node,
    PrivacySpend,
    TrainingUse,
)
from registry.access import can_view_dataset
from registry.models import (
    DatasetKind,
    FileLayout,
    ModelKind,
    ModelVersion,
    SampleImage,
    visible_q,
)
from registry.selectors.versions import visible_versions

User = AuthUser | AnonymousUser
State = FederatedJob.State


# --- nodes -----------------------------------------------------------------------------------


def nodes_of_owner(*, owner: AuthUser, include_revoked: bool = False) -> QuerySet[Node]:
    qs = Node.objects.filter(owner_id=owner.pk).prefetch_related(
        Prefetch(
            "datasets", queryset=DatasetTerms.objects.select_related("dataset_version__dataset")
        )
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
        jobs[row.dataset_version_id].append(JobSpend(job.pk, job.name, job.state, spent, reserved))
        seen.add((row.dataset_version_id, job.pk))
    for (dv_id, job_id), eps in spends.items():  # spends of jobs no longer listed (defensive)
        if (dv_id, job_id) not in seen and job_id != exclude_job_id:
            jobs[dv_id].append(JobSpend(job_id, "", "", eps, 0.0))
    return {
        t.dataset_version_id: Budget(
            epsilon_per_job=t.epsilon_per_job,
            epsilon_lifetime=t.epsilon_lifetime,
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
    visible = visible_q(user, via="dataset_version__dataset__", staff_sees_all=False)
    return (
        DatasetTerms.objects.filter(
            visible,
            node__revoked_at__isnull=True,
            dataset_version__dataset__kind=DatasetKind.PRIVATE,
        )
        .select_related("dataset_version__dataset__owner", "node")
        .order_by("-created_at", "-pk")
    )


def federated_terms_for(*, dataset_version_id: int, user: User) -> DatasetTerms | None:
    """A dataset's terms as ``user`` may see them (owner and staff: always)."""
    terms = (
        DatasetTerms.objects.select_related("dataset_version__dataset__owner", "node")
        .filter(dataset_version_id=dataset_version_id)
        .first()
    )
    if terms is None:
        return None
    return terms if can_view_dataset(user, terms.dataset_version.dataset) else None


@dataclass(frozen=True)
class OwnerDataset:
    """One of an owner's federated datasets, for the owner's dashboard."""

    terms: DatasetTerms
    budget: Budget
    earned: int
    jobs: int


def earnings_by_dataset(*, owner: AuthUser) -> dict[int, tuple[int, int]]:
    """``{dataset_version_id: (credits earned, settled jobs)}`` for the owner's datasets."""
    rows = (
        JobDataset.objects.filter(
            dataset_version__dataset__owner_id=owner.pk, job__settled_at__isnull=False
        )
        .values("dataset_version_id")
        .annotate(total=Coalesce(Sum("earned"), 0), jobs=Count("pk"))
    )
    return {r["dataset_version_id"]: (int(r["total"]), int(r["jobs"])) for r in rows}


def datasets_of_owner(*, owner: AuthUser) -> list[OwnerDataset]:
    """The owner's federated datasets with budget spent and remaining, and earnings."""
    terms = list(
        DatasetTerms.objects.filter(dataset_version__dataset__owner_id=owner.pk)
        .select_related("dataset_version__dataset", "node")
        .order_by("-created_at", "-pk")
    )
    budgets = dataset_budgets(terms)
    earnings = earnings_by_dataset(owner=owner)
    return [
        OwnerDataset(t, budgets[t.dataset_version_id], *earnings.get(t.dataset_version_id, (0, 0)))
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
        JobDataset.objects.filter(
            dataset_version_id=terms.dataset_version_id, job__settled_at__isnull=False
        )
        .select_related("job")
        .order_by("-job_id")
    )
    return [
        DatasetEarning(
            r.job_id, r.job.name, r.job.state, r.rounds_completed, r.example_rounds, r.earned
        )
        for r in rows
    ]


# --- jobs ----------------------------------------------------------------------------------------


def jobs_to_reconcile() -> QuerySet[FederatedJob]:
    """Jobs the coordinator must drive or check against the SuperLink."""
    return FederatedJob.objects.filter(
        state__in=[State.QUEUED, State.RUNNING, State.PUBLISHING]
    ).order_by("pk")


def jobs_of_trainer(*, trainer: AuthUser) -> QuerySet[FederatedJob]:
    return (
        FederatedJob.objects.filter(trainer_id=trainer.pk)
        .select_related("base_version__model", "result_version__model")
        .order_by("-created_at", "-pk")
    )


def _job_queryset(*, dataset_owner_id: int | None = None) -> QuerySet[FederatedJob]:
    """Jobs with their datasets and rounds; ``dataset_owner_id``: only that owner's datasets."""
    datasets = JobDataset.objects.select_related("dataset_version__dataset__owner").order_by("pk")
    if dataset_owner_id is not None:
        datasets = datasets.filter(dataset_version__dataset__owner_id=dataset_owner_id)
    return FederatedJob.objects.select_related(
        "trainer", "base_version__model", "result_version__model"
    ).prefetch_related(
        Prefetch("datasets", queryset=datasets),
        Prefetch("rounds", queryset=JobRound.objects.order_by("index")),
    )


def job_visible_to(*, job: FederatedJob, user: User) -> bool:
    """Trainer and staff see a job; owners of its datasets see it too (approvals, earnings)."""
    if not user.is_authenticated:
        return False
    if user.pk == job.trainer_id or user.is_staff:
        return True
    return job.datasets.filter(dataset_version__dataset__owner_id=user.pk).exists()


def job_sees_everything(*, job: FederatedJob, user: User) -> bool:
    """The trainer and staff see every dataset's line and the job's money; a data owner
    whose dataset is in the job sees only their own lines (never another owner's earnings)."""
    return bool(user.is_authenticated and (user.pk == job.trainer_id or user.is_staff))


def job_detail(*, job_id: int, user: User) -> FederatedJob | None:
    """The job with its datasets (approval, participation, earnings) and rounds (loss and
    epsilon per round), for those who may see it: a data owner gets only their datasets."""
    job = _job_queryset().filter(pk=job_id).first()
    if job is None or not job_visible_to(job=job, user=user):
        return None
    if job_sees_everything(job=job, user=user):
        return job
    return _job_queryset(dataset_owner_id=user.pk).get(pk=job_id)


def job_rounds(*, job: FederatedJob, after: int = 0) -> QuerySet[JobRound]:
    return JobRound.objects.filter(job_id=job.pk, index__gt=after).order_by("index")


def job_events(*, job: FederatedJob, limit: int = 200) -> list[JobEvent]:
    return list(reversed(JobEvent.objects.filter(job_id=job.pk).order_by("-pk")[:limit]))


def approval_inbox(*, owner: AuthUser, pending_only: bool = True) -> QuerySet[JobDataset]:
    """Requests to train on the owner's datasets (manual approval), newest first."""
    qs = (
        JobDataset.objects.filter(
            dataset_version__dataset__owner_id=owner.pk,
            auto_approved=False,
        )
        .exclude(job__state=State.DRAFT)
        .exclude(job__trainer_id=owner.pk)
    )
    if pending_only:
        qs = qs.filter(approval=ApprovalState.PENDING, job__state=State.AWAITING_APPROVAL)
    return qs.select_related(
        "job__trainer", "job__base_version__model", "dataset_version__dataset"
    ).order_by("-job__created_at", "-pk")


# --- the web pages (additions) ---------------------------------------------------------------


def base_versions_for_training(*, user: User, limit: int = 200) -> QuerySet[ModelVersion]:
    """Checkpoint versions the trainer may pick in the wizard: visible, of a trainable family,
    whose own license allows derivatives. The launch checks the rest (ancestors' licenses,
    entitlement, the file's format) and refuses with its reason."""
    from marketplace.models import License

    no_derivatives = License.objects.filter(derivatives_allowed=False).values("code")
    return (
        visible_versions(user)
        .filter(
            model__kind=ModelKind.CHECKPOINT,
            base_model__in=TRAINABLE_FAMILIES,
            layout=FileLayout.SINGLE_FILE,
        )
        .exclude(license_code__in=no_derivatives)
        .order_by("model__name", "-created_at", "-pk")[:limit]
    )


def owned_federated_terms(*, dataset_version_id: int, user: User) -> DatasetTerms | None:
    """A federated dataset's terms for its owner (and staff); None for anyone else."""
    terms = federated_terms_for(dataset_version_id=dataset_version_id, user=user)
    if terms is None or not user.is_authenticated:
        return None
    if user.pk != terms.dataset_version.dataset.owner_id and not user.is_staff:
        return None
    return terms


@dataclass(frozen=True)
class SettledEarning:
    """What a dataset earned in one settled job, and when the job settled."""

    job_id: int
    job_name: str
    state: str
    rounds_completed: int
    example_rounds: int
    earned: int
    settled_at: datetime.datetime


def dataset_earnings_timeline(*, terms: DatasetTerms) -> list[SettledEarning]:
    """The dataset's earnings per settled job, oldest settlement first."""
    rows = (
        JobDataset.objects.filter(
            dataset_version_id=terms.dataset_version_id, job__settled_at__isnull=False
        )
        .select_related("job")
        .order_by("job__settled_at", "job_id")
    )
    return [
        SettledEarning(
            r.job_id,
            r.job.name,
            r.job.state,
            r.rounds_completed,
            r.example_rounds,
            r.earned,
            r.job.settled_at,  # type: ignore[arg-type]  # filtered not null
        )
        for r in rows
    ]


@dataclass(frozen=True)
class RoundNode:
    """One node's reply in a round: the dataset it trained on (None: not in the job)."""

    node_id: str
    dataset_version_id: int | None
    dataset: str
    examples: int
    epsilon: float | None


@dataclass(frozen=True)
class RoundRow:
    index: int
    train_loss: float | None
    num_examples: int
    seconds: float | None
    bytes_out_per_node: int
    epsilon_max: float | None
    nodes: list[RoundNode]
    refused: dict[str, str]
    no_reply: list[str]
    grid_url: str = ""  # the round's sample grid (public media), "" when none

    def epsilon_of(self, dataset_version_id: int) -> float | None:
        values = [
            n.epsilon
            for n in self.nodes
            if n.dataset_version_id == dataset_version_id and n.epsilon is not None
        ]
        return max(values) if values else None


def job_round_rows(*, job: FederatedJob, own_only: bool = False) -> list[RoundRow]:
    """The job's rounds with each node's reply mapped to its dataset (through the round's
    ``node_datasets``), from a job loaded by :func:`job_detail` (no further query).

    ``own_only`` (a data owner's view, whose job holds only their datasets): other nodes'
    replies, refusals and silences are left out."""
    datasets = {jd.manifest_hash: jd for jd in job.datasets.all()}
    rows: list[RoundRow] = []
    for r in job.rounds.all():
        nodes = []
        for node_id, metrics in sorted(r.nodes.items()):
            jd = datasets.get(str(r.node_datasets.get(node_id, "")))
            if own_only and jd is None:
                continue
            epsilon = metrics.get("epsilon")
            nodes.append(
                RoundNode(
                    node_id,
                    jd.dataset_version_id if jd else None,
                    jd.dataset_version.dataset.name if jd else "",
                    int(metrics.get("num-examples", 0)),
                    float(epsilon) if epsilon is not None and epsilon >= 0 else None,
                )
            )
        rows.append(
            RoundRow(
                r.index,
                r.train_loss,
                r.num_examples,
                r.seconds,
                r.bytes_out_per_node,
                r.epsilon_max,
                nodes,
                {} if own_only else {str(k): str(v) for k, v in r.refused.items()},
                [] if own_only else [str(n) for n in r.no_reply],
                r.sample_grid.url if r.sample_grid else "",
            )
        )
    return rows


def job_samples(*, job: FederatedJob) -> list[SampleImage]:
    """Sample images of the job's result (the engine's grid per round lands on the published
    LoRA version, with the round in its parameters)."""
    if job.result_version_id is None:
        return []
    return list(
        SampleImage.objects.filter(version_id=job.result_version_id).order_by("created_at", "pk")
    )


def jobs_of_trainer_with_progress(*, trainer: AuthUser) -> QuerySet[FederatedJob]:
    """The trainer's jobs (as :func:`jobs_of_trainer`) with ``rounds_done`` counted."""
    return jobs_of_trainer(trainer=trainer).annotate(rounds_done=Count("rounds"))


@dataclass(frozen=True)
class JobNode:
    """A node that serves approved datasets of a job: its SuperLink identity ("" if unknown)."""

    node_id: int
    superlink_node_id: str
    manifests: tuple[str, ...]


def job_nodes(*, job: FederatedJob) -> list[JobNode]:
    """The active nodes serving the job's approved datasets, with the manifests each serves."""
    rows = (
        JobDataset.objects.filter(
            job=job,
            approval=ApprovalState.APPROVED,
            dataset_version__federated_terms__node__revoked_at__isnull=True,
        )
        .order_by("dataset_version__federated_terms__node_id", "pk")
        .values_list(
            "dataset_version__federated_terms__node_id",
            "dataset_version__federated_terms__node__superlink_node_id",
            "manifest_hash",
        )
    )
    nodes: dict[int, tuple[str, list[str]]] = {}
    for node_id, superlink_id, manifest in rows:
        nodes.setdefault(node_id, (superlink_id or "", []))[1].append(manifest)
    return [JobNode(pk, sid, tuple(m)) for pk, (sid, m) in nodes.items()]


def node_serves_job(*, node: Node, job: FederatedJob) -> bool:
    """Whether ``node`` (active) serves an approved dataset of ``job``."""
    return (
        node.revoked_at is None
        and JobDataset.objects.filter(
            job=job, approval=ApprovalState.APPROVED, dataset_version__federated_terms__node=node
        ).exists()
    )


def superlink_node_ids(*, node_ids: Iterable[int]) -> dict[int, str]:
    """Site node id -> the SuperLink's node id, for the active nodes whose key the site
    registered on the SuperLink (SuperNode authentication); others are left out."""
    return dict(
        Node.objects.filter(pk__in=list(node_ids), revoked_at__isnull=True)
        .exclude(superlink_node_id="")
        .values_list("pk", "superlink_node_id")
    )


# --- what buyers see: a private dataset's offer, a LoRA's training record ----------------------


@dataclass(frozen=True)
class DatasetOffer:
    """A private dataset version's terms as a trainer reads them on its public page."""

    terms: DatasetTerms
    budget: Budget
    jobs_left: int  # whole jobs the remaining budget allows at the per-job epsilon
    is_owner: bool
    available: bool  # its node is not revoked: a job may pick it
    use_labels: list[str]


def dataset_offer(*, dataset_version_id: int, user: User) -> DatasetOffer | None:
    """The terms of a federated dataset version ``user`` may see, with its budget left;
    None for a version without terms (a public dataset) or one hidden from ``user``."""
    terms = federated_terms_for(dataset_version_id=dataset_version_id, user=user)
    if terms is None:
        return None
    budget = dataset_budget(terms=terms)
    jobs_left = int(budget.remaining // terms.epsilon_per_job) if terms.epsilon_per_job else 0
    return DatasetOffer(
        terms=terms,
        budget=budget,
        jobs_left=jobs_left,
        is_owner=bool(user.is_authenticated and user.pk == terms.dataset_version.dataset.owner_id),
        available=terms.node.revoked_at is None,
        use_labels=[
            str(TrainingUse(u).label) for u in terms.allowed_uses if u in TrainingUse.values
        ],
    )


@dataclass(frozen=True)
class TrainedDataset:
    """One dataset a LoRA was trained on, as its model page shows it: linked when the viewer
    may see the dataset, with the epsilon the job spent on it."""

    name: str
    dataset_id: int | None  # None: hidden from this viewer (named "a private dataset")
    dataset_slug: str
    dataset_version_id: int
    rounds_completed: int
    examples: int
    epsilon: float | None


@dataclass(frozen=True)
class TrainingRecord:
    """How a LoRA published by a federated job was trained: the job's rounds, its datasets
    and the privacy it spent; ``job_visible``: whether the viewer may open the job page."""

    job: FederatedJob
    rounds_done: int
    datasets: list[TrainedDataset]
    epsilon_spent: float | None
    job_visible: bool


def training_record(*, version: ModelVersion, user: User) -> TrainingRecord | None:
    """The federated job that published ``version`` (None when it was uploaded)."""
    job = (
        FederatedJob.objects.select_related("trainer")
        .annotate(rounds_done=Count("rounds"))
        .filter(result_version_id=version.pk)
        .first()
    )
    if job is None:
        return None
    spends = {
        s.dataset_version_id: s.epsilon
        for s in PrivacySpend.objects.filter(job_id=job.pk).order_by("pk")
    }
    rows = (
        JobDataset.objects.filter(job_id=job.pk)
        .exclude(approval=ApprovalState.REJECTED)
        .select_related("dataset_version__dataset")
        .order_by("pk")
    )
    datasets = []
    for row in rows:
        dataset = row.dataset_version.dataset
        visible = can_view_dataset(user, dataset)
        datasets.append(
            TrainedDataset(
                name=dataset.name if visible else "",
                dataset_id=dataset.pk if visible else None,
                dataset_slug=dataset.slug if visible else "",
                dataset_version_id=row.dataset_version_id,
                rounds_completed=row.rounds_completed,
                examples=row.examples,
                epsilon=spends.get(row.dataset_version_id),
            )
        )
    spent = [e for e in spends.values() if e is not None]
    return TrainingRecord(
        job=job,
        rounds_done=int(getattr(job, "rounds_done", 0)),
        datasets=datasets,
        epsilon_spent=max(spent) if spent else None,
        job_visible=job_visible_to(job=job, user=user),
    )
