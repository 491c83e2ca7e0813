"""The federated REST API under ``/api/federated/``: nodes, private datasets and their terms,
jobs (estimate, launch, progress, cancel, the base model for nodes), approvals, earnings.

Thin: parse, call one service or selector, render. Nodes authenticate with their node token
(also to fetch the base model of a job they serve), the ServerApp with the job's progress and
job tokens from its credentials file (never the run config, which every node reads).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import ApplicationError, NotFoundError
from federated import selectors
from federated.auth import (
    NodeTokenAuthentication,
    UserAuthentication,
    job_for_model_download,
    job_for_token,
    own_node,
)
from federated.models import DatasetTerms, FederatedJob, JobDataset, Node, TrainingUse
from federated.services.datasets import (
    TERMS_FIELDS,
    dataset_terms_update,
    federated_dataset_create,
)
from federated.services.jobs import (
    JobSpec,
    job_approve,
    job_cancel,
    job_create_and_launch,
    job_estimate,
    job_progress_record,
    job_reject,
)
from federated.services.nodes import node_heartbeat, node_register, node_revoke
from marketplace.api import IDEMPOTENCY_KEY, WholeNumberField
from registry.api.common import has_nul, page_response, paginated
from registry.http import serve_blob
from registry.models import Visibility
from registry.serializers import absolute_url, aggregate_stats

TAGS = ["federated"]


# --- nodes ---------------------------------------------------------------------------------------


class NodeDatasetRefSerializer(serializers.Serializer):
    dataset_version_id = serializers.IntegerField()
    name = serializers.CharField(source="dataset_version.dataset.name")
    manifest_hash = serializers.CharField(source="dataset_version.manifest_hash")


class NodeOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    public_key = serializers.CharField()
    key_type = serializers.CharField()
    key_fingerprint = serializers.CharField()
    flwr_node_id = serializers.CharField()
    # The SuperLink's id for the node's key ("" until the site registered it there).
    superlink_node_id = serializers.CharField()
    version = serializers.CharField(source="software_version")
    serving = serializers.ListField(child=serializers.CharField())
    datasets = NodeDatasetRefSerializer(many=True)
    last_seen_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class NodeListCreateApi(APIView):
    """GET: the caller's nodes with their status. POST: register a node (its token is in the
    answer, once)."""

    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        public_key = serializers.CharField(max_length=2000)

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        name = serializers.CharField()
        token = serializers.CharField(help_text="The node token (atn_...), shown only now.")
        key_fingerprint = serializers.CharField()

    @extend_schema(
        parameters=[
            OpenApiParameter("revoked", OpenApiTypes.BOOL, description="Include revoked nodes.")
        ],
        responses=NodeOutputSerializer(many=True),
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        revoked = request.query_params.get("revoked", "") in ("1", "true", "yes")
        nodes = selectors.nodes_of_owner(owner=signed_in(request), include_revoked=revoked)
        return Response(NodeOutputSerializer(nodes, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, tags=TAGS)
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        registered = node_register(owner=signed_in(request), **data.validated_data)
        body = {
            "id": registered.node.pk,
            "name": registered.node.name,
            "token": registered.token,
            "key_fingerprint": registered.node.key_fingerprint,
        }
        return Response(self.OutputSerializer(body).data, status=status.HTTP_201_CREATED)


class NodeHeartbeatApi(APIView):
    """A node says it is alive and which datasets (manifest hashes) it serves."""

    authentication_classes = [NodeTokenAuthentication]
    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        datasets = serializers.ListField(
            child=serializers.CharField(max_length=64), max_length=100, required=False, default=list
        )
        flwr_node_id = serializers.CharField(
            max_length=40, required=False, allow_blank=True, default=""
        )
        version = serializers.CharField(max_length=60, required=False, allow_blank=True, default="")

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        name = serializers.CharField()
        status = serializers.CharField()
        last_seen_at = serializers.DateTimeField()
        datasets = NodeDatasetRefSerializer(many=True)

    @extend_schema(request=InputSerializer, responses=OutputSerializer, tags=TAGS)
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assert isinstance(request.auth, Node)  # NodeTokenAuthentication
        node = node_heartbeat(node=request.auth, **data.validated_data)
        served = [
            t
            for t in node.datasets.select_related("dataset_version__dataset")
            if t.dataset_version.manifest_hash in node.serving
        ]
        body = {
            "id": node.pk,
            "name": node.name,
            "status": node.status,
            "last_seen_at": node.last_seen_at,
            "datasets": served,
        }
        return Response(self.OutputSerializer(body).data)


class NodeRevokeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=NodeOutputSerializer, tags=TAGS)
    def post(self, request: Request, node_id: int) -> Response:
        node = node_revoke(node=own_node(request, node_id), user=signed_in(request))
        return Response(NodeOutputSerializer(node).data)


# --- datasets ------------------------------------------------------------------------------------


class TermsSerializer(serializers.Serializer):
    price_per_example_round = WholeNumberField(min_value=0, required=False)
    price_per_job = WholeNumberField(min_value=0, required=False)
    allowed_families = serializers.ListField(child=serializers.CharField(), required=False)
    allowed_uses = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Uses: " + ", ".join(TrainingUse.values),
    )
    commercial_use = serializers.BooleanField(required=False)
    epsilon_per_job = serializers.FloatField(required=False)
    delta = serializers.FloatField(required=False)
    epsilon_lifetime = serializers.FloatField(required=False)
    approval = serializers.ChoiceField(choices=["auto", "manual"], required=False)
    require_dp = serializers.BooleanField(required=False)


class TermsOutputSerializer(serializers.ModelSerializer):
    pricing = serializers.CharField()
    allowed_families = serializers.ListField(child=serializers.CharField())
    allowed_uses = serializers.ListField(child=serializers.CharField())
    approval = serializers.CharField()

    class Meta:
        model = DatasetTerms
        fields = ("pricing", *TERMS_FIELDS, "updated_at")


class NodeRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    last_seen_at = serializers.DateTimeField(allow_null=True)


class BudgetJobSerializer(serializers.Serializer):
    job_id = serializers.IntegerField()
    job_name = serializers.CharField()
    state = serializers.CharField()
    epsilon = serializers.FloatField()
    reserved = serializers.FloatField()


class BudgetSerializer(serializers.Serializer):
    epsilon_per_job = serializers.FloatField()
    epsilon_lifetime = serializers.FloatField()
    delta = serializers.FloatField()
    spent = serializers.FloatField()
    reserved = serializers.FloatField()
    remaining = serializers.FloatField()
    jobs = BudgetJobSerializer(many=True)


class FederatedDatasetSerializer(serializers.Serializer):
    """A private dataset as trainers see it: aggregate statistics only, never file names."""

    dataset_version_id = serializers.IntegerField()
    dataset_id = serializers.IntegerField(source="dataset_version.dataset_id")
    name = serializers.CharField(source="dataset_version.dataset.name")
    description = serializers.CharField(source="dataset_version.dataset.description")
    owner = serializers.CharField(source="dataset_version.dataset.owner.username")
    version = serializers.CharField(source="dataset_version.name")
    image_count = serializers.IntegerField(source="dataset_version.image_count")
    manifest_hash = serializers.CharField(source="dataset_version.manifest_hash")
    stats = serializers.SerializerMethodField()
    node = NodeRefSerializer()
    terms = TermsOutputSerializer(source="*")

    def get_stats(self, terms: DatasetTerms) -> dict[str, Any]:
        manifest = terms.dataset_version.manifest
        return aggregate_stats(manifest if isinstance(manifest, dict) else {})


class OwnerDatasetSerializer(FederatedDatasetSerializer):
    """One of the owner's datasets: with the full manifest, the budget and the earnings."""

    manifest = serializers.JSONField(source="dataset_version.manifest")
    budget = BudgetSerializer()
    earned = serializers.IntegerField()
    jobs = serializers.IntegerField()


def _owner_row(terms: DatasetTerms) -> selectors.OwnerDataset:
    earnings = selectors.earnings_for_dataset(terms=terms)
    return selectors.OwnerDataset(
        terms, selectors.dataset_budget(terms=terms), sum(e.earned for e in earnings), len(earnings)
    )


def _owner_data(row: selectors.OwnerDataset) -> dict[str, Any]:
    data = dict(FederatedDatasetSerializer(row.terms).data)
    data.update(
        manifest=row.terms.dataset_version.manifest,
        budget=BudgetSerializer(row.budget).data,
        earned=row.earned,
        jobs=row.jobs,
    )
    return data


def _owned_terms(request: Request, dataset_version_id: int) -> DatasetTerms:
    terms = selectors.federated_terms_for(dataset_version_id=dataset_version_id, user=request.user)
    user = request.user
    if terms is None or not (user.pk == terms.dataset_version.dataset.owner_id or user.is_staff):
        raise NotFoundError("No such dataset of yours.", code="dataset_not_found")
    return terms


class FederatedDatasetListCreateApi(APIView):
    """GET: private datasets trainers may pick, with their terms. POST: list a private dataset
    served by one of the caller's nodes (the node's manifest, never images) with its terms."""

    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        node_id = serializers.IntegerField()
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(
            max_length=50_000, required=False, allow_blank=True, default=""
        )
        tags = serializers.ListField(
            child=serializers.CharField(max_length=64), required=False, default=list
        )
        visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.PUBLIC)
        dataset_id = serializers.IntegerField(
            required=False,
            allow_null=True,
            default=None,
            help_text="Add a version to this dataset.",
        )
        manifest = serializers.JSONField()
        terms = TermsSerializer()

        def validate_manifest(self, value: object) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise serializers.ValidationError("Must be a JSON object.")
            if has_nul(value):
                raise serializers.ValidationError("Must not hold NUL characters.")
            return value

    @extend_schema(
        operation_id="federated_datasets_list",
        responses=paginated("PaginatedFederatedDatasetList", FederatedDatasetSerializer(many=True)),
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        available = selectors.federated_datasets_available(user=request.user)
        return page_response(request, self, available, FederatedDatasetSerializer)

    @extend_schema(request=InputSerializer, responses={201: OwnerDatasetSerializer}, tags=TAGS)
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        terms = federated_dataset_create(owner=signed_in(request), **data.validated_data)
        return Response(_owner_data(_owner_row(terms)), status=status.HTTP_201_CREATED)


class FederatedDatasetMineApi(APIView):
    """The caller's private datasets: manifest, terms, privacy budget and earnings."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=OwnerDatasetSerializer(many=True), tags=TAGS)
    def get(self, request: Request) -> Response:
        rows = selectors.datasets_of_owner(owner=signed_in(request))
        return Response([_owner_data(row) for row in rows])


class FederatedDatasetDetailApi(APIView):
    """One private dataset and its terms (its owner also sees the manifest and budget)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=FederatedDatasetSerializer, tags=TAGS)
    def get(self, request: Request, dataset_version_id: int) -> Response:
        terms = selectors.federated_terms_for(
            dataset_version_id=dataset_version_id, user=request.user
        )
        if terms is None:
            raise NotFoundError("No such dataset.", code="dataset_not_found")
        if request.user.pk == terms.dataset_version.dataset.owner_id:
            return Response(_owner_data(_owner_row(terms)))
        return Response(FederatedDatasetSerializer(terms).data)


class DatasetTermsUpdateApi(APIView):
    """Change a dataset's terms (its owner only); jobs already launched keep theirs."""

    permission_classes = [IsAuthenticated]

    class InputSerializer(TermsSerializer):
        node_id = serializers.IntegerField(required=False)

    @extend_schema(request=InputSerializer, responses=TermsOutputSerializer, tags=TAGS)
    def patch(self, request: Request, dataset_version_id: int) -> Response:
        terms = selectors.federated_terms_for(
            dataset_version_id=dataset_version_id, user=request.user
        )
        if terms is None:
            raise NotFoundError("No such dataset.", code="dataset_not_found")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        node_id = changes.pop("node_id", None)
        terms = dataset_terms_update(
            terms=terms, user=signed_in(request), changes=changes, node_id=node_id
        )
        return Response(TermsOutputSerializer(terms).data)


class DatasetBudgetApi(APIView):
    """The privacy budget of one of the caller's datasets: epsilon spent per job and in
    total, reserved by running jobs, and remaining."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=BudgetSerializer, tags=TAGS)
    def get(self, request: Request, dataset_version_id: int) -> Response:
        terms = _owned_terms(request, dataset_version_id)
        return Response(BudgetSerializer(selectors.dataset_budget(terms=terms)).data)


class DatasetEarningSerializer(serializers.Serializer):
    job_id = serializers.IntegerField()
    job_name = serializers.CharField()
    state = serializers.CharField()
    rounds_completed = serializers.IntegerField()
    example_rounds = serializers.IntegerField()
    earned = serializers.IntegerField()


class DatasetEarningsApi(APIView):
    """What one of the caller's datasets earned, job by job."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=DatasetEarningSerializer(many=True), tags=TAGS)
    def get(self, request: Request, dataset_version_id: int) -> Response:
        terms = _owned_terms(request, dataset_version_id)
        rows = selectors.earnings_for_dataset(terms=terms)
        return Response(DatasetEarningSerializer(rows, many=True).data)


class EarningsListApi(APIView):
    """The caller's earnings per dataset (settled jobs)."""

    permission_classes = [IsAuthenticated]

    class OutputSerializer(serializers.Serializer):
        dataset_version_id = serializers.IntegerField(source="terms.dataset_version_id")
        name = serializers.CharField(source="terms.dataset_version.dataset.name")
        earned = serializers.IntegerField()
        jobs = serializers.IntegerField()

    @extend_schema(responses=OutputSerializer(many=True), tags=TAGS)
    def get(self, request: Request) -> Response:
        rows = selectors.datasets_of_owner(owner=signed_in(request))
        return Response(self.OutputSerializer(rows, many=True).data)


# --- jobs ----------------------------------------------------------------------------------------


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
    datasets = JobDatasetSerializer(many=True)
    rounds = JobRoundSerializer(many=True, source="rounds.all")

    def get_result_model_id(self, job: FederatedJob) -> int | None:
        return job.result_version.model_id if job.result_version_id else None  # type: ignore[union-attr]


class JobEstimateApi(APIView):
    """What a job would cost at most (owners' maximum and the platform fee), and every
    problem its launch would be refused for."""

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


class JobEventSerializer(serializers.Serializer):
    level = serializers.CharField()
    kind = serializers.CharField()
    message = serializers.CharField()
    created_at = serializers.DateTimeField()


class JobProgressApi(APIView):
    """GET (trainer, staff): rounds so far (``after``: only later rounds), participation and
    the log, for the live page. POST (the ServerApp, ``Authorization: Bearer <progress
    token>``): one report; 401 with another token, 409 once the job is finished."""

    authentication_classes = [UserAuthentication, SessionAuthentication]
    permission_classes = [AllowAny]

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        state = serializers.CharField()
        rounds_total = serializers.IntegerField(source="num_rounds")
        failure_reason = serializers.CharField()
        rounds = JobRoundSerializer(many=True)
        datasets = JobDatasetSerializer(many=True)
        events = JobEventSerializer(many=True)

    class ReportOutputSerializer(serializers.Serializer):
        recorded = serializers.BooleanField()
        round = serializers.IntegerField(allow_null=True)

    @extend_schema(
        parameters=[
            OpenApiParameter("after", OpenApiTypes.INT, description="Only rounds after this index.")
        ],
        responses=OutputSerializer,
        tags=TAGS,
    )
    def get(self, request: Request, job_id: int) -> Response:
        job = FederatedJob.objects.filter(pk=job_id).first()
        user = request.user
        if (
            job is None
            or not user.is_authenticated
            or not (user.pk == job.trainer_id or user.is_staff)
        ):
            raise NotFoundError("No such job.", code="job_not_found")
        after = request.query_params.get("after", "0")
        if not after.isdigit():
            raise ApplicationError("after must be a round index.", code="bad_after")
        body = {
            "id": job.pk,
            "state": job.state,
            "num_rounds": job.num_rounds,
            "failure_reason": job.failure_reason,
            "rounds": selectors.job_rounds(job=job, after=int(after)),
            "datasets": job.datasets.select_related("dataset_version__dataset__owner"),
            "events": selectors.job_events(job=job),
        }
        return Response(self.OutputSerializer(body).data)

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses=ReportOutputSerializer,
        tags=TAGS,
        auth=[],
        description="The ServerApp's report, with the job's progress token.",
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = job_for_token(request, job_id, kind="progress")
        if not isinstance(request.data, dict):
            raise ApplicationError("The report is a JSON object.", code="bad_progress")
        recorded = job_progress_record(job=job, payload=dict(request.data))
        body = {
            "recorded": recorded is not None,
            "round": recorded.index if recorded is not None else None,
        }
        return Response(self.ReportOutputSerializer(body).data)


class JobBaseModelApi(APIView):
    """The job's base model, its single-file .safetensors checkpoint, for the nodes serving
    its datasets (``Authorization: Bearer <node token>``) and the ServerApp (``Bearer <job
    token>``): Range and ETag (its SHA-256)."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            (206, "application/octet-stream"): OpenApiTypes.BINARY,
            401: OpenApiResponse(description="No valid node or job token."),
            403: OpenApiResponse(description="The node serves no dataset of the job."),
        },
        tags=TAGS,
        auth=[],
    )
    def get(self, request: Request, job_id: int) -> HttpResponseBase:
        job = job_for_model_download(request, job_id)
        model_file = job.base_version.files.select_related("blob").filter(is_primary=True).first()
        if model_file is None:
            raise NotFoundError("The base model has no file.", code="not_found")
        return serve_blob(request._request, model_file.blob, model_file.filename)


# --- approvals -----------------------------------------------------------------------------------


class ApprovalSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    approval = serializers.CharField()
    job_id = serializers.IntegerField()
    job_name = serializers.CharField(source="job.name")
    job_state = serializers.CharField(source="job.state")
    trainer = serializers.CharField(source="job.trainer.username")
    base_model = serializers.CharField(source="job.base_version.model.name")
    use = serializers.CharField(source="job.use")
    commercial_use = serializers.BooleanField(source="job.commercial_use")
    rounds = serializers.IntegerField(source="job.num_rounds")
    target_epsilon = serializers.FloatField(source="job.target_epsilon", allow_null=True)
    dataset_version_id = serializers.IntegerField()
    dataset = serializers.CharField(source="dataset_version.dataset.name")
    max_cost = serializers.IntegerField()
    created_at = serializers.DateTimeField(source="job.created_at")


class ApprovalListApi(APIView):
    """The caller's approval inbox: jobs that wait for their consent (``all=1``: decided too)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "all", OpenApiTypes.BOOL, description="Include requests already decided."
            )
        ],
        responses=paginated("PaginatedApprovalList", ApprovalSerializer(many=True)),
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        everything = request.query_params.get("all", "") in ("1", "true", "yes")
        inbox = selectors.approval_inbox(owner=signed_in(request), pending_only=not everything)
        return page_response(request, self, inbox, ApprovalSerializer)


def _request_for_owner(request: Request, job_dataset_id: int) -> JobDataset:
    jd = JobDataset.objects.filter(
        pk=job_dataset_id, dataset_version__dataset__owner_id=request.user.pk
    ).first()
    if jd is None:
        raise NotFoundError("No such approval request.", code="approval_not_found")
    return jd


class ApprovalApproveApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=ApprovalSerializer, tags=TAGS)
    def post(self, request: Request, job_dataset_id: int) -> Response:
        jd = _request_for_owner(request, job_dataset_id)
        job_approve(job_dataset=jd, user=signed_in(request))
        jd.refresh_from_db()
        return Response(ApprovalSerializer(jd).data)


class ApprovalRejectApi(APIView):
    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses=ApprovalSerializer, tags=TAGS)
    def post(self, request: Request, job_dataset_id: int) -> Response:
        jd = _request_for_owner(request, job_dataset_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job_reject(job_dataset=jd, user=signed_in(request), note=data.validated_data["note"])
        jd.refresh_from_db()
        return Response(ApprovalSerializer(jd).data)
