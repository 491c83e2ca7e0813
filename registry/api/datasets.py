"""Datasets: public ones host an uploaded archive; private ones publish a manifest only."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import NotFoundError
from registry.api.common import (
    PAGE_PARAMETERS,
    has_nul,
    not_found_message,
    page_response,
    paginated,
    wants_mine,
)
from registry.filters import dataset_filters
from registry.models import Dataset, DatasetKind, Upload, Visibility
from registry.selectors.datasets import (
    dataset_detail,
    dataset_list,
    dataset_version_detail,
    visible_datasets,
)
from registry.serializers import (
    DatasetDetailSerializer,
    DatasetListItemSerializer,
    DatasetVersionDetailSerializer,
    name_field,
    tags_field,
)
from registry.services.catalog import (
    dataset_create,
    dataset_version_create_private,
    dataset_version_create_public,
)

MAX_DESCRIPTION_CHARS = 50_000


def _dataset_data(request: Request, dataset_id: int) -> dict[str, Any]:
    dataset = dataset_detail(dataset_id=dataset_id, user=request.user)
    if dataset is None:
        raise NotFoundError(not_found_message("dataset"))
    return DatasetDetailSerializer(dataset, context={"request": request}).data


def _dataset_version_data(request: Request, dataset_version_id: int) -> dict[str, Any]:
    dataset_version = dataset_version_detail(
        dataset_version_id=dataset_version_id, user=request.user
    )
    if dataset_version is None:
        raise NotFoundError(not_found_message("dataset version"))
    return DatasetVersionDetailSerializer(dataset_version, context={"request": request}).data


DATASET_LIST_PARAMETERS = [
    OpenApiParameter("q", OpenApiTypes.STR, description="Search in name and description."),
    OpenApiParameter("kind", OpenApiTypes.STR, enum=DatasetKind.values),
    OpenApiParameter("tags", OpenApiTypes.STR, description="Comma-separated; all must match."),
    OpenApiParameter("creator", OpenApiTypes.STR, description="The owner's username."),
    OpenApiParameter("sort", OpenApiTypes.STR, enum=["newest", "name"]),
    *PAGE_PARAMETERS,
]


class DatasetListCreateApi(APIView):
    """GET: listed datasets (or ``mine=1``). POST: create a public or private dataset."""

    permission_classes = [IsAuthenticatedOrReadOnly]

    class InputSerializer(serializers.Serializer):
        name = name_field(max_length=200)
        kind = serializers.ChoiceField(choices=DatasetKind.choices)
        description = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=MAX_DESCRIPTION_CHARS
        )
        tags = tags_field(required=False, default=list)
        visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.PUBLIC)

    @extend_schema(
        operation_id="datasets_list",
        parameters=DATASET_LIST_PARAMETERS,
        responses={200: paginated("PaginatedDatasetList", DatasetListItemSerializer(many=True))},
    )
    def get(self, request: Request) -> Response:
        mine = wants_mine(request)
        filters = dataset_filters(request.query_params)
        datasets = dataset_list(user=request.user, filters=filters, mine=mine)
        return page_response(
            request, self, datasets, DatasetListItemSerializer, context={"request": request}
        )

    @extend_schema(
        operation_id="datasets_create",
        request=InputSerializer,
        responses={201: DatasetDetailSerializer},
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        dataset = dataset_create(owner=signed_in(request), **data.validated_data)
        return Response(_dataset_data(request, dataset.pk), status=status.HTTP_201_CREATED)


class DatasetDetailApi(APIView):
    @extend_schema(operation_id="datasets_retrieve", responses={200: DatasetDetailSerializer})
    def get(self, request: Request, dataset_id: int) -> Response:
        return Response(_dataset_data(request, dataset_id))


class DatasetVersionCreateApi(APIView):
    """A new version: ``upload_id`` of a completed archive upload (public datasets), or the
    node's ``manifest`` (private datasets: metadata only, never images)."""

    permission_classes = [IsAuthenticatedOrReadOnly]

    class InputSerializer(serializers.Serializer):
        name = name_field(max_length=100)
        upload_id = serializers.UUIDField(required=False, allow_null=True)
        manifest = serializers.JSONField(required=False, allow_null=True)
        license_code = serializers.CharField(
            max_length=64, required=False, allow_blank=True, default=""
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            has_upload = attrs.get("upload_id") is not None
            has_manifest = attrs.get("manifest") is not None
            if has_upload == has_manifest:
                raise serializers.ValidationError(
                    "Give upload_id (public dataset) or manifest (private dataset), not both."
                )
            if has_manifest and not isinstance(attrs["manifest"], dict):
                raise serializers.ValidationError({"manifest": ["Must be a JSON object."]})
            if has_manifest and has_nul(attrs["manifest"]):
                raise serializers.ValidationError({"manifest": ["Must not hold NUL characters."]})
            return attrs

    @extend_schema(
        operation_id="datasets_versions_create",
        request=InputSerializer,
        responses={201: DatasetVersionDetailSerializer},
    )
    def post(self, request: Request, dataset_id: int) -> Response:
        dataset: Dataset | None = visible_datasets(request.user).filter(pk=dataset_id).first()
        if dataset is None:
            raise NotFoundError(not_found_message("dataset"))
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values.get("upload_id") is not None:
            upload = Upload.objects.filter(
                pk=values["upload_id"], user_id=signed_in(request).pk
            ).first()
            if upload is None:
                raise NotFoundError(
                    f"No upload {values['upload_id']} of yours.", code="upload_not_found"
                )
            version = dataset_version_create_public(
                dataset=dataset,
                user=signed_in(request),
                name=values["name"],
                upload=upload,
                license_code=values["license_code"],
            )
        else:
            version = dataset_version_create_private(
                dataset=dataset,
                user=signed_in(request),
                name=values["name"],
                manifest=values["manifest"],
                license_code=values["license_code"],
            )
        return Response(_dataset_version_data(request, version.pk), status=status.HTTP_201_CREATED)


class DatasetVersionDetailApi(APIView):
    @extend_schema(
        operation_id="dataset_versions_retrieve",
        responses={200: DatasetVersionDetailSerializer},
    )
    def get(self, request: Request, dataset_version_id: int) -> Response:
        return Response(_dataset_version_data(request, dataset_version_id))
