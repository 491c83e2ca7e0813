"""REST API for payouts, statements and reports."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import NotFoundError
from marketplace import selectors
from marketplace.api import WholeNumberField
from marketplace.exports import statement_response
from marketplace.models import Payout, ReportReason
from marketplace.services.payouts import payout_mark_paid, payout_reject, payout_request
from marketplace.services.reports import report_create
from registry.api.common import page_response, paginated
from registry.models import Dataset, ModelVersion


class PayoutOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    amount = serializers.IntegerField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    handled_at = serializers.DateTimeField(allow_null=True)
    note = serializers.CharField()


class PayoutListCreateApi(APIView):
    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        amount = WholeNumberField(min_value=1)

    @extend_schema(
        operation_id="v1_payouts_list",
        responses=paginated("PaginatedPayoutList", PayoutOutputSerializer(many=True)),
        tags=["payouts"],
    )
    def get(self, request: Request) -> Response:
        return page_response(
            request, self, selectors.payouts_for(user=signed_in(request)), PayoutOutputSerializer
        )

    @extend_schema(
        request=InputSerializer, responses={201: PayoutOutputSerializer}, tags=["payouts"]
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        payout = payout_request(user=signed_in(request), amount=data.validated_data["amount"])
        return Response(PayoutOutputSerializer(payout).data, status=status.HTTP_201_CREATED)


class PayoutSettleApi(APIView):
    """Staff: mark a pending payout paid or rejected (the admin does the same)."""

    permission_classes = [IsAuthenticated]
    outcome = "paid"

    class InputSerializer(serializers.Serializer):
        note = serializers.CharField(required=False, allow_blank=True, max_length=300)

    @extend_schema(request=InputSerializer, responses=PayoutOutputSerializer, tags=["payouts"])
    def post(self, request: Request, payout_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        payout = Payout.objects.filter(pk=payout_id).first()
        if payout is None:
            raise NotFoundError("No such payout.")
        settle = payout_mark_paid if self.outcome == "paid" else payout_reject
        payout = settle(
            payout=payout, staff=signed_in(request), note=data.validated_data.get("note", "")
        )
        return Response(PayoutOutputSerializer(payout).data)


class WalletStatementApi(APIView):
    """The user's wallet entries for a period, as CSV."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, required=True),
            OpenApiParameter("to", OpenApiTypes.DATE, required=True),
        ],
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR)},
        tags=["wallet"],
    )
    def get(self, request: Request) -> HttpResponse:
        start, end = selectors.statement_period(
            request.query_params.get("from", ""), request.query_params.get("to", "")
        )
        lines = selectors.wallet_statement(user=signed_in(request), start=start, end=end)
        return statement_response(lines, start, end)


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
