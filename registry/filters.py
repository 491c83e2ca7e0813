"""The query strings of the listing APIs, parsed into the filters the selectors take.

Each form validates ``GET /api/v1/models`` or ``/api/v1/datasets`` parameters and returns a
:class:`~registry.selectors.models.ModelFilters` or
:class:`~registry.selectors.datasets.DatasetFilters`; the one filter-and-sort of the
listings is :func:`registry.selectors.models.model_list` and
:func:`registry.selectors.datasets.dataset_list`. A value that does not validate is a 400
``invalid_filter`` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms
from django.http import QueryDict

from registry.models import BaseModelFamily, DatasetKind, ModelKind
from registry.selectors.common import invalid_filters
from registry.selectors.datasets import DATASET_ORDERINGS, DatasetFilters
from registry.selectors.models import MODEL_SORTS, PRICE_FILTERS, ModelFilters


def tag_names(raw: list[str]) -> list[str]:
    """Tags from repeated (``tags=a&tags=b``) or comma-separated (``tags=a,b``) values."""
    names: list[str] = []
    for value in raw:
        for part in value.split(","):
            name = part.strip().lower()
            if name and name not in names:
                names.append(name)
    return names


def _tags(data: Mapping[str, Any]) -> tuple[str, ...]:
    if isinstance(data, QueryDict):
        return tuple(tag_names(data.getlist("tags")))
    value = data.get("tags") or ""
    return tuple(tag_names(value if isinstance(value, list) else [str(value)]))


class ModelFilterForm(forms.Form):
    """``GET /api/v1/models`` filters."""

    q = forms.CharField(required=False, max_length=200)
    kind = forms.MultipleChoiceField(required=False, choices=ModelKind.choices)
    base_model = forms.MultipleChoiceField(required=False, choices=BaseModelFamily.choices)
    tags = forms.CharField(required=False)
    license = forms.CharField(required=False, max_length=64)
    creator = forms.CharField(required=False, max_length=150)
    price = forms.ChoiceField(required=False, choices=[(p, p) for p in PRICE_FILTERS])
    sort = forms.ChoiceField(required=False, choices=[(s, s) for s in MODEL_SORTS])


class DatasetFilterForm(forms.Form):
    """``GET /api/v1/datasets`` filters."""

    q = forms.CharField(required=False, max_length=200)
    kind = forms.ChoiceField(required=False, choices=DatasetKind.choices)
    tags = forms.CharField(required=False)
    creator = forms.CharField(required=False, max_length=150)
    sort = forms.ChoiceField(required=False, choices=[(s, s) for s in DATASET_ORDERINGS])


def model_filters(params: Mapping[str, Any]) -> ModelFilters:
    """The model filters of a query string; ``ApplicationError`` (``invalid_filter``) when a
    value does not validate."""
    form = ModelFilterForm(params)
    if not form.is_valid():
        raise invalid_filters(form.errors)
    data = form.cleaned_data
    return ModelFilters(
        q=data["q"],
        kinds=tuple(data["kind"]),
        base_models=tuple(data["base_model"]),
        tags=_tags(params),
        license=data["license"],
        creator=data["creator"],
        price=data["price"],
        sort=data["sort"],
    )


def dataset_filters(params: Mapping[str, Any]) -> DatasetFilters:
    """The dataset filters of a query string; ``ApplicationError`` (``invalid_filter``) when
    a value does not validate."""
    form = DatasetFilterForm(params)
    if not form.is_valid():
        raise invalid_filters(form.errors)
    data = form.cleaned_data
    return DatasetFilters(
        q=data["q"],
        kind=data["kind"],
        tags=_tags(params),
        creator=data["creator"],
        sort=data["sort"],
    )
