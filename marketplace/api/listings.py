"""Listings: a version or dataset for sale, its price, royalty and shares."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import NotFoundError
from marketplace import selectors
from marketplace.api.common import WholeNumberField
from marketplace.models import Listing
from marketplace.services.listings import listing_create, listing_update
from registry.access import can_view_dataset, can_view_version
from registry.api.common import page_response, paginated
from registry.models import DatasetVersion, ModelVersion


class ShareSerializer(serializers.Serializer):
    username = serializers.CharField()
    percent = WholeNumberField(min_value=1)


class ListingOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    seller = serializers.CharField(source="seller.username")
    model_version_id = serializers.IntegerField(allow_null=True)
    dataset_version_id = serializers.IntegerField(allow_null=True)
    price = serializers.IntegerField()
    price_now = serializers.SerializerMethodField()
    early_access_until = serializers.DateTimeField(allow_null=True)
    royalty_bps = serializers.IntegerField()
    is_active = serializers.BooleanField()
    shares = serializers.SerializerMethodField()

    def get_price_now(self, listing: Listing) -> int:
        return selectors.listing_price_now(listing)

    def get_shares(self, listing: Listing) -> list[dict[str, Any]]:
        return [{"user_id": s.user_id, "percent": s.percent} for s in listing.shares.all()]


def _listing_visible(listing: Listing, user: Any) -> bool:
    if listing.model_version is not None:
        return can_view_version(user, listing.model_version)
    return can_view_dataset(user, listing.dataset_version.dataset)  # type: ignore[union-attr]


class ListingListCreateApi(APIView):
    permission_classes = [IsAuthenticatedOrReadOnly]

    class InputSerializer(serializers.Serializer):
        model_version_id = serializers.IntegerField(required=False)
        dataset_version_id = serializers.IntegerField(required=False)
        price = WholeNumberField(min_value=0, default=0)
        early_access_until = serializers.DateTimeField(required=False, allow_null=True)
        royalty_bps = WholeNumberField(min_value=0, default=0)
        shares = ShareSerializer(many=True, required=False)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if ("model_version_id" in attrs) == ("dataset_version_id" in attrs):
                raise serializers.ValidationError(
                    "Give exactly one of model_version_id and dataset_version_id."
                )
            return attrs

    @extend_schema(
        operation_id="v1_listings_list",
        responses=paginated("PaginatedListingList", ListingOutputSerializer(many=True)),
        tags=["listings"],
    )
    def get(self, request: Request) -> Response:
        qs: QuerySet[Listing] = selectors.listings_browse()
        return page_response(
            request,
            self,
            qs,
            ListingOutputSerializer,
            keep=lambda listing: _listing_visible(listing, request.user),
        )

    @extend_schema(
        request=InputSerializer, responses={201: ListingOutputSerializer}, tags=["listings"]
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        target: ModelVersion | DatasetVersion | None
        if "model_version_id" in v:
            target = (
                ModelVersion.objects.select_related("model")
                .filter(pk=v["model_version_id"])
                .first()
            )
            if target is not None and not can_view_version(request.user, target):
                target = None
        else:
            target = (
                DatasetVersion.objects.select_related("dataset")
                .filter(pk=v["dataset_version_id"])
                .first()
            )
            if target is not None and not can_view_dataset(request.user, target.dataset):
                target = None
        if target is None:
            raise NotFoundError("No such version.")
        listing = listing_create(
            seller=signed_in(request),
            target=target,
            price=v["price"],
            early_access_until=v.get("early_access_until"),
            royalty_bps=v["royalty_bps"],
            shares=[(s["username"], s["percent"]) for s in v.get("shares", [])],
        )
        return Response(ListingOutputSerializer(listing).data, status=status.HTTP_201_CREATED)


class ListingDetailApi(APIView):
    permission_classes = [IsAuthenticatedOrReadOnly]

    class InputSerializer(serializers.Serializer):
        price = WholeNumberField(min_value=0, required=False)
        early_access_until = serializers.DateTimeField(required=False, allow_null=True)
        royalty_bps = WholeNumberField(min_value=0, required=False)
        is_active = serializers.BooleanField(required=False)
        shares = ShareSerializer(many=True, required=False)

    def _get(self, request: Request, listing_id: int) -> Listing:
        listing = get_object_or_404(
            Listing.objects.select_related(
                "seller", "model_version__model", "dataset_version__dataset"
            ),
            pk=listing_id,
        )
        if not _listing_visible(listing, request.user):
            raise NotFoundError("No such listing.")
        return listing

    @extend_schema(responses=ListingOutputSerializer, tags=["listings"])
    def get(self, request: Request, listing_id: int) -> Response:
        return Response(ListingOutputSerializer(self._get(request, listing_id)).data)

    @extend_schema(request=InputSerializer, responses=ListingOutputSerializer, tags=["listings"])
    def patch(self, request: Request, listing_id: int) -> Response:
        listing = self._get(request, listing_id)
        data = self.InputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "shares" in changes:
            changes["shares"] = [(s["username"], s["percent"]) for s in changes["shares"]]
        listing = listing_update(listing=listing, user=signed_in(request), **changes)
        return Response(ListingOutputSerializer(listing).data)
