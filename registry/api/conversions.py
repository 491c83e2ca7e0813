"""Converting a pickle file of a version to safetensors (a Celery task does the work)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import NotFoundError
from registry.access import can_view_version
from registry.api.common import not_found_message
from registry.models import ModelFile
from registry.services.conversion import model_file_conversion_request


class FileConversionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    path = serializers.CharField()
    conversion_status = serializers.CharField()
    conversion_error = serializers.CharField()
    converted_files = serializers.ListField(child=serializers.IntegerField())


def _output(model_file: ModelFile) -> dict[str, object]:
    return {
        "id": model_file.pk,
        "path": model_file.path,
        "conversion_status": model_file.conversion_status,
        "conversion_error": model_file.conversion_error,
        "converted_files": list(model_file.conversions.values_list("pk", flat=True)),
    }


def _file_for(request: Request, file_id: int) -> ModelFile:
    model_file = (
        ModelFile.objects.select_related("version", "version__model").filter(pk=file_id).first()
    )
    if model_file is None or not can_view_version(request.user, model_file.version):
        raise NotFoundError(not_found_message("file"))
    return model_file


class FileConversionApi(APIView):
    """GET: the conversion's state. POST: queue the conversion (owner only; 202)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: FileConversionOutputSerializer})
    def get(self, request: Request, file_id: int) -> Response:
        return Response(_output(_file_for(request, file_id)))

    @extend_schema(
        request=inline_serializer("FileConversionInput", {}),
        responses={202: FileConversionOutputSerializer},
    )
    def post(self, request: Request, file_id: int) -> Response:
        model_file = model_file_conversion_request(
            model_file=_file_for(request, file_id), user=signed_in(request)
        )
        model_file.refresh_from_db()
        return Response(_output(model_file), status=status.HTTP_202_ACCEPTED)
