"""Account pages: sign up, API tokens. Log in and out are Django's own views."""

from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from core.errors import ApplicationError
from core.forms import SignupForm, TokenForm
from core.services import token_create, token_revoke, user_signup


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
def tokens(request: HttpRequest) -> HttpResponse:
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
def token_revoke_view(request: HttpRequest, token_id: int) -> HttpResponse:
    try:
        token_revoke(user=request.user, token_id=token_id)
    except ApplicationError:
        pass
    return redirect("tokens")
