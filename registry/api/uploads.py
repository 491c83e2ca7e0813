"""Upload API: create, append (resumable), inspect the offset, complete, abort.

The append call takes the raw bytes as the request body at ``Upload-Offset`` (the header
name the tus protocol uses); it never buffers the body in memory.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.bodies import request_body_discard
from core.errors import ApplicationError
from registry.models import Upload
from registry.services.uploads import (
    upload_abort,
    upload_append,
    upload_complete,
    upload_create,
    upload_summary,
)


class UploadOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    filename = serializers.CharField()
    size = serializers.IntegerField()
    offset = serializers.IntegerField()
    status = serializers.CharField()
    sha256 = serializers.CharField()
    inspection = serializers.JSONField()
    error = serializers.CharField()


class RawBytesParser(BaseParser):
    """Accepts any body; the view reads the stream itself, so nothing is buffered."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


def _own_upload(request: Request, upload_id: str) -> Upload:
    return get_object_or_404(Upload, pk=upload_id, user=request.user)


class UploadCreateApi(APIView):
    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        filename = serializers.CharField(max_length=255)
        size = serializers.IntegerField(min_value=1)
        sha256 = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={201: UploadOutputSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = upload_create(user=signed_in(request), **data.validated_data)
        return Response(upload_summary(upload), status=status.HTTP_201_CREATED)


class UploadDetailApi(APIView):
    """GET/HEAD: where the upload stands. PATCH: append bytes at ``Upload-Offset``.

    A PATCH refused before its body is read (413, 409, 404, 401, 429) reads and drops the
    rest of the body before answering, so that the client's next request on the same
    connection is served (see :mod:`core.bodies`).
    """

    permission_classes = [IsAuthenticated]
    parser_classes = [RawBytesParser]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = super().dispatch(request, *args, **kwargs)
        request_body_discard(request)
        return response

    @extend_schema(responses={200: UploadOutputSerializer})
    def get(self, request: Request, upload_id: str) -> Response:
        upload = _own_upload(request, upload_id)
        response = Response(upload_summary(upload))
        response["Upload-Offset"] = str(upload.offset)
        response["Upload-Length"] = str(upload.size)
        return response

    @extend_schema(
        request={"application/offset+octet-stream": bytes},
        parameters=[OpenApiParameter("Upload-Offset", int, OpenApiParameter.HEADER, True)],
        responses={200: UploadOutputSerializer},
    )
    def patch(self, request: Request, upload_id: str) -> Response:
        upload = _own_upload(request, upload_id)
        raw_offset = request.headers.get("Upload-Offset", "")
        if not raw_offset.isdigit():
            raise ApplicationError(
                "The Upload-Offset header (a byte offset) is required.", code="offset_required"
            )
        upload = upload_append(upload=upload, offset=int(raw_offset), stream=request._request)
        response = Response(upload_summary(upload))
        response["Upload-Offset"] = str(upload.offset)
        return response

    @extend_schema(responses={204: None})
    def delete(self, request: Request, upload_id: str) -> Response:
        upload_abort(upload=_own_upload(request, upload_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class UploadCompleteApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=inline_serializer("UploadCompleteInput", {}),
        responses={200: UploadOutputSerializer},
    )
    def post(self, request: Request, upload_id: str) -> Response:
        upload = upload_complete(upload=_own_upload(request, upload_id))
        return Response(upload_summary(upload))
