"""Core's REST API routes, under ``/api/v1/auth/`` (``core/urls.py``). Names are global, like
the pages' (``token-create``, ``whoami``)."""

from django.urls import path

from core.api import auth

urlpatterns = [
    path("tokens", auth.TokenCreateApi.as_view(), name="token-create"),
    path("tokens/list", auth.TokenListApi.as_view(), name="token-list"),
    path("tokens/<int:token_id>", auth.TokenRevokeApi.as_view(), name="token-revoke-api"),
    path("whoami", auth.WhoAmIApi.as_view(), name="whoami"),
]
