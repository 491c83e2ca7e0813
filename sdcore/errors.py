"""Errors raised by sdcore, each with a stable snake_case `code` and a human `message`.

The registry turns them into its one JSON error shape `{"code", "message", "details"}`;
`code` is part of the API and never changes meaning, `message` is for people.
"""

from __future__ import annotations

from typing import Any


class SdcoreError(Exception):
    """Base class of every error sdcore raises on bad input.

    `code` is stable and machine-readable (e.g. ``"header_truncated"``), `message` is a
    sentence for people, and `details` holds JSON-able facts (a tensor name, a member path).
    """

    default_code: str = "sdcore_error"

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code: str = code or self.default_code
        self.message: str = message
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class HeaderError(SdcoreError):
    """A safetensors header is missing, malformed or inconsistent with the file."""

    default_code = "header_invalid"


class UnsafePickleError(SdcoreError):
    """A pickle would import something that can run code, or cannot be scanned."""

    default_code = "unsafe_pickle"


class ArchiveError(SdcoreError):
    """A dataset archive is malformed, too large, or has a member that is not allowed."""

    default_code = "archive_invalid"


class FormatMismatchError(SdcoreError):
    """A file's bytes do not match what its name says it is."""

    default_code = "format_mismatch"


class UnsafePathError(SdcoreError):
    """A relative file path that could land outside its folder on some system."""

    default_code = "unsafe_path"
