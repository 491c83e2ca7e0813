"""Site-wide pages that join every app: the home page (``/``) and the landing page for
visitors."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from config.selectors import landing_facts
from registry.views.catalog import browse


@require_GET
def landing(request: HttpRequest) -> HttpResponse:
    """What creators, buyers, data owners and trainers get here, with the site's own numbers
    and images; signed-in users see the same page with their next steps instead of sign-up."""
    return render(request, "core/landing.html", {"facts": landing_facts()})


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """``/``: the landing page for a visitor who is not signed in; the browse page (also at
    ``/models/``) for a signed-in user, and for anyone who asks it something (``/?q=...``:
    a shared search link, a filter, a page), so search links keep working for everyone."""
    if request.user.is_authenticated or request.GET:
        return browse(request)
    return landing(request)
