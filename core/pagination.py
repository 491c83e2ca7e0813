"""The one pagination of the server-rendered lists (the API's is
:func:`registry.api.common.page_response`).

A page view calls :func:`page_context` and renders ``core/_pagination.html``: ``?page=N``, a
missing, bad or out-of-range number shows the nearest page, and the links keep the rest of the
query string (the filters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest

DEFAULT_PER_PAGE = 24


def query_without_page(request: HttpRequest) -> str:
    """The current query string without ``page`` (and without empty values), for page links."""
    return urlencode([(k, v) for k, v in request.GET.items() if k != "page" and v])


def page_of(
    request: HttpRequest, items: QuerySet[Any] | Sequence[Any], *, per_page: int = DEFAULT_PER_PAGE
) -> Page[Any]:
    """The page of ``items`` that ``?page=`` asks for (the nearest one when it is bad)."""
    return Paginator(items, per_page).get_page(request.GET.get("page"))


def page_context(
    request: HttpRequest, items: QuerySet[Any] | Sequence[Any], *, per_page: int = DEFAULT_PER_PAGE
) -> dict[str, Any]:
    """``page`` and ``query`` (the query string without ``page``), as ``core/_pagination.html``
    expects them."""
    return {
        "page": page_of(request, items, per_page=per_page),
        "query": query_without_page(request),
    }
