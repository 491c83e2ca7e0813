"""Look every blob up by its SHA-256 and read its bytes back (after a restore, or any time).

    manage.py blobs_verify [--expect blobs.tsv]

For each Blob row (and, with ``--expect``, each SHA-256 listed in a backup's ``blobs.tsv``,
which must all be in the database): finds it through the registry by hash, opens it in the
configured storage, hashes the bytes and compares hash and size. Exits 1 on any difference.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry.models import Blob
from registry.services.blobs import blob_open


def blob_problem(sha256: str) -> str | None:
    """None when the blob with this SHA-256 is found and its bytes hash to it."""
    blob = Blob.objects.filter(pk=sha256).first()
    if blob is None:
        return f"{sha256}: no such blob in the database"
    digest, size = hashlib.sha256(), 0
    try:
        with blob_open(blob) as fh:
            for chunk in iter(lambda: fh.read(1024 * 1024), b""):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        return f"{sha256}: cannot read {blob.storage_name}: {exc}"
    if digest.hexdigest() != sha256 or size != blob.size:
        return f"{sha256}: stored bytes differ (sha256 {digest.hexdigest()}, {size} bytes)"
    return None


class Command(BaseCommand):
    help = "Find every blob by hash and check its bytes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--expect", type=Path, help="a backup's blobs.tsv")

    def handle(self, *args: Any, **options: Any) -> None:
        wanted = set(Blob.objects.values_list("sha256", flat=True))
        if options["expect"]:
            listed = {
                line.split("\t", 1)[0]
                for line in options["expect"].read_text().splitlines()
                if line.strip()
            }
            wanted |= listed
        problems = [p for sha in sorted(wanted) if (p := blob_problem(sha)) is not None]
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"{len(problems)} of {len(wanted)} blobs failed the check")
        self.stdout.write(f"blobs_verify: all {len(wanted)} blobs found by hash and intact")
