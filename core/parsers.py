"""The API's JSON parser: DRF's, with the limits a body from anyone must meet.

A JSON body is refused with 400 in the JSON error shape, naming the limit or the field, when

- it nests deeper than :data:`MAX_JSON_DEPTH` (``json_too_deep``; Python's parser would
  otherwise raise ``RecursionError`` on a body of a few hundred kilobytes of ``[``);
- a number is an integer outside the signed 64-bit range every integer column holds, or a
  float that is not finite (``number_out_of_range``, with the field's path: ``amount``,
  ``files[0].size``); the database would otherwise refuse it with a 500;
- a string holds a NUL character, which PostgreSQL text cannot store (``bad_text``).

The body's size is capped before parsing by ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413, see
:mod:`core.errors`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rest_framework.parsers import JSONParser

from core.errors import ApplicationError

MAX_JSON_DEPTH = 64
INT_MAX = 2**63 - 1
INT_MIN = -(2**63)


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _too_deep() -> ApplicationError:
    return ApplicationError(
        f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels.",
        code="json_too_deep",
        details={"limit": MAX_JSON_DEPTH},
    )


def json_body_check(data: Any) -> None:
    """Raise :class:`ApplicationError` when parsed JSON breaks one of the limits above.

    Iterative, so that checking cannot itself run out of stack.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, Mapping | list):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep()
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and "\x00" in key:
                    raise ApplicationError(
                        "Text may not contain NUL characters.",
                        code="bad_text",
                        details={"field": path or "(body)"},
                    )
                stack.append((item, _path(path, key), depth + 1))
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not INT_MIN <= value <= INT_MAX:
                field = path or "(body)"
                raise ApplicationError(
                    f"{field}: the number is out of range ({INT_MIN} to {INT_MAX}).",
                    code="number_out_of_range",
                    details={"field": field, "min": INT_MIN, "max": INT_MAX},
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                field = path or "(body)"
                raise ApplicationError(
                    f"{field}: the number is out of range (not a finite number).",
                    code="number_out_of_range",
                    details={"field": field},
                )
        elif isinstance(value, str) and "\x00" in value:
            field = path or "(body)"
            raise ApplicationError(
                f"{field}: text may not contain NUL characters.",
                code="bad_text",
                details={"field": field},
            )


class LimitedJSONParser(JSONParser):
    """``DEFAULT_PARSER_CLASSES``' JSON parser (see the module's docstring)."""

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise _too_deep() from None
        json_body_check(data)
        return data
