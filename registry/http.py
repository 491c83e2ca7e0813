"""Serving stored bytes over HTTP: Range, ETag and Content-Disposition.

Responses wrap the open file in a ``FileResponse`` so that gunicorn sends it with
``sendfile`` (zero copy); for a range, the file is positioned at the start and the
Content-Length set to the range's length, which is exactly what gunicorn's sendfile sends.
"""

from __future__ import annotations

import io
from typing import IO

from django.http import FileResponse, HttpRequest, HttpResponse

from registry.models import Blob
from registry.services.blobs import blob_open
from registry.services.downloads import ByteRange, content_disposition, parse_range


class _RangeReader(io.RawIOBase):
    """A window of a file, for storages whose files cannot be sent with sendfile."""

    def __init__(self, fh: IO[bytes], byte_range: ByteRange) -> None:
        self._fh = fh
        self._left = byte_range.length
        fh.seek(byte_range.start)

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        # gunicorn's sendfile starts at the descriptor's position and sends Content-Length
        # bytes: exactly the window. Storages without a descriptor raise, and are iterated.
        return self._fh.fileno()

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size < 0 else min(size, self._left)
        data = self._fh.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._fh.close()
        super().close()


def counts_as_download(request: HttpRequest) -> bool:
    """A GET of the whole file or of its start; a resumed tail or a HEAD is not another."""
    if request.method != "GET":
        return False
    byte_range = request.headers.get("Range", "").replace(" ", "")
    return not byte_range or byte_range.startswith("bytes=0-")


def _etag(blob: Blob) -> str:
    return f'"{blob.sha256}"'


def serve_blob(
    request: HttpRequest,
    blob: Blob,
    filename: str,
    *,
    extra_headers: dict[str, str] | None = None,
    disposition: str | None = None,
) -> HttpResponse:
    etag = _etag(blob)
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": disposition or content_disposition(filename),
        "Cache-Control": "private, max-age=0",
        **(extra_headers or {}),
    }
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponse(status=304)
        for key, value in headers.items():
            response[key] = value
        return response
    byte_range = parse_range(request.headers.get("Range"), blob.size)
    if_range = request.headers.get("If-Range")
    if byte_range is not None and if_range and if_range != etag:
        byte_range = None
    if request.method == "HEAD":
        response = HttpResponse(status=206 if byte_range else 200)
        length = byte_range.length if byte_range else blob.size
        response["Content-Length"] = str(length)
    else:
        fh = blob_open(blob)
        if byte_range is None:
            response = FileResponse(fh, content_type="application/octet-stream")
            response["Content-Length"] = str(blob.size)
        else:
            raw = getattr(fh, "file", fh)
            response = FileResponse(
                _RangeReader(raw, byte_range), content_type="application/octet-stream"
            )
            response.status_code = 206
            response["Content-Length"] = str(byte_range.length)
    response["Content-Type"] = "application/octet-stream"
    if byte_range is not None:
        response["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{blob.size}"
    for key, value in headers.items():
        response[key] = value
    return response
