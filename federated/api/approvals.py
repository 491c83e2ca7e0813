"""Data owners' approval inbox: jobs that wait for their consent; approve or reject."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
)
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import NotFoundError
from federated import selectors
from federated.api.common import TAGS
from federated.models import JobDataset
from federated.services.jobs import (
    job_approve,
    job_reject,
)
from registry.api.common import page_response, paginated


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
