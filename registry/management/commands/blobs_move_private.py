"""Move model and dataset files out of public media into the private blob storage.

    manage.py blobs_move_private

Older versions stored blobs in the default (public media) storage, under
``MEDIA_ROOT/blobs/sha256/...``, where the media URL or a proxy serving the media folder
reached them. Run this once after upgrading (the system check registry.W001 says when it is
needed); it is idempotent. On one file system each file is renamed, not copied.
"""

from __future__ import annotations

from typing import Any

from django.core.files.storage import storages
from django.core.management.base import BaseCommand, CommandError

from registry.services.blobs import blobs_move_private


class Command(BaseCommand):
    help = "Move blobs from public media into the private blob storage."

    def handle(self, *args: Any, **options: Any) -> None:
        report = blobs_move_private(source=storages["default"])
        self.stdout.write(
            f"blobs_move_private: {report.moved} moved, {report.already} already private"
        )
        for sha256 in report.missing:
            self.stderr.write(f"{sha256}: in neither storage")
        for path in report.conflicts:
            self.stderr.write(f"{path}: left in place, the private copy has other bytes")
        if report.missing or report.conflicts:
            raise CommandError(
                f"{len(report.missing)} blobs in neither storage, "
                f"{len(report.conflicts)} left in place (check them with blobs_verify)"
            )
