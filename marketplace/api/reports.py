"""Reports of a version or dataset to the moderators."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import NotFoundError
from marketplace.models import ReportReason
from marketplace.services.reports import report_create
from registry.models import Dataset, ModelVersion


class ReportCreateApi(APIView):
    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        model_version_id = serializers.IntegerField(required=False)
        dataset_id = serializers.IntegerField(required=False)
        reason = serializers.ChoiceField(choices=ReportReason.choices)
        text = serializers.CharField(max_length=5000)

        def validate(self, attrs: dict[str, object]) -> dict[str, object]:
            if ("model_version_id" in attrs) == ("dataset_id" in attrs):
                raise serializers.ValidationError(
                    "Give exactly one of model_version_id and dataset_id."
                )
            return attrs

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        reason = serializers.CharField()
        status = serializers.CharField()
        created_at = serializers.DateTimeField()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, tags=["reports"])
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        target: ModelVersion | Dataset | None
        if "model_version_id" in v:
            target = (
                ModelVersion.objects.select_related("model")
                .filter(pk=v["model_version_id"])
                .first()
            )
        else:
            target = Dataset.objects.filter(pk=v["dataset_id"]).first()
        if target is None:
            raise NotFoundError("No such version or dataset.")
        report = report_create(
            reporter=signed_in(request), target=target, reason=v["reason"], text=v["text"]
        )
        return Response(self.OutputSerializer(report).data, status=status.HTTP_201_CREATED)
