"""Token API: the CLI's ``atelier login`` trades a username and password for a token."""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import signed_in
from core.errors import ApplicationError
from core.security import lockout_message
from core.services import token_create, token_revoke
from core.throttles import ApiThrottle, LoginThrottle
from core.validators import refuse_invisible_characters


class TokenOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)


class TokenCreateApi(APIView):
    """Create a token, either logged in (session or token) or with username and password."""

    permission_classes = [AllowAny]
    throttle_classes = [ApiThrottle, LoginThrottle]

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(
            max_length=100, default="cli", validators=[refuse_invisible_characters]
        )
        username = serializers.CharField(required=False)
        password = serializers.CharField(required=False, style={"input_type": "password"})

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        username = serializers.CharField()
        details = TokenOutputSerializer()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = request.user if request.user.is_authenticated else None
        if data.validated_data.get("username"):
            user = authenticate(
                request._request,
                username=data.validated_data["username"],
                password=data.validated_data.get("password", ""),
            )
            locked = getattr(request._request, "login_lockout", 0)
            if user is None and locked:
                raise exceptions.Throttled(
                    wait=locked, detail=lockout_message(locked), code="locked_out"
                )
            if user is None:
                raise ApplicationError(
                    "Wrong username or password.", code="bad_credentials", status=401
                )
        if user is None:
            raise ApplicationError(
                "Log in, or give a username and password.", code="not_authenticated", status=401
            )
        issued = token_create(user=user, name=data.validated_data["name"])
        body = {
            "token": issued.secret,
            "username": user.get_username(),
            "details": TokenOutputSerializer(issued.token).data,
        }
        return Response(body, status=status.HTTP_201_CREATED)


class TokenListApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: TokenOutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        tokens = signed_in(request).api_tokens.filter(revoked_at__isnull=True)
        return Response(TokenOutputSerializer(tokens, many=True).data)


class TokenRevokeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={204: None})
    def delete(self, request: Request, token_id: int) -> Response:
        token_revoke(user=signed_in(request), token_id=token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WhoAmIApi(APIView):
    permission_classes = [IsAuthenticated]

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()
        is_staff = serializers.BooleanField()

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(request.user).data)
