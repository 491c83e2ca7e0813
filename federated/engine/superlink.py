"""A typed client of Flower's Control API (1.41): start, watch, stop and read runs on a SuperLink.

The site is the Control API's only client. It speaks Flower's protobuf-over-HTTP(S) Control API
from this process with Flower's own client and messages (``flwr.supercore.control``), the
calls the ``flwr`` CLI makes, over one kept-alive HTTP connection pool per SuperLink and
process (no CLI subprocess per call: a poll costs a few milliseconds of CPU, not seconds)::

    StartRun(fab, override_config)      what ``flwr run APP CONN`` sends     -> run_id
    ListRuns(run_id=ID) / ListRuns()    ``flwr ls CONN [--run-id ID]``       -> runs
    StopRun(run_id)                     ``flwr stop ID CONN``                -> success
    StreamLogs(run_id, 0.0)             ``flwr log ID CONN --show``          (first message)

Failures become typed errors (:class:`SuperLinkUnavailable`, :class:`RunNotFound`,
:class:`InvalidRunConfig`, :class:`FlwrCliError`) from the Control API's codes (the numbers
the CLI prints as ``[code: N]``). Run configs travel in the request body only (they hold the
job's bearer tokens, which must not show up in ``ps`` or on disk).

Pure Python: no Django here (the coordinator, ``federated.coordinator``, turns settings into a
:class:`Connection`; ``federated.engine.localfed`` uses the same calls for local federations).
It lives in the engine, the floor both of them stand on.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx
    from flwr.supercore.control import ControlHttpClient

__all__ = [
    "APP_DIR",
    "Connection",
    "FlwrCliError",
    "InvalidRunConfig",
    "RunNotFound",
    "RunStatus",
    "SuperLinkError",
    "SuperLinkUnavailable",
    "SuperNodeInfo",
    "SuperNodeKeyInUse",
    "SuperNodeNotFound",
    "control_clients_close",
    "public_key_pem",
    "run_log",
    "run_start",
    "run_status",
    "run_stop",
    "runs_list",
    "supernode_find",
    "supernode_register",
    "supernode_unregister",
    "supernodes_list",
    "toml_value",
]

# The Flower app folder (federated/flower_app: its pyproject.toml; the code is the engine).
APP_DIR = Path(__file__).resolve().parents[1] / "flower_app"
LOG_TAIL_CHARS = 20_000

# Control API error codes (FlowerError codes; the CLI prints them as "[code: N]").
_CODE_INVALID_ARGUMENT = 3
_CODE_DEADLINE = 4
_CODE_UNAVAILABLE = 14
_CODE_INVALID_RUN_CONFIG = 15
_CODE_RUN_NOT_FOUND = 16
_CODE_RUN_FINISHED = 18
_CODE_KEY_IN_USE = 23
_CODE_NODE_NOT_FOUND = 24
_UNAVAILABLE_HTTP = (502, 503, 504)


class SuperLinkError(RuntimeError):
    """Something went wrong talking to the SuperLink; ``code`` is the Control API's, if any."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class SuperLinkUnavailable(SuperLinkError):
    """The SuperLink does not answer (down, wrong address, or it timed out): try again."""


class RunNotFound(SuperLinkError):
    """The SuperLink has no run with this id."""


class InvalidRunConfig(SuperLinkError):
    """The SuperLink refused the run config (a key the app does not declare, a bad value)."""


class FlwrCliError(SuperLinkError):
    """The Control API failed in a way that is not one of the above (named after the CLI the
    site used to run; its answer is in the message)."""


class SuperNodeKeyInUse(SuperLinkError):
    """The SuperLink already has this node public key (registered, or unregistered: a key
    the SuperLink has seen is never registered again)."""


class SuperNodeNotFound(SuperLinkError):
    """The SuperLink has no registered node with this id (never was, or already unregistered)."""


def toml_value(value: object) -> str:
    """A Python scalar as a TOML value (bool, int, float, or a basic string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string (JSON escapes are valid TOML)


@dataclass(frozen=True)
class Connection:
    """Where the SuperLink's Control API is, and a home folder for the ``flwr`` CLI.

    The calls here do not use the CLI; ``flwr_home/config.toml`` is still written (with exactly
    this connection, named ``name``, as the default) when a run starts, so that an operator
    can follow the site's runs by hand with ``FLWR_HOME=... flwr ls``.
    """

    address: str
    flwr_home: Path
    insecure: bool = False  # TLS unless told otherwise
    root_certificates: Path | None = None  # the SuperLink's CA (None: the system's CAs)
    name: str = "atelier"
    timeout: float = 60.0  # seconds for one Control API call

    def config_toml(self) -> str:
        lines = [
            "[superlink]",
            f"default = {toml_value(self.name)}",
            "",
            f"[superlink.{self.name}]",
            f"address = {toml_value(self.address)}",
            f"insecure = {toml_value(self.insecure)}",
        ]
        if self.root_certificates is not None:
            lines.append(f"root-certificates = {toml_value(str(self.root_certificates))}")
        return "\n".join(lines) + "\n"

    def write_config(self) -> Path:
        """Write ``$FLWR_HOME/config.toml`` if it is not already this connection (atomic)."""
        path = Path(self.flwr_home) / "config.toml"
        text = self.config_toml()
        try:
            if path.read_text(encoding="utf-8") == text:
                return path
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".toml")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
        return path


@dataclass(frozen=True)
class RunStatus:
    """One run as ``flwr ls --run-id ID`` shows it.

    ``status`` is ``pending``, ``starting``, ``running`` or ``finished:<sub>`` with ``<sub>``
    one of ``completed``, ``failed``, ``stopped``; ``details`` holds the ServerApp's exception
    for a failed run.
    """

    run_id: str
    status: str
    details: str = ""
    elapsed_seconds: float = 0.0
    inbound_bytes: int = 0
    outbound_bytes: int = 0
    serverapp_seconds: float = 0.0
    clientapp_seconds: float = 0.0
    fab_id: str = ""
    pending_at: datetime | None = None
    finished_at: datetime | None = None
    raw: Mapping[str, object] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        return self.status.startswith("finished")

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"

    @property
    def failed(self) -> bool:
        return self.status == "finished:failed"

    @property
    def stopped(self) -> bool:
        return self.status == "finished:stopped"

    @property
    def total_bytes(self) -> int:
        return self.inbound_bytes + self.outbound_bytes

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> RunStatus:
        traffic = _mapping(data.get("network-traffic"))
        compute = _mapping(data.get("compute-time"))
        details = str(data.get("status-details") or "")
        return cls(
            run_id=str(data.get("run-id", "")),
            status=str(data.get("status", "")),
            details="" if details == "N/A" else details,
            elapsed_seconds=_float(data.get("elapsed")),
            inbound_bytes=int(_float(traffic.get("inbound-bytes"))),
            outbound_bytes=int(_float(traffic.get("outbound-bytes"))),
            serverapp_seconds=_float(compute.get("serverapp-seconds")),
            clientapp_seconds=_float(compute.get("clientapp-seconds")),
            fab_id=str(data.get("fab-id", "")),
            pending_at=_timestamp(data.get("pending-at")),
            finished_at=_timestamp(data.get("finished-at")),
            raw=dict(data),
        )


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]  # checked by the except
    except (TypeError, ValueError):
        return 0.0


def _timestamp(value: object) -> datetime | None:
    """The CLI's ``YYYY-MM-DD HH:MM:SSZ`` (UTC); None for ``N/A``."""
    try:
        return datetime.strptime(str(value), "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


# --- the Control API client: one per SuperLink and process -----------------------------------

_clients: dict[tuple[object, ...], ControlHttpClient] = {}
_clients_lock = threading.Lock()


def _client_key(connection: Connection) -> tuple[object, ...]:
    """What a client is built from: a changed CA file (rotated) makes a new client; the pid,
    because an HTTP connection pool must not cross a fork (Celery's prefork workers)."""
    stamp: tuple[int, int] | None = None
    if not connection.insecure and connection.root_certificates is not None:
        try:
            info = os.stat(connection.root_certificates)
            stamp = (info.st_mtime_ns, info.st_size)
        except OSError as exc:
            raise SuperLinkError(f"cannot read the SuperLink's CA file: {exc}") from exc
    return (
        os.getpid(),
        connection.address,
        connection.insecure,
        str(connection.root_certificates) if connection.root_certificates else None,
        stamp,
        connection.timeout,
    )


def _new_client(connection: Connection) -> ControlHttpClient:
    from flwr.supercore.control import ControlHttpClient

    verify: ssl.SSLContext | bool = False
    if not connection.insecure:
        verify = ssl.create_default_context()
        if connection.root_certificates is not None:
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            verify.load_verify_locations(cafile=str(connection.root_certificates))
    scheme = "http" if connection.insecure else "https"
    return ControlHttpClient(
        f"{scheme}://{connection.address}", verify=verify, timeout=connection.timeout
    )


def _client(connection: Connection) -> tuple[tuple[object, ...], ControlHttpClient]:
    key = _client_key(connection)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            try:
                client = _new_client(connection)
            except (ValueError, OSError, ssl.SSLError) as exc:
                raise SuperLinkError(f"cannot reach the Control API: {exc}") from exc
            _clients[key] = client
        return key, client


def _client_drop(key: tuple[object, ...]) -> None:
    with _clients_lock:
        client = _clients.pop(key, None)
    if client is not None and key[0] == os.getpid():
        client.close()


def control_clients_close(address: str | None = None) -> None:
    """Close every kept Control API client of this process (tests, shutdown), or those of
    the SuperLink at ``address`` (before stopping it: its graceful shutdown waits for open
    connections)."""
    with _clients_lock:
        clients = [
            (key, _clients.pop(key))
            for key in list(_clients)
            if address is None or key[1] == address
        ]
    for key, client in clients:
        if key[0] == os.getpid():
            client.close()


def _error(message: str, code: int | None) -> SuperLinkError:
    """The typed error for a Control API error code and message."""
    text = " ".join(message.split())
    if code in (_CODE_UNAVAILABLE, _CODE_DEADLINE):
        return SuperLinkUnavailable(f"SuperLink unavailable: {text}", code=code)
    if code == _CODE_RUN_NOT_FOUND:
        return RunNotFound(text, code=code)
    if code in (_CODE_INVALID_RUN_CONFIG, _CODE_INVALID_ARGUMENT):
        return InvalidRunConfig(text, code=code)
    if code == _CODE_KEY_IN_USE:
        return SuperNodeKeyInUse(text, code=code)
    if code == _CODE_NODE_NOT_FOUND:
        return SuperNodeNotFound(text, code=code)
    return FlwrCliError(f"[code: {code}] {text}" if code is not None else text, code=code)


def _status_error(exc: httpx.HTTPStatusError) -> SuperLinkError:
    """The Control API's JSON error body (``{"code", "detail", "extra"}``) as a typed error."""
    response = exc.response
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = body.get("code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        parts = [str(body.get(k)) for k in ("detail", "extra") if body.get(k)]
        message = " ".join(parts) or response.reason_phrase
    else:
        code, message = None, response.text[:500] or response.reason_phrase
    if code is None and response.status_code in _UNAVAILABLE_HTTP:
        return SuperLinkUnavailable(f"SuperLink unavailable: HTTP {response.status_code} {message}")
    if code is None:
        return FlwrCliError(f"HTTP {response.status_code}: {message}")
    return _error(message, code)


def _control_call(connection: Connection, method: str, request: object) -> object:
    """One Control API call on the connection's kept client; typed errors for what the
    SuperLink or the network answered. A transport failure drops the client (the next call
    connects afresh: a restarted SuperLink, a changed certificate)."""
    import httpx

    key, client = _client(connection)
    try:
        return getattr(client, method)(request)
    except httpx.HTTPStatusError as exc:
        raise _status_error(exc) from exc
    except httpx.TransportError as exc:
        _client_drop(key)
        text = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
            # Not something a retry fixes: the wrong CA, or TLS on one side only.
            raise SuperLinkError(f"TLS to the SuperLink failed: {text}") from exc
        raise SuperLinkUnavailable(f"SuperLink unavailable: {text}") from exc
    except ValueError as exc:  # not a protobuf answer: something else listens there
        _client_drop(key)
        raise FlwrCliError(f"the SuperLink's answer to {method} is not valid: {exc}") from exc


def _run_id(run_id: str | int) -> int:
    """A Flower run id (unsigned 64-bit); :class:`RunNotFound` for anything else."""
    text = str(run_id).strip()
    if not text.isdigit() or int(text) >= 2**64:
        raise RunNotFound(f"Run ID {run_id} not found.", code=_CODE_RUN_NOT_FOUND)
    return int(text)


# --- runs ----------------------------------------------------------------------------------------


def _config_value(value: object) -> bool | int | float | str:
    """A run-config override as the CLI would have read it from TOML (scalars; else str)."""
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def run_start(app_dir: Path, connection: Connection, run_config: Mapping[str, object]) -> str:
    """Submit a run of the Flower app in ``app_dir`` with these run-config overrides.

    Returns the run id (a decimal string: Flower's ids are unsigned 64-bit). The app is built
    into a FAB here, as ``flwr run`` builds it; the overrides go in the request body only.
    """
    from flwr.cli.build import build_fab_from_disk
    from flwr.common.serde import fab_to_proto, user_config_to_proto
    from flwr.proto.control_pb2 import StartRunRequest
    from flwr.supercore.fab import Fab

    try:
        connection.write_config()
    except OSError:
        pass  # only a convenience for operators
    try:
        fab_bytes = build_fab_from_disk(Path(app_dir))
    except (OSError, ValueError) as exc:
        raise FlwrCliError(f"cannot build the Flower app in {app_dir}: {exc}") from exc
    fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
    overrides = {str(key): _config_value(value) for key, value in run_config.items()}
    request = StartRunRequest(
        fab=fab_to_proto(fab), override_config=user_config_to_proto(overrides)
    )
    response = _control_call(connection, "StartRun", request)
    if not response.HasField("run_id"):  # type: ignore[attr-defined]
        raise FlwrCliError(f"the SuperLink answered StartRun without a run id: {response}")
    return str(response.run_id)  # type: ignore[attr-defined]


def _runs(connection: Connection, request: object) -> list[RunStatus]:
    from flwr.cli.run_utils import format_runs
    from flwr.common.serde import run_from_proto

    response = _control_call(connection, "ListRuns", request)
    runs = [run_from_proto(proto) for proto in response.run_dict.values()]  # type: ignore[attr-defined]
    rows = format_runs(runs, response.now)  # type: ignore[attr-defined]
    return [
        RunStatus.from_json(
            {
                "run-id": str(row.run_id),
                "federation-id": row.federation_id,
                "fab-id": row.fab_id,
                "fab-version": row.fab_version,
                "fab-hash": row.fab_hash,
                "status": row.status_text,
                "status-details": row.details,
                "elapsed": row.elapsed,
                "pending-at": row.pending_at,
                "starting-at": row.starting_at,
                "running-at": row.running_at,
                "finished-at": row.finished_at,
                "network-traffic": {
                    "inbound-bytes": row.network_traffic_inbound,
                    "outbound-bytes": row.network_traffic_outbound,
                    "total-bytes": row.network_traffic_inbound + row.network_traffic_outbound,
                },
                "compute-time": {
                    "serverapp-seconds": row.compute_time_serverapp,
                    "clientapp-seconds": row.compute_time_clientapp,
                    "total-seconds": row.compute_time_serverapp + row.compute_time_clientapp,
                },
            }
        )
        for row in rows
    ]


def run_status(run_id: str, connection: Connection) -> RunStatus:
    """The run's status, details, traffic and compute time; :class:`RunNotFound` if unknown."""
    from flwr.proto.control_pb2 import ListRunsRequest

    runs = _runs(connection, ListRunsRequest(run_id=_run_id(run_id)))
    if not runs:
        raise RunNotFound(f"Run ID {run_id} not found.", code=_CODE_RUN_NOT_FOUND)
    return runs[0]


def runs_list(connection: Connection) -> list[RunStatus]:
    """Every run the SuperLink knows, newest first (as ``flwr ls`` lists them)."""
    from flwr.proto.control_pb2 import ListRunsRequest

    return _runs(connection, ListRunsRequest())


def run_stop(run_id: str, connection: Connection) -> bool:
    """Ask the SuperLink to stop the run: True if it was stopped, False if it had finished."""
    from flwr.proto.control_pb2 import StopRunRequest

    try:
        response = _control_call(connection, "StopRun", StopRunRequest(run_id=_run_id(run_id)))
    except FlwrCliError as exc:
        if exc.code == _CODE_RUN_FINISHED:
            return False
        raise
    if not response.success:  # type: ignore[attr-defined]
        raise FlwrCliError(f"Run {run_id} couldn't be stopped.")
    return True


def run_log(run_id: str, connection: Connection, *, max_chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``max_chars`` characters of the run's log (ServerApp output), as
    ``flwr log --show`` prints it: the first answer of the log stream."""
    import httpx
    from flwr.proto.control_pb2 import StreamLogsRequest

    request = StreamLogsRequest(run_id=_run_id(run_id), after_timestamp=0.0)
    stream = _control_call(connection, "StreamLogs", request)
    text = ""
    try:
        for response in stream:  # type: ignore[attr-defined]
            text = str(response.log_output)
            break
    except httpx.HTTPStatusError as exc:  # the stream's errors come when it is read
        raise _status_error(exc) from exc
    except httpx.TransportError as exc:
        raise SuperLinkUnavailable(f"SuperLink unavailable: {exc}") from exc
    finally:
        stream.close()  # type: ignore[attr-defined]
    return text[-max_chars:]


# --- SuperNode authentication: node keys on the SuperLink (Control API) -------------------------
#
# ``flower-superlink --enable-supernode-auth`` admits only SuperNodes whose public key was
# registered through the Control API; unregistering a node ends its next pull. The CLI
# (``flwr supernode register/unregister/ls``) does not show public keys, so the site asks
# with the same messages itself.


@dataclass(frozen=True)
class SuperNodeInfo:
    """A node the SuperLink knows: ``status`` is registered, online, offline or unregistered."""

    node_id: str  # uint64 as a decimal string
    status: str
    public_key_pem: bytes  # SubjectPublicKeyInfo PEM, as the SuperLink stores it

    @property
    def registered(self) -> bool:
        return self.status != "unregistered"


def public_key_pem(openssh: str) -> bytes:
    """An OpenSSH ECDSA public key line as the SuperLink stores keys (SubjectPublicKeyInfo PEM)."""
    from cryptography.hazmat.primitives import serialization

    parts = openssh.strip().split()
    try:
        key = serialization.load_ssh_public_key(" ".join(parts[:2]).encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise SuperLinkError(f"not an OpenSSH public key: {exc}") from exc
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def supernode_register(public_key: str, connection: Connection, *, name: str = "") -> str:
    """Register a node's OpenSSH ECDSA public key; the SuperLink's new node id (decimal).

    :class:`SuperNodeKeyInUse` if the SuperLink already has the key (see :func:`supernode_find`).
    """
    from flwr.proto.control_pb2 import RegisterNodeRequest

    request = RegisterNodeRequest(public_key=public_key_pem(public_key))
    if name:
        request.name = name[:100]
    response = _control_call(connection, "RegisterNode", request)
    node_id = int(getattr(response, "node_id", 0) or 0)
    if not node_id:
        raise FlwrCliError("the SuperLink registered the node without an id")
    return str(node_id)


def supernode_unregister(node_id: str, connection: Connection) -> bool:
    """Unregister a node: True if it was registered, False if the SuperLink had no such node
    (already unregistered): its key can no longer connect either way."""
    from flwr.proto.control_pb2 import UnregisterNodeRequest

    try:
        _control_call(connection, "UnregisterNode", UnregisterNodeRequest(node_id=int(node_id)))
    except SuperNodeNotFound:
        return False
    return True


def supernodes_list(connection: Connection) -> list[SuperNodeInfo]:
    """Every node the SuperLink knows, unregistered ones included."""
    from flwr.proto.control_pb2 import ListNodesRequest

    response = _control_call(connection, "ListNodes", ListNodesRequest())
    return [
        SuperNodeInfo(str(info.node_id), str(info.status), bytes(info.public_key))
        for info in getattr(response, "nodes_info", [])
    ]


def supernode_find(public_key: str, connection: Connection) -> SuperNodeInfo | None:
    """The SuperLink's node for this OpenSSH public key (a registered one first), or None."""
    pem = public_key_pem(public_key)
    found = [node for node in supernodes_list(connection) if node.public_key_pem == pem]
    found.sort(key=lambda node: not node.registered)
    return found[0] if found else None
