"""The licenses a listing may use."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


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
