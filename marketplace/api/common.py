"""What the marketplace's API views share: the ``Idempotency-Key`` header and the whole-number
field (credits, percents), documented as an integer."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_basic_type
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.request import Request

from core.errors import ApplicationError

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=True,
    description="Any unique string; repeating it returns the first result and moves nothing.",
)


class WholeNumberField(serializers.Field):
    """A whole number as a JSON integer: no strings, floats or booleans (credits, percents)."""

    def __init__(self, *, min_value: int = 0, **kwargs: Any) -> None:
        self.min_value = min_value
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            raise serializers.ValidationError("Must be a whole number (a JSON integer).")
        if data < self.min_value:
            raise serializers.ValidationError(f"Must be at least {self.min_value}.")
        return data

    def to_representation(self, value: int) -> int:
        return value


class WholeNumberFieldExtension(OpenApiSerializerFieldExtension):
    """drf-spectacular: document WholeNumberField as an integer."""

    target_class = "marketplace.api.common.WholeNumberField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        return build_basic_type(OpenApiTypes.INT)


def idempotency_key(request: Request) -> str:
    """The request's ``Idempotency-Key`` header; 400 when it is missing or too long."""
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key or len(key) > 200:
        raise ApplicationError(
            "Send an Idempotency-Key header (1-200 characters).", code="idempotency_key_required"
        )
    return key
