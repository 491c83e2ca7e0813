"""A small typed client of Atelier's HTTP API, raising typed errors.

Every error the site returns has the shape ``{"code", "message", "details"}``; this module
turns it into an :class:`AtelierError` subclass carrying that message, so callers show the
server's own words. Network failures become :class:`NetworkError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

DEFAULT_TIMEOUT = (10.0, 300.0)  # connect, read (seconds)
DOWNLOAD_CHUNK = 1024 * 1024
USER_AGENT = "atelier-cli/0.1"


# --- errors ----------------------------------------------------------------------------------


class AtelierError(Exception):
    """Anything the user should read; ``message`` is a sentence for people."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


class NetworkError(AtelierError):
    """The site could not be reached, or the connection broke."""


class AuthenticationError(AtelierError):
    """No token, a wrong password, or a revoked token (HTTP 401)."""


class NotLoggedInError(AuthenticationError):
    def __init__(self) -> None:
        super().__init__("Not logged in. Run `atelier login` first.", code="not_logged_in")


class PermissionDeniedError(AtelierError):
    """HTTP 403 for a reason other than a missing purchase."""


class EntitlementRequiredError(AtelierError):
    """The file must be bought (or its early access must end) before it can be downloaded."""


class NotFoundError(AtelierError):
    """HTTP 404."""


class ModelNotFoundError(NotFoundError):
    """No such model or version, or it is not visible to this user."""


class ConflictError(AtelierError):
    """HTTP 409 (for uploads: the offset moved; ``details["offset"]`` says where it is)."""


class IntegrityError(AtelierError):
    """A downloaded file does not have the SHA-256 the server announced."""


ENTITLEMENT_CODES = frozenset(
    {"purchase_required", "entitlement_required", "payment_required", "early_access"}
)


def error_from_response(
    response: requests.Response, not_found: type[NotFoundError]
) -> AtelierError:
    """The typed error for an HTTP error response, with the server's message when it has one."""
    status = response.status_code
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message, code = body["message"], str(body.get("code") or "")
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
    elif isinstance(body, dict) and isinstance(body.get("detail"), str):
        message, code, details = body["detail"], "", {}
    else:
        request = response.request
        where = f"{request.method} {request.url}" if request is not None else response.url
        message = f"The server answered {status} {response.reason or ''} to {where}.".replace(
            " .", "."
        )
        code, details = "", {}
    kwargs: dict[str, Any] = {"status": status, "code": code, "details": details}
    if status == 401:
        return AuthenticationError(message, **kwargs)
    if status == 402 or code in ENTITLEMENT_CODES:
        return EntitlementRequiredError(message, **kwargs)
    if status == 403:
        return PermissionDeniedError(message, **kwargs)
    if status == 404:
        return not_found(message, **kwargs)
    if status == 409:
        return ConflictError(message, **kwargs)
    return AtelierError(message, **kwargs)


# --- response types --------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadInfo:
    id: str
    filename: str
    size: int
    offset: int
    status: str
    sha256: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadInfo:
        return cls(
            id=str(data["id"]),
            filename=str(data.get("filename", "")),
            size=int(data.get("size", 0)),
            offset=int(data.get("offset", 0)),
            status=str(data.get("status", "")),
            sha256=str(data.get("sha256") or ""),
        )


@dataclass(frozen=True)
class VersionRef:
    id: int
    name: str
    status: str = ""


@dataclass(frozen=True)
class ModelInfo:
    id: int
    name: str
    slug: str
    owner: str
    versions: list[VersionRef] = field(default_factory=list)
    url: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelInfo:
        owner = data.get("owner") or data.get("creator") or ""
        if isinstance(owner, dict):
            owner = owner.get("username", "")
        versions = [
            VersionRef(
                id=int(v["id"]), name=str(v.get("name", "")), status=str(v.get("status", ""))
            )
            for v in data.get("versions") or []
            if isinstance(v, dict) and "id" in v
        ]
        return cls(
            id=int(data["id"]),
            name=str(data.get("name", "")),
            slug=str(data.get("slug", "")),
            owner=str(owner),
            versions=versions,
            url=str(data.get("url", "")),
        )


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str
    download_url: str


@dataclass(frozen=True)
class VersionInfo:
    id: int
    name: str
    status: str
    files: list[RemoteFile]
    model_id: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionInfo:
        files = [
            RemoteFile(
                path=str(f["path"]),
                size=int(f.get("size", 0)),
                sha256=str(f.get("sha256") or (f.get("hashes") or {}).get("sha256") or ""),
                download_url=str(f.get("download_url") or ""),
            )
            for f in data.get("files") or []
        ]
        model = data.get("model")
        model_id = int(model["id"]) if isinstance(model, dict) and "id" in model else None
        return cls(
            id=int(data["id"]),
            name=str(data.get("name", "")),
            status=str(data.get("status", "")),
            files=files,
            model_id=model_id,
        )


@dataclass(frozen=True)
class NodeRegistration:
    """A node registered on the site; ``token`` (``atn_...``) is shown once, keep it secret."""

    id: int | str
    name: str
    token: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeRegistration:
        if not data.get("token") or "id" not in data:
            raise AtelierError("The site registered the node but sent no node id or token.")
        return cls(id=data["id"], name=str(data.get("name", "")), token=str(data["token"]))


# --- the client ------------------------------------------------------------------------------


class AtelierClient:
    """One site, optionally one API token; every method is one HTTP call."""

    def __init__(
        self,
        site: str,
        token: str = "",
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        if not site.startswith(("http://", "https://")):
            raise AtelierError(f"The site URL must start with http:// or https:// (got {site!r}).")
        self.site = site.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", USER_AGENT)

    # -- plumbing --

    def url(self, path: str) -> str:
        return urljoin(self.site + "/", path.lstrip("/"))

    def _headers(self, extra: dict[str, str] | None = None, *, auth: bool = True) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        auth: bool = True,
        not_found: type[NotFoundError] = NotFoundError,
    ) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else self.url(path)
        try:
            response = self.session.request(
                method,
                url,
                json=json,
                data=data,
                params=params,
                headers=self._headers(headers, auth=auth),
                stream=stream,
                timeout=self.timeout,
            )
        except requests.exceptions.SSLError as exc:
            raise NetworkError(f"TLS error talking to {self.site}: {exc}") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise NetworkError(f"Cannot reach {self.site} ({_reason(exc)}).") from exc
        except requests.exceptions.RequestException as exc:
            raise NetworkError(f"The request to {url} failed: {exc}") from exc
        if response.status_code >= 400:
            try:
                raise error_from_response(response, not_found)
            finally:
                response.close()
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError as exc:
            raise AtelierError(
                f"The server sent something that is not JSON for {path} "
                f"(is {self.site} an Atelier site?)."
            ) from exc
        if not isinstance(body, dict):
            raise AtelierError(f"Unexpected answer from {path}.")
        return body

    # -- accounts --

    def token_create(self, *, username: str, password: str, name: str = "cli") -> tuple[str, str]:
        """A new API token for a username and password: ``(token, username)``."""
        body = self._json(
            "POST",
            "/api/v1/auth/tokens",
            json={"username": username, "password": password, "name": name},
            auth=False,
        )
        return str(body["token"]), str(body.get("username") or username)

    def whoami(self) -> dict[str, Any]:
        if not self.token:
            raise NotLoggedInError()
        return self._json("GET", "/api/v1/auth/whoami")

    # -- uploads --

    def upload_create(self, *, filename: str, size: int, sha256: str = "") -> UploadInfo:
        body = self._json(
            "POST", "/api/v1/uploads", json={"filename": filename, "size": size, "sha256": sha256}
        )
        return UploadInfo.from_json(body)

    def upload_get(self, upload_id: str) -> UploadInfo:
        return UploadInfo.from_json(self._json("GET", f"/api/v1/uploads/{upload_id}"))

    def upload_append(self, upload_id: str, *, offset: int, data: bytes) -> UploadInfo:
        body = self._json(
            "PATCH",
            f"/api/v1/uploads/{upload_id}",
            data=data,
            headers={
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
        )
        return UploadInfo.from_json(body)

    def upload_complete(self, upload_id: str) -> UploadInfo:
        return UploadInfo.from_json(self._json("POST", f"/api/v1/uploads/{upload_id}/complete"))

    # -- catalogue --

    def model_create(
        self,
        *,
        name: str,
        kind: str,
        description: str = "",
        tags: Sequence[str] = (),
        visibility: str = "public",
    ) -> ModelInfo:
        body = self._json(
            "POST",
            "/api/v1/models",
            json={
                "name": name,
                "kind": kind,
                "description": description,
                "tags": list(tags),
                "visibility": visibility,
            },
        )
        return ModelInfo.from_json(body)

    def model_get(self, model_id: int) -> ModelInfo:
        return ModelInfo.from_json(
            self._json("GET", f"/api/v1/models/{model_id}", not_found=ModelNotFoundError)
        )

    def model_find(self, *, owner: str, slug: str) -> ModelInfo:
        """The model ``owner/slug``; its detail (with versions) is fetched by id."""
        body = self._json(
            "GET",
            "/api/v1/models",
            params={"q": slug.replace("-", " "), "creator": owner, "page_size": "100"},
        )
        items = body.get("results", [])
        for item in items if isinstance(items, list) else []:
            info = ModelInfo.from_json(item)
            if info.slug == slug and (not info.owner or info.owner == owner):
                return self.model_get(info.id)
        # Search may miss an unusual slug: fall back to the creator's full list.
        body = self._json("GET", "/api/v1/models", params={"creator": owner, "page_size": "100"})
        for item in body.get("results", []) or []:
            info = ModelInfo.from_json(item)
            if info.slug == slug:
                return self.model_get(info.id)
        raise ModelNotFoundError(f"No model {owner}/{slug}, or it is not visible to you.")

    def version_create(
        self,
        model_id: int,
        *,
        name: str,
        files: Iterable[tuple[str, str]],
        trigger_words: Sequence[str] = (),
        base_model: str = "",
        layout: str = "",
        description: str = "",
    ) -> VersionInfo:
        payload: dict[str, Any] = {
            "name": name,
            "files": [{"upload_id": uid, "path": path} for uid, path in files],
            "trigger_words": list(trigger_words),
        }
        if base_model:
            payload["base_model"] = base_model
        if layout:
            payload["layout"] = layout
        if description:
            payload["description"] = description
        body = self._json(
            "POST",
            f"/api/v1/models/{model_id}/versions",
            json=payload,
            not_found=ModelNotFoundError,
        )
        return VersionInfo.from_json(body)

    def version_publish(self, version_id: int) -> VersionInfo:
        return VersionInfo.from_json(
            self._json(
                "POST", f"/api/v1/versions/{version_id}/publish", not_found=ModelNotFoundError
            )
        )

    def version_get(self, version_id: int) -> VersionInfo:
        return VersionInfo.from_json(
            self._json("GET", f"/api/v1/versions/{version_id}", not_found=ModelNotFoundError)
        )

    # -- federated nodes (a data owner's node; see client/node.py) --

    def node_register(self, *, name: str, public_key: str) -> NodeRegistration:
        """``POST /api/v1/federated/nodes`` as the logged-in owner: a new node and its token."""
        if not self.token:
            raise NotLoggedInError()
        body = self._json(
            "POST", "/api/v1/federated/nodes", json={"name": name, "public_key": public_key}
        )
        return NodeRegistration.from_json(body)

    def dataset_publish(
        self,
        *,
        node_id: int | str,
        name: str,
        description: str,
        manifest: dict[str, Any],
        terms: dict[str, Any],
    ) -> dict[str, Any]:
        """``POST /api/v1/federated/datasets``: list a private dataset (its manifest, not data)."""
        if not self.token:
            raise NotLoggedInError()
        return self._json(
            "POST",
            "/api/v1/federated/datasets",
            json={
                "node_id": node_id,
                "name": name,
                "description": description,
                "manifest": manifest,
                "terms": terms,
            },
        )

    def node_heartbeat(
        self, *, datasets: Sequence[str], version: str, flwr_node_id: str = ""
    ) -> dict[str, Any]:
        """``POST /api/v1/federated/nodes/heartbeat`` with the NODE token (this client's token)."""
        payload: dict[str, Any] = {"datasets": list(datasets), "version": version}
        if flwr_node_id:
            payload["flwr_node_id"] = flwr_node_id
        return self._json("POST", "/api/v1/federated/nodes/heartbeat", json=payload)

    # -- downloads --

    def download(
        self,
        url: str,
        part: Path,
        *,
        on_start: Callable[[int], None] = lambda offset: None,
        on_chunk: Callable[[bytes], None] = lambda chunk: None,
    ) -> int:
        """Append the rest of ``url`` to ``part``, with a Range request when it has bytes.

        ``on_start(offset)`` is called once the server has answered, with the offset the
        bytes continue from (0 when the server sends the whole file again); ``on_chunk``
        sees every chunk written. Returns that offset.
        """
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = self.request("GET", url, headers=headers, stream=True)
        except AtelierError as err:
            if err.status == 416 and offset:  # asked past the end: the part file is too long
                part.unlink()
                return self.download(url, part, on_start=on_start, on_chunk=on_chunk)
            raise
        with response:
            if offset and response.status_code != 206:
                offset = 0  # the server ignored the range: start over
            on_start(offset)
            try:
                with open(part, "ab" if offset else "wb") as fh:
                    for chunk in response.iter_content(DOWNLOAD_CHUNK):
                        fh.write(chunk)
                        on_chunk(chunk)
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.Timeout,
            ) as exc:
                raise NetworkError(
                    f"The download broke off ({_reason(exc)}); rerun to resume it."
                ) from exc
        return offset


def sha256_of(path: Path, *, on_bytes: Callable[[int], None] = lambda n: None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(DOWNLOAD_CHUNK):
            digest.update(chunk)
            on_bytes(len(chunk))
    return digest.hexdigest()


def _reason(exc: BaseException) -> str:
    """A short reason for a requests exception, without the urllib3 object soup."""
    text = str(exc)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "timed out",
        "Temporary failure in name resolution",
        "Connection reset",
        "Connection aborted",
        "No route to host",
    ):
        if marker.lower() in text.lower():
            return marker.lower()
    return type(exc).__name__
