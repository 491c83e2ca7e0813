"""The marketplace REST API: wallet, top-ups, listings, purchases, library, licenses."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated, IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import ApplicationError, NotFoundError
from marketplace import selectors
from marketplace.models import Listing, Purchase
from marketplace.payments import default_provider
from marketplace.services.ledger import wallet_top_up
from marketplace.services.listings import listing_create, listing_update
from marketplace.services.purchases import purchase_create
from registry.access import can_view_dataset, can_view_version
from registry.api.common import page_response, paginated
from registry.models import DatasetVersion, ModelVersion

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=True,
    description="Any unique string; repeating it returns the first result and moves nothing.",
)


class WholeNumberField(serializers.Field):
    """A whole number as a JSON integer: no strings, floats or booleans (credits, percents)."""

    def __init__(self, *, min_value: int = 0, **kwargs: Any) -> None:
        self.min_value = min_value
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            raise serializers.ValidationError("Must be a whole number (a JSON integer).")
        if data < self.min_value:
            raise serializers.ValidationError(f"Must be at least {self.min_value}.")
        return data

    def to_representation(self, value: int) -> int:
        return value


# drf-spectacular: document WholeNumberField as an integer.
from drf_spectacular.extensions import OpenApiSerializerFieldExtension  # noqa: E402
from drf_spectacular.plumbing import build_basic_type  # noqa: E402
from drf_spectacular.types import OpenApiTypes  # noqa: E402


class WholeNumberFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "marketplace.api.WholeNumberField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        return build_basic_type(OpenApiTypes.INT)


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key or len(key) > 200:
        raise ApplicationError(
            "Send an Idempotency-Key header (1-200 characters).", code="idempotency_key_required"
        )
    return key


# --- wallet ------------------------------------------------------------------------------


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
            idempotency_key=_idempotency_key(request),
        )
        body = {
            "id": top_up.pk,
            "amount": top_up.amount,
            "provider": top_up.provider,
            "provider_reference": top_up.provider_reference,
            "balance": selectors.wallet_balance(user=signed_in(request)),
        }
        return Response(self.OutputSerializer(body).data, status=status.HTTP_201_CREATED)


# --- listings ------------------------------------------------------------------------------


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


# --- purchases and library ---------------------------------------------------------------------


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
        key = _idempotency_key(request)
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


class LicenseListApi(APIView):
    permission_classes = [IsAuthenticatedOrReadOnly]

    class OutputSerializer(serializers.Serializer):
        code = serializers.CharField()
        name = serializers.CharField()
        url = serializers.CharField()
        credit_required = serializers.BooleanField()
        commercial_use = serializers.CharField()
        derivatives_allowed = serializers.BooleanField()
        different_license_allowed = serializers.BooleanField()

    @extend_schema(responses=OutputSerializer(many=True), tags=["licenses"])
    def get(self, request: Request) -> Response:
        from marketplace.models import License

        return Response(self.OutputSerializer(License.objects.all(), many=True).data)


class ReviewListCreateApi(APIView):
    permission_classes = [IsAuthenticatedOrReadOnly]

    class InputSerializer(serializers.Serializer):
        model_version_id = serializers.IntegerField()
        rating = WholeNumberField(min_value=1)
        text = serializers.CharField(required=False, allow_blank=True, max_length=5000)

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        user = serializers.CharField(source="user.username")
        model_version_id = serializers.IntegerField()
        rating = serializers.IntegerField()
        text = serializers.CharField()
        verified = serializers.BooleanField()
        created_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="v1_reviews_list",
        parameters=[OpenApiParameter("model_version_id", int, required=True)],
        responses=paginated("PaginatedReviewList", OutputSerializer(many=True)),
        tags=["reviews"],
    )
    def get(self, request: Request) -> Response:
        raw = request.query_params.get("model_version_id", "")
        if not raw.isdigit():
            raise ApplicationError("model_version_id must be a version id.", code="invalid_filter")
        version = ModelVersion.objects.select_related("model").filter(pk=int(raw)).first()
        if version is None or not can_view_version(request.user, version):
            raise NotFoundError("No such version.")
        return page_response(
            request, self, selectors.reviews_for_version(version), self.OutputSerializer
        )

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, tags=["reviews"])
    def post(self, request: Request) -> Response:
        from marketplace.services.reviews import review_create

        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        version = (
            ModelVersion.objects.select_related("model").filter(pk=v["model_version_id"]).first()
        )
        if version is None:
            raise NotFoundError("No such version.")
        review = review_create(
            user=signed_in(request), version=version, rating=v["rating"], text=v.get("text", "")
        )
        return Response(self.OutputSerializer(review).data, status=status.HTTP_201_CREATED)
