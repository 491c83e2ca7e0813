"""System checks: model and dataset files stay private (``STORAGES["blobs"]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

SENDFILE_MODES = ("", "x-accel-redirect", "x-sendfile")


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


@register(Tags.security)
def private_blob_storage(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    if settings.ATELIER_SENDFILE not in SENDFILE_MODES:
        messages.append(
            Error(
                f"ATELIER_SENDFILE={settings.ATELIER_SENDFILE!r} is not one of "
                "'', 'x-accel-redirect', 'x-sendfile'.",
                id="registry.E001",
            )
        )
    blobs = settings.STORAGES.get("blobs", {})
    location = blobs.get("OPTIONS", {}).get("location")
    if "FileSystemStorage" in blobs.get("BACKEND", "") and location:
        if _inside(Path(location), Path(settings.MEDIA_ROOT)):
            messages.append(
                Error(
                    f"The private blob storage ({location}) is inside MEDIA_ROOT, which is served "
                    "as public media: paid files would be downloadable by anyone.",
                    hint="Set BLOB_ROOT to a folder outside MEDIA_ROOT.",
                    id="registry.E002",
                )
            )
        if not blobs["BACKEND"].endswith("PrivateFileSystemStorage"):
            messages.append(
                Error(
                    "STORAGES['blobs'] must be registry.storage.PrivateFileSystemStorage on local "
                    "disk (a plain FileSystemStorage gives its files MEDIA_URL addresses).",
                    id="registry.E003",
                )
            )
    old = Path(settings.MEDIA_ROOT) / "blobs" / "sha256"
    if old.is_dir() and any(p.is_file() for p in old.rglob("*")):
        messages.append(
            Warning(
                f"Model files are still under the public media folder ({old}).",
                hint="Run `manage.py blobs_move_private` to move them into the private storage.",
                id="registry.W001",
            )
        )
    return messages
