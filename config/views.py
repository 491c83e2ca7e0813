"""Site-wide pages that join every app: the landing page for visitors."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from config.selectors import landing_facts


@require_GET
def landing(request: HttpRequest) -> HttpResponse:
    """What creators, buyers, data owners and trainers get here, with the site's own numbers
    and images; signed-in users see the same page with their next steps instead of sign-up."""
    return render(request, "core/landing.html", {"facts": landing_facts()})
