"""Core routes, included once by ``config/urls.py``: the REST API (``api/urls.py``) under
``/api/v1/auth/``, and the account pages under ``/accounts/``. No namespace: ``login`` is the
name ``LOGIN_URL`` and Django's auth views use."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from core import views

urlpatterns = [
    path("api/v1/auth/", include("core.api.urls")),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/tokens/", views.tokens, name="tokens"),
    path("accounts/tokens/<int:token_id>/revoke/", views.token_revoke_view, name="token-revoke"),
]
