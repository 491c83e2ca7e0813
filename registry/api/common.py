"""Pagination, the ``mine`` switch and schema helpers shared by the registry's API views."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotAuthenticated
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

TRUE_VALUES = frozenset({"1", "true", "yes", "on"})


class ListPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


def page_response(
    request: Request,
    view: APIView,
    items: QuerySet[Any] | Sequence[Any],
    serializer: type[serializers.BaseSerializer[Any]],
    *,
    context: dict[str, Any] | None = None,
    keep: Callable[[Any], bool] | None = None,
) -> Response:
    """The one pagination of every API list: a page of ``items`` (``page``, and ``page_size``
    up to 100) through ``serializer``, in DRF's page-number envelope. ``keep`` drops rows of
    the page that the caller may not see (the listings)."""
    paginator = ListPagination()
    page: list[Any] = paginator.paginate_queryset(items, request, view=view) or []
    if keep is not None:
        page = [row for row in page if keep(row)]
    return paginator.get_paginated_response(serializer(page, many=True, context=context or {}).data)


def wants_mine(request: Request) -> bool:
    """``mine=1``: the caller's own items, drafts included. Anonymous callers get 401."""
    mine = request.query_params.get("mine", "").strip().lower() in TRUE_VALUES
    if mine and not request.user.is_authenticated:
        raise NotAuthenticated("Log in or pass an API token to list your own items.")
    return mine


def paginated(name: str, item: serializers.Serializer) -> serializers.Serializer:
    """The schema of a page of ``item``: DRF's page-number envelope."""
    return inline_serializer(
        name,
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": item,
        },
    )


PAGE_PARAMETERS = [
    OpenApiParameter("page", OpenApiTypes.INT, description="Page number, from 1."),
    OpenApiParameter("page_size", OpenApiTypes.INT, description="Items per page, at most 100."),
    OpenApiParameter(
        "mine", OpenApiTypes.BOOL, description="Only the caller's own items, drafts included."
    ),
]


def not_found_message(what: str) -> str:
    return f"No such {what}, or it is not visible to you."


def has_nul(value: object) -> bool:
    """Whether a JSON value holds a NUL character anywhere (PostgreSQL's jsonb refuses it)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False
