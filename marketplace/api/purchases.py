"""Purchases and the buyer's library."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import NotFoundError
from marketplace import selectors
from marketplace.api.common import IDEMPOTENCY_KEY, idempotency_key
from marketplace.models import Listing, Purchase
from marketplace.services.purchases import purchase_create
from registry.api.common import page_response, paginated


class PurchaseOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    listing_id = serializers.IntegerField()
    price = serializers.IntegerField()
    ledger_transaction_id = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class PurchaseCreateApi(APIView):
    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        listing_id = serializers.IntegerField()

    @extend_schema(
        request=InputSerializer,
        responses={201: PurchaseOutputSerializer, 200: PurchaseOutputSerializer},
        parameters=[IDEMPOTENCY_KEY],
        tags=["purchases"],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = idempotency_key(request)
        listing = Listing.objects.filter(pk=data.validated_data["listing_id"]).first()
        if listing is None:
            raise NotFoundError("No such listing.")
        replay = Purchase.objects.filter(buyer_id=request.user.pk, idempotency_key=key).exists()
        purchase = purchase_create(buyer=signed_in(request), listing=listing, idempotency_key=key)
        return Response(
            PurchaseOutputSerializer(purchase).data,
            status=status.HTTP_200_OK if replay else status.HTTP_201_CREATED,
        )


class LibraryListApi(APIView):
    permission_classes = [IsAuthenticated]

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        model_version_id = serializers.IntegerField(allow_null=True)
        dataset_version_id = serializers.IntegerField(allow_null=True)
        title = serializers.SerializerMethodField()
        purchase_id = serializers.IntegerField(allow_null=True)
        download_url = serializers.SerializerMethodField()
        created_at = serializers.DateTimeField()

        def get_title(self, obj: Any) -> str:
            return str(obj.model_version or obj.dataset_version)

        def get_download_url(self, obj: Any) -> str:
            if obj.model_version_id:
                return f"/api/download/models/{obj.model_version_id}"
            return f"/api/download/datasets/{obj.dataset_version_id}"

    @extend_schema(
        operation_id="v1_library_list",
        responses=paginated("PaginatedLibraryList", OutputSerializer(many=True)),
        tags=["purchases"],
    )
    def get(self, request: Request) -> Response:
        return page_response(
            request, self, selectors.library_for(user=signed_in(request)), self.OutputSerializer
        )
