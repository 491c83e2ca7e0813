"""Admin for federated training: staff look at nodes, terms, jobs, rounds, the privacy mirror
and the job log. Rows change only through the services: staff act with the actions (revoke a
node, fail or cancel a job), which call :mod:`federated.services`."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from core.auth import AuthenticatedHttpRequest
from federated.models import (
    DatasetTerms,
    FederatedJob,
    JobDataset,
    JobEvent,
    JobRound,
    Node,
    PrivacySpend,
)
from federated.services.jobs import job_cancel, job_fail
from federated.services.nodes import node_revoke
from marketplace.admin import ReadOnlyAdmin, _run_each


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Node)
class NodeAdmin(ReadOnlyAdmin):
    list_display = ("name", "owner", "status", "last_seen_at", "flwr_node_id", "revoked_at")
    list_filter = ("key_type",)
    search_fields = ("name", "owner__username", "key_fingerprint")
    exclude = ("token_digest",)
    actions = ["revoke"]

    @admin.action(description="Revoke the selected nodes' tokens")
    def revoke(self, request: AuthenticatedHttpRequest, queryset: QuerySet[Node]) -> None:
        _run_each(
            self,
            request,
            queryset,
            lambda node: node_revoke(node=node, user=request.user),
            "node(s) revoked",
        )


@admin.register(DatasetTerms)
class DatasetTermsAdmin(ReadOnlyAdmin):
    list_display = (
        "dataset_version",
        "node",
        "pricing",
        "price_per_example_round",
        "price_per_job",
        "epsilon_per_job",
        "epsilon_lifetime",
        "approval",
    )
    list_filter = ("approval", "require_dp", "commercial_use")
    search_fields = ("dataset_version__dataset__name", "node__name")


class JobDatasetInline(ReadOnlyInline):
    model = JobDataset
    fields = (
        "dataset_version",
        "approval",
        "examples",
        "max_cost",
        "rounds_completed",
        "example_rounds",
        "earned",
    )
    readonly_fields = fields


class JobRoundInline(ReadOnlyInline):
    model = JobRound
    fields = ("index", "train_loss", "epsilon_max", "num_examples", "seconds")
    readonly_fields = fields


class JobEventInline(ReadOnlyInline):
    model = JobEvent
    fields = ("created_at", "level", "kind", "message")
    readonly_fields = fields


@admin.register(FederatedJob)
class FederatedJobAdmin(ReadOnlyAdmin):
    list_display = (
        "pk",
        "name",
        "trainer",
        "state",
        "run_id",
        "max_cost",
        "owners_paid",
        "fee_paid",
        "refunded",
        "created_at",
    )
    list_filter = ("state", "use")
    search_fields = ("name", "trainer__username", "run_id")
    exclude = ("job_token_digest", "progress_token_digest")
    inlines = [JobDatasetInline, JobRoundInline, JobEventInline]
    actions = ["cancel", "fail"]

    @admin.action(description="Cancel the selected jobs (pay what was earned, refund the rest)")
    def cancel(self, request: AuthenticatedHttpRequest, queryset: QuerySet[FederatedJob]) -> None:
        _run_each(
            self,
            request,
            queryset,
            lambda job: job_cancel(job=job, user=request.user),
            "job(s) cancelled",
        )

    @admin.action(description="Fail the selected jobs (pay what was earned, refund the rest)")
    def fail(self, request: HttpRequest, queryset: QuerySet[FederatedJob]) -> None:
        _run_each(
            self,
            request,
            queryset,
            lambda job: job_fail(job=job, reason=f"Failed by staff ({request.user})."),
            "job(s) failed",
        )


@admin.register(PrivacySpend)
class PrivacySpendAdmin(ReadOnlyAdmin):
    list_display = ("dataset_version", "job", "epsilon", "delta", "updated_at")
    search_fields = ("dataset_version__dataset__name",)


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "job", "level", "kind", "message")
    list_filter = ("level", "kind")
