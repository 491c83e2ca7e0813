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

    def get_security_definition(
        self, auto_schema: SpectacularAutoSchema
    ) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "atl_..."}
