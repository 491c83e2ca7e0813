"""Models, their versions, sample images, and files (lookup by hash, per-file download)."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpResponseRedirect
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotAuthenticated
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated, IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import ApplicationError, NotFoundError, PayloadTooLargeError
from core.throttles import ApiThrottle, DownloadThrottle
from registry.access import download_decision
from registry.api.common import (
    PAGE_PARAMETERS,
    has_nul,
    not_found_message,
    page_response,
    paginated,
    wants_mine,
)
from registry.filters import model_filters
from registry.http import counts_as_download
from registry.models import (
    BaseModelFamily,
    FileLayout,
    LineageRelation,
    Model,
    ModelFile,
    ModelKind,
    ModelVersion,
    Upload,
    Visibility,
)
from registry.selectors.datasets import dataset_version_detail
from registry.selectors.models import model_detail, model_list, visible_models
from registry.selectors.versions import (
    model_versions,
    version_detail,
    visible_files_by_hash,
    visible_versions,
)
from registry.serializers import (
    FileSerializer,
    ModelDetailSerializer,
    ModelListItemSerializer,
    SampleImageSerializer,
    VersionDetailSerializer,
    VersionRefSerializer,
    VersionWithFilesSerializer,
    name_field,
    tags_field,
)
from registry.services.catalog import (
    FileSpec,
    ParentSpec,
    download_count_increment,
    model_create,
    model_update,
    version_create,
    version_publish,
    version_unpublish,
)
from registry.services.downloads import signed_file_url
from registry.services.images import sample_image_add, sample_image_max_bytes

MAX_DESCRIPTION_CHARS = 50_000
MULTIPART_SLACK_BYTES = 64 * 1024


def _visible_model(request: Request, model_id: int) -> Model:
    model = visible_models(request.user).filter(pk=model_id).first()
    if model is None:
        raise NotFoundError(not_found_message("model"))
    return model


def _visible_version(request: Request, version_id: int) -> ModelVersion:
    version = visible_versions(request.user).filter(pk=version_id).first()
    if version is None:
        raise NotFoundError(not_found_message("model version"))
    return version


def _model_data(request: Request, model_id: int) -> dict[str, Any]:
    model = model_detail(model_id=model_id, user=request.user)
    if model is None:
        raise NotFoundError(not_found_message("model"))
    return ModelDetailSerializer(model, context={"request": request}).data


def _version_data(request: Request, version_id: int) -> dict[str, Any]:
    version = version_detail(version_id=version_id, user=request.user)
    if version is None:
        raise NotFoundError(not_found_message("model version"))
    return VersionDetailSerializer(version, context={"request": request}).data


MODEL_LIST_PARAMETERS = [
    OpenApiParameter("q", OpenApiTypes.STR, description="Full-text search (web-search syntax)."),
    OpenApiParameter("kind", OpenApiTypes.STR, enum=ModelKind.values, many=True),
    OpenApiParameter(
        "base_model",
        OpenApiTypes.STR,
        enum=BaseModelFamily.values,
        many=True,
        description="Base-model family of a published version.",
    ),
    OpenApiParameter("tags", OpenApiTypes.STR, description="Comma-separated; all must match."),
    OpenApiParameter("license", OpenApiTypes.STR, description="License code of a version."),
    OpenApiParameter("creator", OpenApiTypes.STR, description="The owner's username."),
    OpenApiParameter(
        "price",
        OpenApiTypes.STR,
        enum=["free", "paid"],
        description="What the newest published version costs now: free or paid.",
    ),
    OpenApiParameter(
        "sort",
        OpenApiTypes.STR,
        enum=["newest", "downloads", "rating", "price_low", "price_high", "relevance"],
        description="Default: relevance with q, else newest.",
    ),
    *PAGE_PARAMETERS,
]


class ModelListCreateApi(APIView):
    """GET: listed models (or ``mine=1``), filtered, searched, sorted, paginated.
    POST: create a model (no version yet)."""

    permission_classes = [IsAuthenticatedOrReadOnly]

    class InputSerializer(serializers.Serializer):
        name = name_field(max_length=200)
        kind = serializers.ChoiceField(choices=ModelKind.choices)
        description = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=MAX_DESCRIPTION_CHARS
        )
        tags = tags_field(required=False, default=list)
        visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.PUBLIC)

    @extend_schema(
        operation_id="models_list",
        parameters=MODEL_LIST_PARAMETERS,
        responses={200: paginated("PaginatedModelList", ModelListItemSerializer(many=True))},
    )
    def get(self, request: Request) -> Response:
        mine = wants_mine(request)
        filters = model_filters(request.query_params)
        models = model_list(user=request.user, filters=filters, mine=mine)
        return page_response(
            request, self, models, ModelListItemSerializer, context={"request": request}
        )

    @extend_schema(
        operation_id="models_create",
        request=InputSerializer,
        responses={201: ModelDetailSerializer},
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        model = model_create(owner=signed_in(request), **data.validated_data)
        return Response(_model_data(request, model.pk), status=status.HTTP_201_CREATED)


class ModelDetailApi(APIView):
    """GET: a model with the versions the caller may see. PATCH: the owner edits it."""

    permission_classes = [IsAuthenticatedOrReadOnly]

    class InputSerializer(serializers.Serializer):
        name = name_field(max_length=200, required=False)
        description = serializers.CharField(
            required=False, allow_blank=True, max_length=MAX_DESCRIPTION_CHARS
        )
        tags = tags_field(required=False)
        visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)

    @extend_schema(operation_id="models_retrieve", responses={200: ModelDetailSerializer})
    def get(self, request: Request, model_id: int) -> Response:
        return Response(_model_data(request, model_id))

    @extend_schema(
        operation_id="models_update",
        request=InputSerializer,
        responses={200: ModelDetailSerializer},
    )
    def patch(self, request: Request, model_id: int) -> Response:
        model = _visible_model(request, model_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        model_update(model=model, user=signed_in(request), **data.validated_data)
        return Response(_model_data(request, model_id))


class VersionFileInputSerializer(serializers.Serializer):
    upload_id = serializers.UUIDField()
    path = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    is_primary = serializers.BooleanField(required=False, default=False)


class VersionParentInputSerializer(serializers.Serializer):
    relation = serializers.ChoiceField(choices=LineageRelation.choices)
    version_id = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    dataset_version_id = serializers.IntegerField(required=False, allow_null=True, min_value=1)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if (attrs.get("version_id") is None) == (attrs.get("dataset_version_id") is None):
            raise serializers.ValidationError(
                "Give exactly one of version_id and dataset_version_id."
            )
        return attrs


def _file_specs(request: Request, files: list[dict[str, Any]]) -> list[FileSpec]:
    ids: list[uuid.UUID] = [f["upload_id"] for f in files]
    uploads = {u.pk: u for u in Upload.objects.filter(pk__in=ids, user_id=signed_in(request).pk)}
    specs = []
    for item in files:
        upload = uploads.get(item["upload_id"])
        if upload is None:
            raise NotFoundError(
                f"No upload {item['upload_id']} of yours.",
                code="upload_not_found",
                details={"upload_id": str(item["upload_id"])},
            )
        specs.append(FileSpec(upload=upload, path=item["path"], is_primary=item["is_primary"]))
    return specs


def _parent_specs(request: Request, parents: list[dict[str, Any]]) -> list[ParentSpec]:
    specs = []
    for item in parents:
        if item.get("version_id") is not None:
            parent = visible_versions(request.user).filter(pk=item["version_id"]).first()
            if parent is None:
                raise ApplicationError(
                    f"No model version {item['version_id']} visible to you.",
                    code="parent_not_found",
                    details={"version_id": item["version_id"]},
                )
            specs.append(ParentSpec(relation=item["relation"], version=parent))
        else:
            dataset_version = dataset_version_detail(
                dataset_version_id=item["dataset_version_id"], user=request.user
            )
            if dataset_version is None:
                raise ApplicationError(
                    f"No dataset version {item['dataset_version_id']} visible to you.",
                    code="parent_not_found",
                    details={"dataset_version_id": item["dataset_version_id"]},
                )
            specs.append(ParentSpec(relation=item["relation"], dataset_version=dataset_version))
    return specs


class ModelVersionListCreateApi(APIView):
    """GET: the versions of a model the caller may see, with files.
    POST: the owner creates a draft version from completed uploads."""

    permission_classes = [IsAuthenticatedOrReadOnly]

    class InputSerializer(serializers.Serializer):
        name = name_field(max_length=100)
        description = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=MAX_DESCRIPTION_CHARS
        )
        base_model = serializers.ChoiceField(
            choices=BaseModelFamily.choices,
            required=False,
            allow_blank=True,
            default="",
            help_text="Detected from the primary file when left out.",
        )
        base_model_name = serializers.CharField(
            required=False,
            allow_blank=True,
            default="",
            max_length=40,
            help_text="The base model as Civitai names it (SDXL 1.0, Pony, Illustrious, "
            "NoobAI...); detected from the file's metadata and names when left out.",
        )
        trigger_words = serializers.ListField(
            child=serializers.CharField(max_length=200),
            required=False,
            default=list,
            max_length=50,
        )
        layout = serializers.ChoiceField(choices=FileLayout.choices, default=FileLayout.SINGLE_FILE)
        # DRF hands max_length to the ListSerializer (the stubs do not know it).
        files = VersionFileInputSerializer(  # type: ignore[call-arg]
            many=True, allow_empty=False, max_length=500
        )
        parents = VersionParentInputSerializer(many=True, required=False, default=list)
        license_code = serializers.CharField(
            max_length=64, required=False, allow_blank=True, default=""
        )

    @extend_schema(
        operation_id="models_versions_list",
        responses={200: VersionWithFilesSerializer(many=True)},
    )
    def get(self, request: Request, model_id: int) -> Response:
        model = _visible_model(request, model_id)
        versions = model_versions(model=model, user=request.user)
        return Response(
            VersionWithFilesSerializer(versions, many=True, context={"request": request}).data
        )

    @extend_schema(
        operation_id="models_versions_create",
        request=InputSerializer,
        responses={201: VersionDetailSerializer},
    )
    def post(self, request: Request, model_id: int) -> Response:
        model = _visible_model(request, model_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        files = _file_specs(request, values.pop("files"))
        parents = _parent_specs(request, values.pop("parents"))
        version = version_create(
            model=model, user=signed_in(request), files=files, parents=parents, **values
        )
        return Response(_version_data(request, version.pk), status=status.HTTP_201_CREATED)


class VersionDetailApi(APIView):
    """A version with files (every hash, detection, download URL), images and lineage."""

    @extend_schema(operation_id="versions_retrieve", responses={200: VersionDetailSerializer})
    def get(self, request: Request, version_id: int) -> Response:
        return Response(_version_data(request, version_id))


class VersionPublishApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="versions_publish", request=None, responses={200: VersionDetailSerializer}
    )
    def post(self, request: Request, version_id: int) -> Response:
        version = _visible_version(request, version_id)
        version_publish(version=version, user=signed_in(request))
        return Response(_version_data(request, version_id))


class VersionUnpublishApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="versions_unpublish", request=None, responses={200: VersionDetailSerializer}
    )
    def post(self, request: Request, version_id: int) -> Response:
        version = _visible_version(request, version_id)
        version_unpublish(version=version, user=signed_in(request))
        return Response(_version_data(request, version_id))


class VersionImageCreateApi(APIView):
    """Multipart upload of one sample image (PNG, JPEG or WebP), checked with Pillow."""

    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        image = serializers.FileField()
        prompt = serializers.CharField(required=False, allow_blank=True, default="")
        parameters = serializers.JSONField(required=False, default=dict, binary=True)

        def validate_parameters(self, value: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise serializers.ValidationError("parameters must be a JSON object.")
            if has_nul(value):
                raise serializers.ValidationError("parameters must not hold NUL characters.")
            return value

    @extend_schema(
        operation_id="versions_images_create",
        request={"multipart/form-data": InputSerializer},
        responses={201: SampleImageSerializer},
    )
    def post(self, request: Request, version_id: int) -> Response:
        version = _visible_version(request, version_id)
        limit = sample_image_max_bytes()
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > limit + MULTIPART_SLACK_BYTES:
            raise PayloadTooLargeError(
                f"The request is {declared} bytes; an image may be at most {limit} bytes.",
                code="too_large",
                details={"limit": limit},
            )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        image = sample_image_add(
            version=version,
            user=signed_in(request),
            image=data.validated_data["image"],
            prompt=data.validated_data["prompt"],
            parameters=data.validated_data["parameters"],
        )
        return Response(
            SampleImageSerializer(image, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )


class FileMatchSerializer(FileSerializer):
    version = VersionRefSerializer()


class FileByHashApi(APIView):
    """Files whose bytes match a SHA-256, AutoV1/V2/V3, CRC32 or BLAKE3, any case."""

    class OutputSerializer(serializers.Serializer):
        hash = serializers.CharField()
        files = FileMatchSerializer(many=True)

    @extend_schema(operation_id="files_by_hash", responses={200: OutputSerializer})
    def get(self, request: Request, hash_value: str) -> Response:
        value = hash_value.strip().lower()
        if not (8 <= len(value) <= 64) or any(c not in "0123456789abcdef" for c in value):
            raise ApplicationError(
                "A hash is 8 to 64 hexadecimal digits.", code="bad_hash", details={"hash": value}
            )
        files = list(visible_files_by_hash(hash_value=value, user=request.user))
        if not files:
            raise NotFoundError(
                "No file with that hash is visible to you.", details={"hash": value}
            )
        body = {"hash": value, "files": files}
        return Response(self.OutputSerializer(body, context={"request": request}).data)


class FileDownloadApi(APIView):
    """302 to a short-lived signed URL of one file of a version (counts a download)."""

    throttle_classes = [ApiThrottle, DownloadThrottle]

    @extend_schema(
        operation_id="files_download",
        responses={302: OpenApiResponse(description="Redirect to a signed file URL.")},
    )
    def get(self, request: Request, file_id: int) -> HttpResponseRedirect:
        model_file = (
            ModelFile.objects.select_related("blob", "version", "version__model")
            .filter(pk=file_id)
            .first()
        )
        if model_file is None:
            raise NotFoundError(not_found_message("file"))
        decision = download_decision(request.user, model_file.version)
        if not decision.allowed:
            if decision.status == 403 and not request.user.is_authenticated:
                raise NotAuthenticated("Log in or pass an API token to download this file.")
            raise ApplicationError(
                decision.message or "You may not download this file.",
                code=decision.code or "forbidden",
                status=decision.status,
                details=decision.details,
            )
        if counts_as_download(request):
            download_count_increment(target=model_file.version)
        url = signed_file_url(
            blob=model_file.blob, filename=model_file.filename, user_id=request.user.pk or 0
        )
        return HttpResponseRedirect(request.build_absolute_uri(url) if url.startswith("/") else url)
