"""Serving stored bytes over HTTP: Range, ETag and Content-Disposition.

Responses wrap the open file in a ``FileResponse`` so that gunicorn sends it with
``sendfile`` (zero copy); for a range, the file is positioned at the start and the
Content-Length set to the range's length, which is exactly what gunicorn's sendfile sends.

Callers check entitlement first: this module is the only way from a request to a blob's
bytes. With ``ATELIER_SENDFILE`` set and local storage, the answer names the file for the
proxy (``X-Accel-Redirect`` to an ``internal`` location, or ``X-Sendfile``), which sends it
with Range support; the private folder itself is never served under a public URL.
"""

from __future__ import annotations

import io
from typing import IO, Any
from urllib.parse import quote

from django.conf import settings
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)

from registry.models import Blob
from registry.services.archives import VersionArchive, archive_iter
from registry.services.blobs import blob_open, blob_stored_path
from registry.services.downloads import ByteRange, content_disposition, parse_range


class _RangeReader(io.RawIOBase):
    """The window ``[start, end]`` of a file, read through the file's own descriptor.

    Positions are the file's: gunicorn's sendfile reads the descriptor's position, sends
    Content-Length bytes from there and seeks the file to where it stopped, so ``seek`` and
    ``tell`` go to the file. Servers without sendfile (and object storage files, which have
    no descriptor) read it, and never get a byte past the window.
    """

    def __init__(self, fh: IO[bytes], byte_range: ByteRange) -> None:
        self._fh = fh
        self._end = byte_range.end + 1
        fh.seek(byte_range.start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()

    def read(self, size: int | None = -1) -> bytes:
        left = self._end - self._fh.tell()
        if left <= 0:
            return b""
        size = left if size is None or size < 0 else min(size, left)
        return self._fh.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._fh.close()
        super().close()


def counts_as_download(request: HttpRequest) -> bool:
    """A GET of the whole file or of its start; a resumed tail or a HEAD is not another."""
    if request.method != "GET":
        return False
    byte_range = request.headers.get("Range", "").replace(" ", "")
    return not byte_range or byte_range.startswith("bytes=0-")


def _proxy_sendfile(blob: Blob) -> HttpResponse | None:
    """An empty answer that tells the proxy which private file to send, when configured."""
    mode = settings.ATELIER_SENDFILE
    path = blob_stored_path(blob) if mode else None
    if path is None:
        return None
    response = HttpResponse()
    if mode == "x-accel-redirect":
        prefix = settings.ATELIER_SENDFILE_PREFIX.rstrip("/")
        response["X-Accel-Redirect"] = f"{prefix}/{quote(blob.storage_name)}"
    else:  # "x-sendfile" (registry.checks refuses other values)
        response["X-Sendfile"] = str(path)
    return response


def _etag(blob: Blob) -> str:
    return f'"{blob.sha256}"'


def serve_blob(
    request: HttpRequest,
    blob: Blob,
    filename: str,
    *,
    extra_headers: dict[str, str] | None = None,
    disposition: str | None = None,
) -> HttpResponseBase:
    etag = _etag(blob)
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": disposition or content_disposition(filename),
        "Cache-Control": "private, max-age=0",
        **(extra_headers or {}),
    }
    response: HttpResponseBase
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
    elif (handed := _proxy_sendfile(blob)) is not None:
        response, byte_range = handed, None  # the proxy answers the Range itself
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


def serve_archive(request: HttpRequest, archive: VersionArchive) -> HttpResponseBase:
    """A version's zip, built as it is sent (see :mod:`registry.services.archives`).

    The bytes are the same every time, so the ETag is the content's and a Range is honoured.
    """
    etag = f'"{archive.content_key.split(":", 1)[0]}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(archive.filename),
        "Cache-Control": "private, max-age=0",
        "Content-Type": "application/zip",
    }
    response: HttpResponseBase
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponse(status=304)
    else:
        byte_range = parse_range(request.headers.get("Range"), archive.size)
        if_range = request.headers.get("If-Range")
        if byte_range is not None and if_range and if_range != etag:
            byte_range = None
        start, end = (byte_range.start, byte_range.end) if byte_range else (0, archive.size - 1)
        status = 206 if byte_range else 200
        if request.method == "HEAD":
            response = HttpResponse(status=status)
        else:
            response = StreamingHttpResponse(
                archive_iter(archive=archive, start=start, end=end), status=status
            )
        response["Content-Length"] = str(end - start + 1)
        if byte_range is not None:
            response["Content-Range"] = f"bytes {start}-{end}/{archive.size}"
    for key, value in headers.items():
        response[key] = value
    return response
