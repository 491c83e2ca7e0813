"""OpenAPI schema generation: component names for nested HackSoft-style serializers.

Views declare ``InputSerializer`` / ``OutputSerializer`` inside themselves, so many classes
share a name; drf-spectacular would name every one ``Input`` and warn about the collision.
Nested serializers are named after their view instead: ``TokenCreateApi.InputSerializer``
becomes the component ``TokenCreateInput``.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import Direction
from rest_framework.serializers import Serializer


class AutoSchema(SpectacularAutoSchema):
    def get_serializer_name(self, serializer: Serializer, direction: Direction) -> str:
        qualname = type(serializer).__qualname__
        outer, _, inner = qualname.rpartition(".")
        if outer and "<locals>" not in outer:
            outer = outer.rsplit(".", 1)[-1].removesuffix("Api")
            return outer + inner
        return super().get_serializer_name(serializer, direction)


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """``Authorization: Bearer atl_...`` (see :mod:`core.auth`)."""

    target_class = "core.auth.ApiTokenAuthentication"
    name = "ApiToken"

    def get_security_definition(self, auto_schema: SpectacularAutoSchema) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "atl_..."}


ERROR_SCHEMA = {
    "type": "object",
    "description": "Every API error: a stable code, a message for people, and details.",
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "details": {"type": "object", "additionalProperties": {}},
    },
    "required": ["code", "message", "details"],
}


def add_error_responses(result: dict, generator: object, request: object, public: bool) -> dict:
    """Postprocessing hook: every operation documents its 4XX errors in the one shape.

    Declared only where the operation does not describe that status itself.
    """
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("Error", ERROR_SCHEMA)
    error = {
        "description": "An error (see the code and message).",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method in ("get", "post", "put", "patch", "delete", "head"):
                operation.setdefault("responses", {}).setdefault("4XX", error)
    return result
