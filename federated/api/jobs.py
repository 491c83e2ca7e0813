"""Federated jobs for trainers: estimate, launch (escrow, Idempotency-Key), list, detail,
cancel."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import NotFoundError
from federated import selectors
from federated.api.common import TAGS
from federated.models import FederatedJob, TrainingUse
from federated.services.jobs import (
    JobSpec,
    job_cancel,
    job_create_and_launch,
    job_estimate,
)
from marketplace.api.common import IDEMPOTENCY_KEY, WholeNumberField
from registry.api.common import page_response, paginated
from registry.serializers import absolute_url


class JobSpecSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    base_version_id = serializers.IntegerField()
    dataset_version_ids = serializers.ListField(
        child=serializers.IntegerField(), min_length=1, max_length=20
    )
    use = serializers.ChoiceField(choices=TrainingUse.choices)
    commercial_use = serializers.BooleanField(default=False)
    trigger_word = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default=""
    )
    rounds = WholeNumberField(min_value=1, default=3)
    local_steps = WholeNumberField(min_value=1, default=10)
    rank = WholeNumberField(min_value=1, default=4)
    alpha = serializers.FloatField(required=False, allow_null=True, default=None)
    learning_rate = serializers.FloatField(default=1e-3)
    resolution = WholeNumberField(min_value=8, default=512)
    batch_size = WholeNumberField(min_value=1, default=4)
    adapter_mode = serializers.ChoiceField(choices=["ffa", "lora"], default="ffa")
    buckets = serializers.BooleanField(default=True)
    text_encoder_lora = serializers.BooleanField(default=False)
    aggregation = serializers.ChoiceField(choices=["fedavg", "secagg"], default="fedavg")
    seed = WholeNumberField(min_value=0, default=0)
    dp = serializers.BooleanField(default=True)
    target_epsilon = serializers.FloatField(required=False, allow_null=True, default=None)
    delta = serializers.FloatField(required=False, allow_null=True, default=None)
    max_grad_norm = serializers.FloatField(default=0.05)
    min_nodes = WholeNumberField(min_value=1, required=False, allow_null=True, default=None)
    timeout_minutes = WholeNumberField(min_value=1, default=24 * 60)

    def spec(self) -> JobSpec:
        values = dict(self.validated_data)
        values["dataset_version_ids"] = tuple(values["dataset_version_ids"])
        return JobSpec(**values)


class JobDatasetSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    dataset_version_id = serializers.IntegerField()
    dataset = serializers.CharField(source="dataset_version.dataset.name")
    owner = serializers.CharField(source="dataset_version.dataset.owner.username")
    manifest_hash = serializers.CharField()
    approval = serializers.CharField()
    examples = serializers.IntegerField()
    price_per_example_round = serializers.IntegerField()
    price_per_job = serializers.IntegerField()
    max_cost = serializers.IntegerField()
    rounds_completed = serializers.IntegerField()
    example_rounds = serializers.IntegerField()
    earned = serializers.IntegerField()


class JobRoundSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    train_loss = serializers.FloatField(allow_null=True)
    epsilon_max = serializers.FloatField(allow_null=True)
    num_examples = serializers.IntegerField()
    nodes = serializers.SerializerMethodField()
    refused = serializers.JSONField()
    no_reply = serializers.ListField(child=serializers.CharField())
    seconds = serializers.FloatField(allow_null=True)
    bytes_out_per_node = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    sample_grid_url = serializers.SerializerMethodField(
        help_text="The round's sample grid (PNG: the fixed prompts in rows, seeds in columns, "
        "drawn with the round's LoRA), or null."
    )

    def get_nodes(self, obj: Any) -> int:
        return len(obj.nodes)

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_sample_grid_url(self, obj: Any) -> str | None:
        return absolute_url(self.context, obj.sample_grid.url) if obj.sample_grid else None


# The job's money, for its trainer and staff; null for a data owner looking at the job.
JOB_MONEY_FIELDS = ("max_cost", "owners_paid", "fee_paid", "refunded")


class JobSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    state = serializers.CharField()
    base_version_id = serializers.IntegerField()
    base_model = serializers.CharField(source="base_version.model.name")
    rounds_total = serializers.IntegerField(source="num_rounds")
    max_cost = serializers.IntegerField(allow_null=True)
    result_version_id = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class JobDetailSerializer(JobSummarySerializer):
    trainer = serializers.CharField(source="trainer.username")
    use = serializers.CharField()
    commercial_use = serializers.BooleanField()
    trigger_word = serializers.CharField()
    config = serializers.JSONField()
    run_id = serializers.CharField()
    deadline_at = serializers.DateTimeField(allow_null=True)
    failure_reason = serializers.CharField()
    publish_note = serializers.CharField()
    result_model_id = serializers.SerializerMethodField()
    fee_bps = serializers.IntegerField()
    owners_paid = serializers.IntegerField(allow_null=True)
    fee_paid = serializers.IntegerField(allow_null=True)
    refunded = serializers.IntegerField(allow_null=True)
    settled_at = serializers.DateTimeField(allow_null=True)
    launched_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    release_check = serializers.JSONField(
        help_text="The release check's counts (asked, allowed, vetoed, no_answer) of a "
        "withheld job; never a score or an image."
    )
    datasets = JobDatasetSerializer(many=True)
    rounds = JobRoundSerializer(many=True, source="rounds.all")

    def get_result_model_id(self, job: FederatedJob) -> int | None:
        return job.result_version.model_id if job.result_version_id else None  # type: ignore[union-attr]


class JobEstimateApi(APIView):
    """What a job would cost at most (owners' maximum and the platform fee), every problem
    its launch would be refused for, and the DP advice: noise multiplier, sampling rate and
    noise-to-signal ratio per dataset, with plain warnings when the noise drowns the signal.
    400 for a dataset without examples or smaller than the batch size (DP-SGD on)."""

    permission_classes = [IsAuthenticated]

    class OutputSerializer(serializers.Serializer):
        class LineSerializer(serializers.Serializer):
            dataset_version_id = serializers.IntegerField()
            dataset = serializers.CharField()
            pricing = serializers.CharField()
            price = serializers.IntegerField()
            examples = serializers.IntegerField()
            rounds = serializers.IntegerField()
            max_cost = serializers.IntegerField()

        class AggregationSerializer(serializers.Serializer):
            aggregation = serializers.CharField()
            # A field named like a Field attribute (label, source): DRF's metaclass moves
            # declared fields into _declared_fields; the stubs see an attribute override.
            label = serializers.CharField()  # type: ignore[assignment]
            extra_seconds_per_round = serializers.FloatField()
            wall_time_factor = serializers.FloatField(
                help_text="Whole run against FedAvg, same settings (measured)."
            )
            bytes_factor = serializers.FloatField(
                help_text="Bytes a node sends per round against FedAvg (measured)."
            )
            what_it_adds = serializers.CharField()
            limits = serializers.CharField()
            source = serializers.CharField()  # type: ignore[assignment]

        lines = LineSerializer(many=True)
        owners_max = serializers.IntegerField()
        fee_bps = serializers.IntegerField()
        fee = serializers.IntegerField()
        total = serializers.IntegerField()
        problems = serializers.ListField(child=serializers.DictField())
        aggregation = AggregationSerializer(
            allow_null=True,
            help_text=("The chosen aggregation and what it costs in time and bytes over FedAvg."),
        )
        aggregation_extra_seconds = serializers.FloatField(
            help_text="Seconds the aggregation adds to the whole job (all rounds)."
        )

        class AdviceSerializer(serializers.Serializer):
            class OwnerSerializer(serializers.Serializer):
                dataset_version_id = serializers.IntegerField()
                dataset = serializers.CharField()
                examples = serializers.IntegerField()
                sample_rate = serializers.FloatField(help_text="Poisson rate, 1/ceil(n/B).")
                expected_batch = serializers.FloatField(help_text="b = sample_rate x examples.")
                noise_multiplier = serializers.FloatField(
                    allow_null=True, help_text="sigma; null: the target epsilon is unreachable."
                )
                noise_std = serializers.FloatField(
                    allow_null=True, help_text="sigma x C / b, per coordinate of a step."
                )
                noise_to_signal = serializers.FloatField(
                    allow_null=True, help_text="sigma / b: the noise std against the bound C."
                )
                level = serializers.ChoiceField(choices=["ok", "weak", "drowned"])
                warnings = serializers.ListField(child=serializers.CharField())

            target_epsilon = serializers.FloatField()
            delta = serializers.FloatField()
            max_grad_norm = serializers.FloatField()
            batch_size = serializers.IntegerField()
            steps = serializers.IntegerField(help_text="rounds x local steps")
            accountant = serializers.CharField()
            level = serializers.ChoiceField(choices=["ok", "weak", "drowned"])
            owners = OwnerSerializer(many=True)
            warnings = serializers.ListField(child=serializers.CharField())
            weak_nsr = serializers.FloatField()
            drowned_nsr = serializers.FloatField()
            formula = serializers.CharField()

        advice = AdviceSerializer(
            allow_null=True,
            help_text="What DP-SGD will leave of the signal, per dataset (null without DP or "
            "when a DP setting is itself a problem). docs/trainer.md explains the numbers.",
        )

    @extend_schema(request=JobSpecSerializer, responses=OutputSerializer, tags=TAGS)
    def post(self, request: Request) -> Response:
        data = JobSpecSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        estimate = job_estimate(trainer=signed_in(request), spec=data.spec())
        return Response(self.OutputSerializer(estimate).data)


class JobListCreateApi(APIView):
    """GET: the caller's jobs. POST: create and launch a job (its maximum cost is held in
    escrow); repeating the Idempotency-Key returns the first job and charges nothing more."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="federated_jobs_list",
        responses=paginated("PaginatedJobList", JobSummarySerializer(many=True)),
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        jobs = selectors.jobs_of_trainer(trainer=signed_in(request))
        return page_response(request, self, jobs, JobSummarySerializer)

    @extend_schema(
        request=JobSpecSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: JobDetailSerializer, 200: JobDetailSerializer},
        tags=TAGS,
    )
    def post(self, request: Request) -> Response:
        data = JobSpecSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job, created = job_create_and_launch(
            trainer=signed_in(request),
            spec=data.spec(),
            idempotency_key=request.headers.get("Idempotency-Key", ""),
        )
        detail = selectors.job_detail(job_id=job.pk, user=request.user)
        return Response(
            JobDetailSerializer(detail).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


def _job(request: Request, job_id: int) -> FederatedJob:
    job = selectors.job_detail(job_id=job_id, user=request.user)
    if job is None:
        raise NotFoundError("No such job.", code="job_not_found")
    return job


class JobDetailApi(APIView):
    """A job with its datasets (approval, participation, earnings) and rounds."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=JobDetailSerializer, tags=TAGS)
    def get(self, request: Request, job_id: int) -> Response:
        job = _job(request, job_id)
        data = JobDetailSerializer(job).data
        if not selectors.job_sees_everything(job=job, user=request.user):
            data.update(dict.fromkeys(JOB_MONEY_FIELDS))  # a data owner: their lines only
        return Response(data)


class JobCancelApi(APIView):
    """The trainer cancels: what was earned is paid, the rest refunded, the run stopped."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=JobDetailSerializer, tags=TAGS)
    def post(self, request: Request, job_id: int) -> Response:
        job = job_cancel(job=_job(request, job_id), user=signed_in(request))
        return Response(
            JobDetailSerializer(selectors.job_detail(job_id=job.pk, user=request.user)).data
        )
