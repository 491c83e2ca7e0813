"""Reviews of versions."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import ApplicationError, NotFoundError
from marketplace import selectors
from marketplace.api.common import WholeNumberField
from registry.access import can_view_version
from registry.api.common import page_response, paginated
from registry.models import ModelVersion


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
