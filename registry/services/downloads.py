"""Signed, short-lived download URLs bound to a user, and HTTP Range handling.

The download route (Civitai's ``/api/download/models/{id}`` shape) checks access, then
redirects to a signed URL whose query carries ``response-content-disposition`` like the
object-storage URLs Civitai tools expect. The signature binds the blob, the file name, the
user and the expiry; the file route re-checks the user's access when it serves.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.urls import reverse

from core.errors import AccessDeniedError, ApplicationError
from registry.models import Blob
from registry.services.blobs import blob_storage

# Printable ASCII without the characters a quoted-string would need to escape.
_PLAIN_NAME = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]+$")
_UNSAFE_IN_QUOTES = re.compile(r'[\x00-\x1f\x7f"\\]')


def content_disposition(filename: str) -> str:
    """``attachment; filename="<name>"``, as Civitai's delivery sends it.

    Civitai clients split the header on ``filename=`` and keep the rest, so a name that plain
    ASCII can carry gets nothing else; one that needs RFC 6266's ``filename*`` (not ASCII, or
    with a quote, backslash or control character) gets it *before* an ASCII ``filename=``.
    """
    if _PLAIN_NAME.match(filename):
        return f'attachment; filename="{filename}"'
    folded = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    fallback = _UNSAFE_IN_QUOTES.sub("_", folded).strip()
    if not fallback or fallback.startswith("."):  # nothing left of the name but its suffix
        fallback = f"download{fallback}"
    return f"attachment; filename*=UTF-8''{quote(filename, safe='')}; filename=\"{fallback}\""


def link_query(*, purpose: str, subject: str, filename: str, user_id: int, ttl: int | None) -> str:
    """The query string of a link that serves ``subject`` as ``filename`` to ``user_id`` until
    it expires: uid, expires, an HMAC signature keyed by ``purpose`` (a link signed for one
    kind of route is no good on another) and the file name to save as."""
    ttl = settings.ATELIER_SIGNED_URL_TTL if ttl is None else ttl
    expires = int(time.time()) + ttl
    signature = _signature(purpose, subject, filename, user_id, expires)
    return urlencode(
        {
            "uid": user_id,
            "expires": expires,
            "signature": signature,
            "response-content-disposition": content_disposition(filename),
        }
    )


def link_verify(
    *, purpose: str, subject: str, filename: str, uid: str, expires: str, signature: str
) -> int:
    """The user id a valid, unexpired link of ``purpose`` was signed for."""
    try:
        user_id, expiry = int(uid), int(expires)
    except ValueError as exc:
        raise AccessDeniedError("Malformed download link.", code="bad_signature") from exc
    expected = _signature(purpose, subject, filename, user_id, expiry)
    if not hmac.compare_digest(expected, signature):
        raise AccessDeniedError("This download link is not valid.", code="bad_signature")
    if expiry < time.time():
        raise AccessDeniedError("This download link has expired.", code="expired")
    return user_id


def _signature(purpose: str, subject: str, filename: str, user_id: int, expires: int) -> str:
    message = f"{subject}\n{filename}\n{user_id}\n{expires}".encode()
    key = hashlib.sha256(f"atelier-{purpose}:{settings.SECRET_KEY}".encode()).digest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_file_url(*, blob: Blob, filename: str, user_id: int, ttl: int | None = None) -> str:
    """A URL that serves ``blob`` as ``filename`` to ``user_id`` until it expires.

    With S3-compatible storage, the storage's own presigned URL is returned instead.
    """
    ttl = settings.ATELIER_SIGNED_URL_TTL if ttl is None else ttl
    storage = blob_storage()
    if not isinstance(storage, FileSystemStorage):
        return storage.url(  # type: ignore[call-arg]  # S3Storage.url takes parameters
            blob.storage_name,
            parameters={"ResponseContentDisposition": content_disposition(filename)},
            expire=ttl,
        )
    query = link_query(
        purpose="download", subject=blob.sha256, filename=filename, user_id=user_id, ttl=ttl
    )
    path = reverse("registry:signed-file", kwargs={"sha256": blob.sha256, "filename": filename})
    return f"{path}?{query}"


@dataclass(frozen=True)
class SignedRequest:
    sha256: str
    filename: str
    user_id: int


def signed_file_verify(
    *, sha256: str, filename: str, uid: str, expires: str, signature: str
) -> SignedRequest:
    user_id = link_verify(
        purpose="download",
        subject=sha256,
        filename=filename,
        uid=uid,
        expires=expires,
        signature=signature,
    )
    return SignedRequest(sha256=sha256, filename=filename, user_id=user_id)


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class RangeNotSatisfiable(ApplicationError):
    status_code = 416
    code = "range_not_satisfiable"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One byte range from a ``Range`` header; ``None`` means the whole file.

    Multiple ranges are answered with the whole file (allowed by RFC 9110).
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0:
            raise RangeNotSatisfiable("Empty suffix range.")
        return ByteRange(max(0, size - n), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(f"Range starts past the end of a {size}-byte file.")
    return ByteRange(start, end)
