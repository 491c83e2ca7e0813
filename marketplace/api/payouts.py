"""Payouts: a seller asks for earned credits; staff mark them paid or rejected."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import NotFoundError
from marketplace import selectors
from marketplace.api.common import WholeNumberField
from marketplace.models import Payout
from marketplace.services.payouts import payout_mark_paid, payout_reject, payout_request
from registry.api.common import page_response, paginated


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
