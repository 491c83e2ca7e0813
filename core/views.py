"""Account pages: log in (Django's view, throttled and with a lockout), sign up, API tokens."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from core.auth import AuthenticatedHttpRequest
from core.errors import ApplicationError
from core.forms import SignupForm, TokenForm
from core.security import lockout_message
from core.services import token_create, token_revoke, user_signup
from core.throttles import LoginThrottle, check_throttle


class LockoutAuthenticationForm(AuthenticationForm):
    """Says so when the username is locked out from this address (see core.security)."""

    def get_invalid_login_error(self) -> ValidationError:
        retry_after = getattr(self.request, "login_lockout", 0)
        if retry_after:
            return ValidationError(lockout_message(retry_after), code="locked_out")
        return super().get_invalid_login_error()


class LoginView(auth_views.LoginView):
    """Django's login page; POSTs are rate-limited per address, lockouts answer 429."""

    template_name = "core/login.html"
    authentication_form = LockoutAuthenticationForm

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refused = check_throttle(request, LoginThrottle)
        if refused is not None:
            form = self.get_form_class()(request)  # unbound: authenticate() is not called
            form.full_clean()  # unbound: only sets an empty error dict
            form.cleaned_data = {}
            form.add_error(
                None,
                "Too many login attempts from your address; try again in "
                f"{refused['Retry-After']} seconds.",
            )
            response = self.render_to_response(self.get_context_data(form=form))
            response.status_code = 429
            response["Retry-After"] = refused["Retry-After"]
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        response = super().form_invalid(form)
        retry_after = getattr(self.request, "login_lockout", 0)
        if retry_after:
            response.status_code = 429
            response["Retry-After"] = str(retry_after)
        return response


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = user_signup(**form.cleaned_data)
        except ApplicationError as err:
            field = "username" if err.code == "username_taken" else "password"
            form.add_error(field, err.message)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("registry:browse")
    return render(request, "core/signup.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = TokenForm(request.POST or None)
    issued = None
    if request.method == "POST" and form.is_valid():
        issued = token_create(user=request.user, name=form.cleaned_data["name"])
        form = TokenForm()
    context = {
        "form": form,
        "issued": issued,
        "tokens": request.user.api_tokens.filter(revoked_at__isnull=True),
    }
    return render(request, "core/tokens.html", context)


@login_required
@require_POST
def token_revoke_view(request: AuthenticatedHttpRequest, token_id: int) -> HttpResponse:
    try:
        token_revoke(user=request.user, token_id=token_id)
    except ApplicationError:
        pass
    return redirect("tokens")
