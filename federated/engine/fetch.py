"""Fetch a job's base model from the registry once per machine: streamed, resumable, verified.

:func:`fetch_model` downloads the single-file ``.safetensors`` checkpoint the job names
(``base-model-url``, authenticated with ``Authorization: Bearer <token>``: a node's own node
token, or the ServerApp's job token) into::

    <cache-dir>/models/<sha256>.safetensors

- streamed to ``<sha256>.safetensors.part``; a later call continues it with a ``Range``
  request (a server that ignores the range sends the whole file: the part starts over);
- SHA-256 computed while the bytes arrive (the part's existing bytes are hashed first), and
  compared with the job's ``base-model-sha``: a mismatch deletes the part and raises
  :class:`FetchError` (code ``model_sha_mismatch``); only a verified file is renamed into
  place (atomic ``os.replace``), so a file under its final name is always the right one;
- one download per machine: an exclusive ``flock`` on ``<sha256>.lock`` (two ClientApp
  processes of one node, or the ServerApp and a node on one host, wait for each other);
- a broken connection is retried ``retries`` times, each retry resuming the part;
- progress logged every ``log_every`` seconds (bytes, percent, rate).

Pure Python (standard library only), no Django, no torch.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from federated.engine.errors import FetchError

__all__ = ["FetchResult", "fetch_model", "model_cache_path"]

logger = logging.getLogger(__name__)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1024 * 1024
USER_AGENT = "atelier-node/1"


@dataclass(frozen=True)
class FetchResult:
    path: Path
    source: str  # "cached" (already there) or "downloaded"
    bytes_downloaded: int
    seconds: float


def _check_sha(sha256: str) -> str:
    sha = sha256.strip().lower()
    if not _HEX64.match(sha):
        raise FetchError(
            f"base-model-sha must be a SHA-256 hex digest (64 characters), got {sha256!r}",
            code="model_sha_invalid",
        )
    return sha


def model_cache_path(cache_dir: Path, sha256: str) -> Path:
    """Where the model with this SHA-256 lives in a cache folder."""
    return Path(cache_dir) / "models" / f"{_check_sha(sha256)}.safetensors"


@contextmanager
def _exclusive(lock_path: Path, timeout: float) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    logger.info("another process is downloading %s; waiting", lock_path.stem)
                    waited = True
                if time.monotonic() > deadline:
                    raise FetchError(
                        f"waited {timeout:g} s for another download of {lock_path.stem} to finish",
                        code="model_fetch_busy",
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read(64 * 1024) or b"{}")
    except (ValueError, OSError):
        body = {}
    if isinstance(body, dict):
        for key in ("message", "detail"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return error.reason if isinstance(error.reason, str) else ""


class _Progress:
    def __init__(self, name: str, total: int | None, every: float) -> None:
        self.name, self.total, self.every = name, total, every
        self.started = self.last = time.monotonic()

    def update(self, done: int, fresh: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        rate = fresh / max(now - self.started, 1e-9) / 1e6
        share = f" ({100 * done / self.total:.0f} %)" if self.total else ""
        logger.info("downloading %s: %d bytes%s, %.1f MB/s", self.name, done, share, rate)


def _stream_once(
    url: str,
    *,
    token: str,
    part: Path,
    digest: hashlib._Hash,
    timeout: float,
    progress: Callable[[int, int], None],
) -> tuple[int, int | None, hashlib._Hash]:
    """Append the rest of ``url`` to ``part``: (bytes written, total size, the part's digest).

    ``digest`` is the SHA-256 state of the part's bytes so far; it is updated as bytes arrive
    (a fresh one when the part starts over).
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        # The URL is the job's base-model-url (http or https, checked by fetch_model).
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the part is longer than the file: start over
            part.unlink()
            return _stream_once(
                url,
                token=token,
                part=part,
                digest=hashlib.sha256(),
                timeout=timeout,
                progress=progress,
            )
        why = _error_message(err)
        if err.code in (401, 403):
            raise FetchError(
                f"the site refused the token for {url} (HTTP {err.code}"
                f"{': ' + why if why else ''}); is the job still running, and does it "
                "train on a dataset of this node?",
                code="model_fetch_unauthorized",
                details={"status": err.code},
            ) from None
        raise FetchError(
            f"downloading {url} failed: HTTP {err.code}{': ' + why if why else ''}",
            details={"status": err.code},
        ) from None
    with response:
        total: int | None = None
        if offset and response.status == 206:
            match = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
            total = int(match.group(1)) if match else None
            mode = "ab"
        else:
            if offset:
                logger.info("the server ignored the range; downloading %s again", part.name)
                digest = hashlib.sha256()
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        written = 0
        with part.open(mode) as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                progress(offset + written, len(chunk))
            out.flush()
            os.fsync(out.fileno())
    if total is not None and offset + written < total:
        # urllib returns b"" at a premature end of body: a broken connection, resumable
        raise ConnectionError(f"the connection closed at byte {offset + written} of {total}")
    return written, total, digest


def _hash_file(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    if path.exists():
        with path.open("rb") as handle:
            while chunk := handle.read(8 * CHUNK):
                digest.update(chunk)
    return digest


def fetch_model(
    url: str,
    *,
    sha256: str,
    token: str,
    cache_dir: Path,
    timeout: float = 60.0,
    retries: int = 3,
    lock_timeout: float = 3600.0,
    log_every: float = 5.0,
) -> FetchResult:
    """The verified local copy of the model at ``url`` (see the module doc); downloads once.

    Raises :class:`FetchError`: ``model_sha_invalid``, ``model_fetch_unauthorized`` (401/403),
    ``model_sha_mismatch``, ``model_fetch_busy`` or ``model_fetch_failed``.
    """
    started = time.monotonic()
    final = model_cache_path(cache_dir, sha256)
    sha = final.stem.split(".")[0]
    if final.is_file():
        return FetchResult(final, "cached", 0, 0.0)
    if urlsplit(url).scheme not in ("http", "https"):
        raise FetchError(f"base-model-url must be an http(s) URL, got {url!r}")
    part = final.with_name(final.name + ".part")
    with _exclusive(final.with_name(f"{sha}.lock"), lock_timeout):
        if final.is_file():  # another process finished it while we waited
            return FetchResult(final, "cached", 0, time.monotonic() - started)
        digest = _hash_file(part)
        resumed_from = part.stat().st_size if part.exists() else 0
        if resumed_from:
            logger.info("resuming the download of %s at byte %d", final.name, resumed_from)
        progress = _Progress(final.name, None, log_every)
        received = [0]  # bytes that crossed the network in this call

        def on_chunk(done: int, new: int) -> None:
            received[0] += new
            progress.update(done, received[0])

        attempt = 0
        while True:
            try:
                _, total, digest = _stream_once(
                    url, token=token, part=part, digest=digest, timeout=timeout, progress=on_chunk
                )
                break
            except (OSError, http.client.HTTPException) as exc:
                attempt += 1
                size = part.stat().st_size if part.exists() else 0
                if attempt > retries:
                    raise FetchError(
                        f"downloading {url} broke off at byte {size} ({exc}); "
                        "the next attempt resumes there",
                        details={"bytes": size},
                    ) from exc
                logger.warning(
                    "download of %s broke off at byte %d (%s); retry %d of %d",
                    final.name,
                    size,
                    exc,
                    attempt,
                    retries,
                )
                digest = _hash_file(part)
                time.sleep(min(0.1 * 2.0**attempt, 2.0))
        size = part.stat().st_size
        actual = digest.hexdigest()
        if total is not None and size != total:
            part.unlink(missing_ok=True)
            raise FetchError(
                f"downloaded {size} bytes of {url}, the server announced {total}",
                details={"bytes": size, "expected": total},
            )
        if actual != sha:
            part.unlink(missing_ok=True)
            raise FetchError(
                f"the model downloaded from {url} has SHA-256 {actual[:16]}..., the job "
                f"expects {sha[:16]}...; the download was deleted",
                code="model_sha_mismatch",
                details={"expected": sha, "actual": actual},
            )
        os.replace(part, final)
        seconds = time.monotonic() - started
        logger.info(
            "downloaded %s: %d bytes in %.1f s (verified SHA-256)", final.name, size, seconds
        )
    from federated.engine.cache import remember_fingerprint

    remember_fingerprint(final, sha, memo_dir=Path(cache_dir))
    return FetchResult(final, "downloaded", received[0], seconds)
