"""The private storage of model and dataset files (``STORAGES["blobs"]``) on local disk.

Blobs are paid or private content named by their public SHA-256, so no URL may map to them:
the only way to their bytes is the entitlement-checked download routes (registry.http). A
plain ``FileSystemStorage`` falls back to ``MEDIA_URL`` for its URLs; this one has none.
"""

from __future__ import annotations

from django.core.files.storage import FileSystemStorage


class PrivateFileSystemStorage(FileSystemStorage):
    """A folder outside ``MEDIA_ROOT`` whose files have no URL."""

    def url(self, name: str | None) -> str:
        raise ValueError(
            "Private storage has no URL: serve its files through registry.http.serve_blob "
            "after an entitlement check."
        )
