"""Data owners' nodes: register (the node token is shown once), list, heartbeat, revoke."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from federated import selectors
from federated.api.common import TAGS
from federated.auth import (
    NodeTokenAuthentication,
    own_node,
)
from federated.models import Node
from federated.services.nodes import node_heartbeat, node_register, node_revoke


class NodeDatasetRefSerializer(serializers.Serializer):
    dataset_version_id = serializers.IntegerField()
    name = serializers.CharField(source="dataset_version.dataset.name")
    manifest_hash = serializers.CharField(source="dataset_version.manifest_hash")


class NodeOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    public_key = serializers.CharField()
    key_type = serializers.CharField()
    key_fingerprint = serializers.CharField()
    flwr_node_id = serializers.CharField()
    # The SuperLink's id for the node's key ("" until the site registered it there).
    superlink_node_id = serializers.CharField()
    version = serializers.CharField(source="software_version")
    serving = serializers.ListField(child=serializers.CharField())
    datasets = NodeDatasetRefSerializer(many=True)
    last_seen_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class NodeListCreateApi(APIView):
    """GET: the caller's nodes with their status. POST: register a node (its token is in the
    answer, once)."""

    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        public_key = serializers.CharField(max_length=2000)

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        name = serializers.CharField()
        token = serializers.CharField(help_text="The node token (atn_...), shown only now.")
        key_fingerprint = serializers.CharField()

    @extend_schema(
        parameters=[
            OpenApiParameter("revoked", OpenApiTypes.BOOL, description="Include revoked nodes.")
        ],
        responses=NodeOutputSerializer(many=True),
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        revoked = request.query_params.get("revoked", "") in ("1", "true", "yes")
        nodes = selectors.nodes_of_owner(owner=signed_in(request), include_revoked=revoked)
        return Response(NodeOutputSerializer(nodes, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, tags=TAGS)
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        registered = node_register(owner=signed_in(request), **data.validated_data)
        body = {
            "id": registered.node.pk,
            "name": registered.node.name,
            "token": registered.token,
            "key_fingerprint": registered.node.key_fingerprint,
        }
        return Response(self.OutputSerializer(body).data, status=status.HTTP_201_CREATED)


class NodeHeartbeatApi(APIView):
    """A node says it is alive and which datasets (manifest hashes) it serves."""

    authentication_classes = [NodeTokenAuthentication]
    permission_classes = [IsAuthenticated]

    class InputSerializer(serializers.Serializer):
        datasets = serializers.ListField(
            child=serializers.CharField(max_length=64), max_length=100, required=False, default=list
        )
        flwr_node_id = serializers.CharField(
            max_length=40, required=False, allow_blank=True, default=""
        )
        version = serializers.CharField(max_length=60, required=False, allow_blank=True, default="")

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        name = serializers.CharField()
        status = serializers.CharField()
        last_seen_at = serializers.DateTimeField()
        datasets = NodeDatasetRefSerializer(many=True)

    @extend_schema(request=InputSerializer, responses=OutputSerializer, tags=TAGS)
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assert isinstance(request.auth, Node)  # NodeTokenAuthentication
        node = node_heartbeat(node=request.auth, **data.validated_data)
        served = [
            t
            for t in node.datasets.select_related("dataset_version__dataset")
            if t.dataset_version.manifest_hash in node.serving
        ]
        body = {
            "id": node.pk,
            "name": node.name,
            "status": node.status,
            "last_seen_at": node.last_seen_at,
            "datasets": served,
        }
        return Response(self.OutputSerializer(body).data)


class NodeRevokeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=NodeOutputSerializer, tags=TAGS)
    def post(self, request: Request, node_id: int) -> Response:
        node = node_revoke(node=own_node(request, node_id), user=signed_in(request))
        return Response(NodeOutputSerializer(node).data)
