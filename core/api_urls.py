from django.urls import path

from core import api

urlpatterns = [
    path("tokens", api.TokenCreateApi.as_view(), name="token-create"),
    path("tokens/list", api.TokenListApi.as_view(), name="token-list"),
    path("tokens/<int:token_id>", api.TokenRevokeApi.as_view(), name="token-revoke-api"),
    path("whoami", api.WhoAmIApi.as_view(), name="whoami"),
]
