"""What a running job's processes call: the ServerApp's progress reports (with the job's
progress token; trainers read the same progress), and the base model for the nodes serving the
job and the ServerApp (node or job token)."""

from __future__ import annotations

from django.http import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApplicationError, NotFoundError
from federated import selectors
from federated.api.common import TAGS
from federated.api.jobs import JobDatasetSerializer, JobRoundSerializer
from federated.auth import (
    UserAuthentication,
    job_for_model_download,
    job_for_token,
)
from federated.models import FederatedJob
from federated.services.jobs import (
    job_progress_record,
)
from registry.http import serve_blob


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
