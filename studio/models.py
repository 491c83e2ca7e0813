"""Generations: one text-to-image request, its progress, its result, and what it used.

Every write goes through ``studio.services``; reads beyond a plain get go through
``studio.selectors``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from registry.models import ModelFile, ModelVersion


class GenerationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATUSES = (
    GenerationStatus.SUCCEEDED,
    GenerationStatus.FAILED,
    GenerationStatus.CANCELLED,
)
ACTIVE_STATUSES = (GenerationStatus.QUEUED, GenerationStatus.RUNNING)


class Generation(models.Model):
    """A text-to-image request by a user, run by a Celery worker.

    The files used are pinned when the request is made (``base_file`` for a single-file
    checkpoint; the version's files for a diffusers folder), and names and hashes are kept in
    ``parameters`` so the gallery still says what made an image if a model is deleted later.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generations"
    )
    base_version = models.ForeignKey(
        ModelVersion, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    base_file = models.ForeignKey(
        ModelFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    base_name = models.CharField(max_length=300)
    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True)
    seed = models.BigIntegerField()
    steps = models.PositiveSmallIntegerField()
    guidance = models.FloatField()
    width = models.PositiveSmallIntegerField()
    height = models.PositiveSmallIntegerField()
    sampler = models.CharField(max_length=20)
    status = models.CharField(
        max_length=10, choices=GenerationStatus.choices, default=GenerationStatus.QUEUED
    )
    progress_step = models.PositiveSmallIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    image = models.ImageField(upload_to="generations/%Y/%m/", blank=True)
    # The A1111 "parameters" text, as embedded in the PNG.
    parameters = models.TextField(blank=True)
    is_public = models.BooleanField(default=False)
    # "Base vs base + LoRA": the same request and seed without the LoRAs, made beside this one.
    baseline = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="baseline_of"
    )
    device = models.CharField(max_length=20, blank=True)
    duration_ms = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-pk")
        indexes = [
            models.Index(fields=["user", "-created_at"], name="generation_user_idx"),
            models.Index(fields=["status", "created_at"], name="generation_status_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(steps__gte=1), name="generation_steps_gte1"),
            models.CheckConstraint(
                condition=models.Q(width__gte=8, height__gte=8), name="generation_size_gte8"
            ),
        ]

    def __str__(self) -> str:
        return f"Generation {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def seconds(self) -> float | None:
        return None if self.duration_ms is None else self.duration_ms / 1000


class ResourceKind(models.TextChoices):
    LORA = "lora", "LoRA"
    EMBEDDING = "embedding", "Embedding"


class GenerationResource(models.Model):
    """A LoRA or an embedding applied to a generation, with its weight."""

    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="resources")
    kind = models.CharField(max_length=10, choices=ResourceKind.choices)
    version = models.ForeignKey(
        ModelVersion, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    model_file = models.ForeignKey(
        ModelFile, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    position = models.PositiveSmallIntegerField()
    weight = models.FloatField()
    # A1111's name for it: the LoRA file's name without extension, or the embedding's token.
    name = models.CharField(max_length=200)
    display_name = models.CharField(max_length=300)

    class Meta:
        ordering = ("-kind", "position")  # LoRAs, then embeddings
        constraints = [
            models.UniqueConstraint(
                fields=("generation", "kind", "position"), name="generation_resource_position"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} ({self.weight:g})"
