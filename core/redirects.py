"""Permanent redirects for routes that moved: the method and the body are kept (308)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.views.decorators.csrf import csrf_exempt


def moved_permanently(new_prefix: str) -> Callable[..., HttpResponsePermanentRedirect]:
    """A view for ``<old prefix><path:rest>`` that answers 308 to ``new_prefix + rest``, with
    the query string. 308, not 301: a client repeats a POST as a POST, with its body.

    CSRF-exempt: it changes nothing, and the request it points to is checked there.
    """

    @csrf_exempt
    def view(request: HttpRequest, rest: str = "") -> HttpResponsePermanentRedirect:
        target = new_prefix + rest
        if request.META.get("QUERY_STRING"):
            target += "?" + request.META["QUERY_STRING"]
        return HttpResponsePermanentRedirect(target, preserve_request=True)

    return view
