"""What data owners earned from jobs: per dataset, and per job for one dataset."""

from __future__ import annotations

from drf_spectacular.utils import (
    extend_schema,
)
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from federated import selectors
from federated.api.common import TAGS, owned_terms


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
        terms = owned_terms(request, dataset_version_id)
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
