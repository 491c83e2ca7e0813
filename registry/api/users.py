"""Creators' public profiles."""

from __future__ import annotations

import re

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import NotFoundError
from registry.selectors.creators import creator_profile
from registry.serializers import DatasetListItemSerializer, ModelListItemSerializer

USERNAME = re.compile(r"[\w.@+-]{1,150}")  # what Django's username validator accepts


class CreatorCountsSerializer(serializers.Serializer):
    models = serializers.IntegerField()
    datasets = serializers.IntegerField()
    published_versions = serializers.IntegerField()
    downloads = serializers.IntegerField()


class UserProfileApi(APIView):
    """A creator: their listed models and datasets (the 50 newest; the full lists are
    ``/api/v1/models?creator=<username>`` and ``/api/v1/datasets?creator=<username>``)."""

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField(source="user.pk")
        username = serializers.CharField(source="user.username")
        date_joined = serializers.DateTimeField(source="user.date_joined")
        models = ModelListItemSerializer(many=True)
        datasets = DatasetListItemSerializer(many=True)
        counts = CreatorCountsSerializer()

    @extend_schema(operation_id="users_retrieve", responses={200: OutputSerializer})
    def get(self, request: Request, username: str) -> Response:
        valid = USERNAME.fullmatch(username) is not None
        profile = creator_profile(username=username, user=request.user) if valid else None
        if profile is None:
            raise NotFoundError("No such user.")
        return Response(self.OutputSerializer(profile, context={"request": request}).data)
