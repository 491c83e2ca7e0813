"""Query-string filters of the listing APIs.

The filter sets validate the query string and narrow a queryset; the selectors in
:mod:`registry.selectors` build the base queryset (visibility), then search and sort.
Filters over versions (base model, license) look at published versions only, except in
an owner's own listing (``mine=1``), where drafts count too.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Exists, OuterRef, QuerySet

from registry.models import (
    BaseModelFamily,
    Dataset,
    DatasetKind,
    Model,
    ModelKind,
    ModelVersion,
    VersionStatus,
)

MODEL_SORTS = ("newest", "downloads", "rating", "relevance")
DATASET_SORTS = ("newest", "name")
MAX_FILTER_TAGS = 10


def tag_names(raw: list[str]) -> list[str]:
    """Tags from repeated (``tags=a&tags=b``) or comma-separated (``tags=a,b``) values."""
    names: list[str] = []
    for value in raw:
        for part in value.split(","):
            name = part.strip().lower()
            if name and name not in names:
                names.append(name)
    return names


class _TaggedFilterSet(django_filters.FilterSet):
    """Adds ``tags``: every given tag must be on the item."""

    tags = django_filters.CharFilter(
        method="filter_tags", help_text="Comma-separated tag names; all must match."
    )

    def filter_tags(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        names = tag_names(self.data.getlist("tags") if hasattr(self.data, "getlist") else [value])
        for tag in names[:MAX_FILTER_TAGS]:
            # One join per tag; (item, tag) pairs are unique, so no row is repeated.
            queryset = queryset.filter(tags__name=tag)
        return queryset


class ModelFilter(_TaggedFilterSet):
    """``GET /api/v1/models`` filters. ``q`` and ``sort`` are validated here, applied by the
    selector (search ranks, then sorts)."""

    q = django_filters.CharFilter(max_length=200, help_text="Full-text search.")
    kind = django_filters.MultipleChoiceFilter(choices=ModelKind.choices)
    base_model = django_filters.MultipleChoiceFilter(
        choices=BaseModelFamily.choices,
        method="filter_base_model",
        help_text="The base-model family of a (published) version.",
    )
    license = django_filters.CharFilter(
        method="filter_license", max_length=64, help_text="A version's license code."
    )
    creator = django_filters.CharFilter(
        field_name="owner__username", lookup_expr="iexact", max_length=150
    )
    sort = django_filters.ChoiceFilter(
        choices=[(s, s) for s in MODEL_SORTS],
        help_text="newest (default), downloads, rating; relevance when q is given.",
    )

    class Meta:
        model = Model
        fields = ("q", "kind", "base_model", "tags", "license", "creator", "sort")

    def __init__(self, *args: Any, published_only: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.published_only = published_only

    def _with_version(self, queryset: QuerySet[Model], **lookup: Any) -> QuerySet[Model]:
        versions = ModelVersion.objects.filter(model=OuterRef("pk"), **lookup)
        if self.published_only:
            versions = versions.filter(status=VersionStatus.PUBLISHED)
        return queryset.filter(Exists(versions))

    def filter_base_model(
        self, queryset: QuerySet[Model], name: str, value: list[str]
    ) -> QuerySet[Model]:
        return self._with_version(queryset, base_model__in=value) if value else queryset

    def filter_license(self, queryset: QuerySet[Model], name: str, value: str) -> QuerySet[Model]:
        return self._with_version(queryset, license_code__iexact=value.strip())

    def filter_queryset(self, queryset: QuerySet[Model]) -> QuerySet[Model]:
        for name, value in self.form.cleaned_data.items():
            if name in ("q", "sort") or value in (None, "", []):
                continue
            queryset = self.filters[name].filter(queryset, value)
        return queryset


class DatasetFilter(_TaggedFilterSet):
    """``GET /api/v1/datasets`` filters; ``q`` and ``sort`` are applied by the selector."""

    q = django_filters.CharFilter(max_length=200, help_text="Search in name and description.")
    kind = django_filters.ChoiceFilter(choices=DatasetKind.choices)
    creator = django_filters.CharFilter(
        field_name="owner__username", lookup_expr="iexact", max_length=150
    )
    sort = django_filters.ChoiceFilter(choices=[(s, s) for s in DATASET_SORTS])

    class Meta:
        model = Dataset
        fields = ("q", "kind", "tags", "creator", "sort")

    def filter_queryset(self, queryset: QuerySet[Dataset]) -> QuerySet[Dataset]:
        for name, value in self.form.cleaned_data.items():
            if name in ("q", "sort") or value in (None, "", []):
                continue
            queryset = self.filters[name].filter(queryset, value)
        return queryset
