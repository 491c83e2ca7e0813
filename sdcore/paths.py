"""Relative file paths that stay inside their folder on every system a file may land on.

One check for every path a stranger names: a member of an uploaded archive, a file of a
model version (which clients write under their own folders, Windows included). Refused:
an empty name, control characters, a ``..`` component, an absolute path (``/x``, ``\\x``,
``\\\\server\\share``), a drive letter in any component (``C:/x``, ``C:x``, ``a/C:x``, which
``ntpath.join`` turns into another drive), and backslashes unless the caller reads them as
separators (zip tools on Windows write them). ``.`` components and doubled slashes go.
"""

from __future__ import annotations

import re

from sdcore.errors import UnsafePathError

__all__ = ["safe_relative_path"]

_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_relative_path(
    raw: str, *, what: str = "path", backslash_separates: bool = False
) -> tuple[str, bool]:
    """The normalized relative path (``a/b``) of ``raw``, and whether it names a folder.

    Raises `UnsafePathError` with code ``bad_path_name``, ``backslash``, ``drive_letter``,
    ``absolute_path`` or ``path_traversal``; ``what`` names the path in the message
    (``"member"``, ``"file path"``).
    """
    shown = raw if len(raw) <= 200 else raw[:200] + "..."

    def refuse(code: str, why: str) -> UnsafePathError:
        return UnsafePathError(f"{what} {shown!r} {why}", code=code, details={"path": raw})

    if not raw or any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise refuse("bad_path_name", "is empty or has control characters in it")
    if "\\" in raw and not backslash_separates:
        raise refuse(
            "backslash", "has a backslash, which Windows reads as a folder separator: use '/'"
        )
    name = raw.replace("\\", "/")
    parts = name.split("/")
    if any(_DRIVE.match(part) for part in parts):
        raise refuse("drive_letter", "has a drive letter: only relative paths are allowed")
    if name.startswith("/"):
        raise refuse("absolute_path", "is an absolute path: only relative paths are allowed")
    kept = [p for p in parts if p not in ("", ".")]
    if ".." in kept:
        raise refuse("path_traversal", "has a '..' component and would land outside its folder")
    if not kept:
        raise refuse("bad_path_name", "names no file")
    return "/".join(kept), name.endswith("/")
