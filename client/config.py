"""Where the command keeps the site URL, the API token and the state of unfinished uploads.

Credentials live in ``$ATELIER_CONFIG`` or ``~/.config/atelier/config.json`` (under
``$XDG_CONFIG_HOME`` when it is set), readable by the user only (mode 0600). Unfinished
uploads are remembered in ``uploads.json`` next to it, so that a rerun of ``atelier push``
continues where the last one stopped.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from client.http import AtelierError

CONFIG_ENV = "ATELIER_CONFIG"
SITE_ENV = "ATELIER_SITE"
TOKEN_ENV = "ATELIER_TOKEN"
DEFAULT_SITE = "http://127.0.0.1:8000"


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "atelier" / "config.json"


def state_path() -> Path:
    return config_path().with_name("uploads.json")


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically, readable and writable by the user only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)


def read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AtelierError(f"Cannot read {path}: {exc.strerror}.") from exc
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise AtelierError(f"{path} is not valid JSON ({exc.msg}); fix or delete it.") from exc
    if not isinstance(data, dict):
        raise AtelierError(f"{path} should hold a JSON object; fix or delete it.")
    return data


@dataclass
class Config:
    site: str = DEFAULT_SITE
    token: str = ""
    username: str = ""

    @classmethod
    def load(cls) -> Config:
        data = read_json(config_path())
        config = cls(
            site=str(data.get("site") or DEFAULT_SITE),
            token=str(data.get("token") or ""),
            username=str(data.get("username") or ""),
        )
        if os.environ.get(SITE_ENV):
            config.site = os.environ[SITE_ENV]
        if os.environ.get(TOKEN_ENV):
            config.token = os.environ[TOKEN_ENV]
        return config

    def save(self) -> Path:
        path = config_path()
        write_private_json(path, asdict(self))
        return path


class UploadState:
    """Upload ids of unfinished pushes, keyed by site, absolute path, size and mtime."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_path()

    @staticmethod
    def key(site: str, file: Path) -> str:
        stat = file.stat()
        return f"{site.rstrip('/')}|{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def get(self, key: str) -> str | None:
        value = read_json(self.path).get(key)
        return value if isinstance(value, str) else None

    def set(self, key: str, upload_id: str) -> None:
        data = read_json(self.path)
        data[key] = upload_id
        write_private_json(self.path, data)

    def forget(self, key: str) -> None:
        data = read_json(self.path)
        if data.pop(key, None) is not None:
            write_private_json(self.path, data)
