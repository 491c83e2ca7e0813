"""Federated training on the site: data owners' nodes, private-dataset terms, jobs, rounds,
the privacy-budget mirror and the job log.

Every write goes through ``federated.services``; reads beyond a plain get go through
``federated.selectors``. A job changes state only through :mod:`federated.services.jobs`.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from marketplace.models import EscrowHold, LedgerTransaction
from registry.models import BaseModelFamily, DatasetVersion, ModelVersion

# Families the engine can train (SDXL with its pooled embeddings and size ids, issue #20).
# Here, below the selectors (the wizard's list) and the job spec (the launch check), both use it.
TRAINABLE_FAMILIES = (BaseModelFamily.SD1, BaseModelFamily.SD2, BaseModelFamily.SDXL)

# A node is online when it sent a heartbeat within this many seconds.
NODE_ONLINE_SECONDS = 120


class Node(models.Model):
    """A data owner's SuperNode: its public key (Flower node authentication) and site token.

    The token (``atn_...``) is shown once when the node is registered; only its SHA-256 is kept.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="federated_nodes"
    )
    name = models.CharField(max_length=100)
    public_key = models.TextField(help_text="OpenSSH public key, ECDSA or ed25519, no comment.")
    key_type = models.CharField(max_length=40)
    key_fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the key blob, hex.")
    token_prefix = models.CharField(max_length=12)
    token_digest = models.CharField(max_length=64, unique=True)
    flwr_node_id = models.CharField(max_length=40, blank=True)
    # The SuperLink's node id for this node's key (Flower node authentication): a uint64 as a
    # decimal string (up to 20 digits; 2**64 - 1 does not fit a signed bigint). Empty until the
    # site has registered the key on the SuperLink.
    superlink_node_id = models.CharField(max_length=20, blank=True, default="")
    # When the key was removed from the SuperLink after the node was revoked (NULL: not yet).
    superlink_unregistered_at = models.DateTimeField(null=True, blank=True)
    software_version = models.CharField(max_length=60, blank=True)
    serving = models.JSONField(
        default=list, blank=True, help_text="Manifest hashes the node said it serves."
    )
    last_seen_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at", "-pk")
        constraints = [
            models.UniqueConstraint(
                fields=("key_fingerprint",),
                condition=models.Q(revoked_at__isnull=True),
                name="node_active_key_unique",
            ),
            models.UniqueConstraint(
                fields=("superlink_node_id",),
                condition=models.Q(revoked_at__isnull=True) & ~models.Q(superlink_node_id=""),
                name="node_active_superlink_id_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.owner_id})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def status_at(self, now: datetime.datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if (
            self.last_seen_at is not None
            and (now - self.last_seen_at).total_seconds() <= NODE_ONLINE_SECONDS
        ):
            return "online"
        return "offline"

    @property
    def status(self) -> str:
        return self.status_at(timezone.now())


class ApprovalMode(models.TextChoices):
    AUTO = "auto", "Automatic"
    MANUAL = "manual", "Manual (the owner approves each job)"


class TrainingUse(models.TextChoices):
    """What a job trains the LoRA for; a dataset's terms list the uses it allows."""

    RESEARCH = "research", "Research and evaluation"
    STYLE = "style", "An art style"
    SUBJECT = "subject", "A subject or character"
    CONCEPT = "concept", "A concept or object"


class DatasetTerms(models.Model):
    """The terms on which a private dataset version may be trained on, and who serves it."""

    dataset_version = models.OneToOneField(
        DatasetVersion, on_delete=models.PROTECT, related_name="federated_terms"
    )
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="datasets")
    price_per_example_round = models.BigIntegerField(default=0)
    price_per_job = models.BigIntegerField(default=0)
    allowed_families = models.JSONField(default=list)
    allowed_uses = models.JSONField(default=list)
    commercial_use = models.BooleanField(
        default=False, help_text="Whether models trained on it may be used commercially."
    )
    epsilon_per_job = models.FloatField()
    delta = models.FloatField()
    epsilon_lifetime = models.FloatField()
    approval = models.CharField(
        max_length=10, choices=ApprovalMode.choices, default=ApprovalMode.AUTO
    )
    require_dp = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "dataset terms"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(price_per_example_round__gte=0, price_per_job__gte=0),
                name="terms_prices_gte0",
            ),
            models.CheckConstraint(
                condition=~models.Q(price_per_example_round__gt=0, price_per_job__gt=0),
                name="terms_one_pricing",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    epsilon_per_job__gt=0, epsilon_lifetime__gte=models.F("epsilon_per_job")
                ),
                name="terms_epsilon_range",
            ),
            models.CheckConstraint(
                condition=models.Q(delta__gt=0, delta__lt=1), name="terms_delta_range"
            ),
        ]

    def __str__(self) -> str:
        return f"terms of dataset version {self.dataset_version_id}"

    @property
    def pricing(self) -> str:
        return "job" if self.price_per_job > 0 else "example_round"


class FederatedJob(models.Model):
    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PUBLISHING = "publishing", "Publishing"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        # The run finished but a data owner's node vetoed the release (its release check found
        # its images reproduced): nothing is published (federated/engine/release_check.py).
        WITHHELD = "withheld", "Withheld (a data owner vetoed the release)"

    trainer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="federated_jobs"
    )
    name = models.CharField(max_length=200)
    base_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="federated_jobs"
    )
    state = models.CharField(
        max_length=20, choices=State.choices, default=State.DRAFT, db_index=True
    )
    config = models.JSONField(default=dict, help_text="Hyperparameters (see JobSpec).")
    use = models.CharField(max_length=20, choices=TrainingUse.choices)
    commercial_use = models.BooleanField(default=False)
    trigger_word = models.CharField(max_length=100, blank=True)
    run_id = models.CharField(max_length=64, blank=True)
    out_dir = models.CharField(max_length=500, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)
    fee_bps = models.IntegerField(default=0)
    max_cost = models.BigIntegerField(default=0, help_text="Held in escrow: owners' maximum + fee.")
    escrow = models.OneToOneField(
        EscrowHold, null=True, blank=True, on_delete=models.PROTECT, related_name="federated_job"
    )
    job_token_digest = models.CharField(max_length=64, blank=True)
    progress_token_digest = models.CharField(max_length=64, blank=True)
    result_version = models.OneToOneField(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="federated_job_result",
    )
    publish_note = models.TextField(blank=True)
    owners_paid = models.BigIntegerField(default=0)
    fee_paid = models.BigIntegerField(default=0)
    refunded = models.BigIntegerField(default=0)
    settlement = models.OneToOneField(
        LedgerTransaction,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="federated_job",
    )
    settled_at = models.DateTimeField(null=True, blank=True)
    # The release check's counts (asked, allowed, vetoed, no-answer): never a score or an image.
    release_check = models.JSONField(default=dict, blank=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    TERMINAL = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED, State.WITHHELD})
    ACTIVE = frozenset({State.AWAITING_APPROVAL, State.QUEUED, State.RUNNING, State.PUBLISHING})

    class Meta:
        ordering = ("-created_at", "-pk")
        constraints = [
            models.UniqueConstraint(
                fields=("trainer", "idempotency_key"),
                condition=~models.Q(idempotency_key=""),
                name="fedjob_trainer_key_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    max_cost__gte=0, owners_paid__gte=0, fee_paid__gte=0, refunded__gte=0
                ),
                name="fedjob_amounts_gte0",
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} {self.name} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL

    @property
    def num_rounds(self) -> int:
        return int(self.config.get("rounds", 0))

    @property
    def dp_enabled(self) -> bool:
        return bool(self.config.get("dp", True))

    @property
    def target_epsilon(self) -> float | None:
        value = self.config.get("target_epsilon")
        return float(value) if self.dp_enabled and value is not None else None

    @property
    def flower_job_id(self) -> str:
        """The ``job-id`` of the Flower run config (keys the nodes' privacy ledgers)."""
        return f"job-{self.pk}"


class ApprovalState(models.TextChoices):
    PENDING = "pending", "Waiting for the owner"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class JobDataset(models.Model):
    """A dataset in a job: the owner's approval, the prices agreed, participation, earnings."""

    job = models.ForeignKey(FederatedJob, on_delete=models.CASCADE, related_name="datasets")
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="federated_jobs"
    )
    approval = models.CharField(
        max_length=10, choices=ApprovalState.choices, default=ApprovalState.PENDING
    )
    auto_approved = models.BooleanField(default=False)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.CharField(max_length=500, blank=True)
    # The terms as they were when the job was launched.
    manifest_hash = models.CharField(max_length=64)
    examples = models.IntegerField(help_text="The manifest's example count at launch.")
    price_per_example_round = models.BigIntegerField(default=0)
    price_per_job = models.BigIntegerField(default=0)
    max_cost = models.BigIntegerField(default=0)
    # Participation, from the ServerApp's round reports.
    rounds_completed = models.IntegerField(default=0)
    example_rounds = models.BigIntegerField(
        default=0, help_text="Sum over completed rounds of the examples the node trained on."
    )
    flwr_node_ids = models.JSONField(default=list, blank=True)
    earned = models.BigIntegerField(default=0)
    # The dataset's node vetoed the job's release: it forfeits what it would have earned.
    release_vetoed = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("pk",)
        constraints = [
            models.UniqueConstraint(
                fields=("job", "dataset_version"), name="jobdataset_job_dataset_unique"
            ),
            models.UniqueConstraint(
                fields=("job", "manifest_hash"), name="jobdataset_job_manifest_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(earned__gte=0, earned__lte=models.F("max_cost")),
                name="jobdataset_earned_within_max",
            ),
        ]

    def __str__(self) -> str:
        return f"dataset version {self.dataset_version_id} in job {self.job_id}"


class JobRound(models.Model):
    """One completed round as the ServerApp reported it."""

    job = models.ForeignKey(FederatedJob, on_delete=models.CASCADE, related_name="rounds")
    index = models.PositiveIntegerField()
    train_loss = models.FloatField(null=True, blank=True)
    num_examples = models.IntegerField(default=0)
    seconds = models.FloatField(null=True, blank=True)
    bytes_out_per_node = models.BigIntegerField(default=0)
    epsilon_max = models.FloatField(null=True, blank=True)
    nodes = models.JSONField(default=dict, blank=True, help_text="Accepted nodes' metrics.")
    node_datasets = models.JSONField(default=dict, blank=True)
    refused = models.JSONField(default=dict, blank=True)
    rejected = models.JSONField(default=dict, blank=True)
    no_reply = models.JSONField(default=list, blank=True)
    # The ServerApp's sample grid of the round (fixed prompts and seeds, the round's LoRA):
    # a PNG it checked and re-encoded, under a random name in public media.
    sample_grid = models.ImageField(upload_to="job-grids/%Y/%m/", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("job", "index")
        constraints = [
            models.UniqueConstraint(fields=("job", "index"), name="jobround_job_index_unique"),
        ]

    def __str__(self) -> str:
        return f"round {self.index} of job {self.job_id}"


class PrivacySpend(models.Model):
    """The site's mirror of the epsilon nodes reported, per job and dataset version (the
    largest reported: a node's accountant reports the job's cumulative epsilon)."""

    job = models.ForeignKey(FederatedJob, on_delete=models.PROTECT, related_name="privacy_spends")
    dataset_version = models.ForeignKey(
        DatasetVersion, on_delete=models.PROTECT, related_name="privacy_spends"
    )
    epsilon = models.FloatField(default=0)
    delta = models.FloatField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("pk",)
        constraints = [
            models.UniqueConstraint(
                fields=("job", "dataset_version"), name="privacyspend_job_dataset_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(epsilon__gte=0), name="privacyspend_eps_gte0"
            ),
        ]

    def __str__(self) -> str:
        return f"epsilon {self.epsilon:g} of dataset version {self.dataset_version_id}"


class JobEvent(models.Model):
    """A line of the job's log, shown on its page."""

    class Level(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    job = models.ForeignKey(FederatedJob, on_delete=models.CASCADE, related_name="events")
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    kind = models.CharField(max_length=40)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("pk",)

    def __str__(self) -> str:
        return f"[{self.level}] {self.kind}: {self.message[:60]}"
