"""The wallet: balance, transactions, top-ups and the CSV statement."""

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
from marketplace import selectors
from marketplace.api.common import IDEMPOTENCY_KEY, WholeNumberField, idempotency_key
from marketplace.exports import statement_response
from marketplace.payments import default_provider
from marketplace.services.ledger import wallet_top_up
from registry.api.common import page_response, paginated


class WalletDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    class OutputSerializer(serializers.Serializer):
        balance = serializers.IntegerField(help_text="Every spendable credit, bought or earned.")
        withdrawable = serializers.IntegerField(
            help_text="The earned credits, the only ones a payout may take."
        )
        currency = serializers.CharField()

    @extend_schema(responses=OutputSerializer, tags=["wallet"])
    def get(self, request: Request) -> Response:
        user = signed_in(request)
        body = {
            "balance": selectors.wallet_balance(user=user),
            "withdrawable": selectors.withdrawable_balance(user=user),
            "currency": "credits",
        }
        return Response(self.OutputSerializer(body).data)


class WalletTransactionListApi(APIView):
    permission_classes = [IsAuthenticated]

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField(source="transaction_id")
        kind = serializers.CharField(source="transaction.kind")
        reference = serializers.CharField(source="transaction.reference")
        amount = serializers.IntegerField()
        memo = serializers.CharField()
        created_at = serializers.DateTimeField(source="transaction.created_at")

    @extend_schema(
        operation_id="v1_wallet_transactions_list",
        responses=paginated("PaginatedWalletTransactionList", OutputSerializer(many=True)),
        tags=["wallet"],
    )
    def get(self, request: Request) -> Response:
        return page_response(
            request, self, selectors.wallet_entries(user=signed_in(request)), self.OutputSerializer
        )


class TopUpCreateApi(APIView):
    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        amount = WholeNumberField(min_value=1)

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        amount = serializers.IntegerField()
        provider = serializers.CharField()
        provider_reference = serializers.CharField()
        balance = serializers.IntegerField()

    @extend_schema(
        request=InputSerializer,
        responses={201: OutputSerializer},
        parameters=[IDEMPOTENCY_KEY],
        tags=["wallet"],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        top_up = wallet_top_up(
            user=signed_in(request),
            amount=data.validated_data["amount"],
            provider=default_provider(),
            idempotency_key=idempotency_key(request),
        )
        body = {
            "id": top_up.pk,
            "amount": top_up.amount,
            "provider": top_up.provider,
            "provider_reference": top_up.provider_reference,
            "balance": selectors.wallet_balance(user=signed_in(request)),
        }
        return Response(self.OutputSerializer(body).data, status=status.HTTP_201_CREATED)


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
