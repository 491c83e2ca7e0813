"""A typed wrapper of Flower's ``flwr`` CLI (1.41): start, watch, stop and read runs on a SuperLink.

The site is the Control API's only client. Each call runs the CLI as a subprocess with
``--format json`` against one named connection written into ``$FLWR_HOME/config.toml``::

    flwr run APP CONN --format json --run-config OVERRIDES.toml   -> {"success", "run-id"}
    flwr ls CONN --run-id ID --format json                       -> {"success", "runs": [...]}
    flwr stop ID CONN --format json                              -> {"success"}
    flwr log ID CONN --show                                      (plain text)

``flwr run --format json`` exits 0 even when it fails: ``success`` is what counts, and the
error text carries the Control API's code (``[code: 16] Run ID not found.``). Failures become
typed errors (:class:`SuperLinkUnavailable`, :class:`RunNotFound`, :class:`InvalidRunConfig`,
:class:`FlwrCliError`). Run configs travel in a private (0600) TOML file that is deleted after
the call: they hold the job's bearer tokens, which must not show up in ``ps``.

Pure Python: no Django here (the coordinator, ``federated.coordinator``, turns settings into a
:class:`Connection`; ``federated.engine.localfed`` uses the same calls for local federations).
It lives in the engine, the floor both of them stand on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

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
FLWR_BIN = Path(sys.executable).parent / "flwr"
LOG_TAIL_CHARS = 20_000

# Control API status codes the CLI prints as "[code: N]" (gRPC codes).
_CODE_INVALID_ARGUMENT = 3
_CODE_DEADLINE = 4
_CODE_UNAVAILABLE = 14
_CODE_INVALID_RUN_CONFIG = 15
_CODE_RUN_NOT_FOUND = 16
_CODE_RUN_FINISHED = 18
_CODE_RE = re.compile(r"\[code: (\d+)\]\s*(.*)")
_UNAVAILABLE_TEXT = "Connection to the SuperLink is unavailable"
_BOX_RE = re.compile(r"[\u2500-\u257f]+")  # the frame of rich's error panels (flwr log)


class SuperLinkError(RuntimeError):
    """Something went wrong talking to the SuperLink; ``code`` is the Control API's, if any."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class SuperLinkUnavailable(SuperLinkError):
    """The SuperLink does not answer (down, wrong address, or the CLI timed out): try again."""


class RunNotFound(SuperLinkError):
    """The SuperLink has no run with this id."""


class InvalidRunConfig(SuperLinkError):
    """The SuperLink refused the run config (a key the app does not declare, a bad value)."""


class FlwrCliError(SuperLinkError):
    """The CLI failed in a way that is not one of the above (its output is in the message)."""


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
    """Where the SuperLink's Control API is, and the CLI's home folder (``FLWR_HOME``).

    ``name`` is the connection's name in ``$FLWR_HOME/config.toml``; the file is (re)written
    with exactly this connection, as the default, whenever it differs.
    """

    address: str
    flwr_home: Path
    insecure: bool = False  # TLS unless told otherwise
    root_certificates: Path | None = None  # the SuperLink's CA (None: the system's CAs)
    name: str = "atelier"
    flwr_bin: Path = FLWR_BIN
    timeout: float = 60.0
    env: Mapping[str, str] = field(default_factory=dict)

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

    def process_env(self) -> dict[str, str]:
        # COLUMNS: rich (the CLI's printer) would wrap plain-text errors at 80 columns.
        return {**os.environ, "COLUMNS": "400", **self.env, "FLWR_HOME": str(self.flwr_home)}


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


# --- the CLI ------------------------------------------------------------------------------------


def _error(message: str) -> SuperLinkError:
    """The typed error for a CLI ``error-message``."""
    message = _BOX_RE.sub(" ", message)
    match = _CODE_RE.search(message)
    code = int(match.group(1)) if match else None
    text = " ".join((match.group(2) if match else message).split())
    if _UNAVAILABLE_TEXT in message or code in (_CODE_UNAVAILABLE, _CODE_DEADLINE):
        return SuperLinkUnavailable(f"SuperLink unavailable: {text}", code=code)
    if code == _CODE_RUN_NOT_FOUND:
        return RunNotFound(text, code=code)
    if code in (_CODE_INVALID_RUN_CONFIG, _CODE_INVALID_ARGUMENT):
        return InvalidRunConfig(text, code=code)
    return FlwrCliError(text, code=code)


def _cli(connection: Connection, args: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``flwr ARGS`` against the connection; a typed error if it cannot run or answer."""
    connection.write_config()
    try:
        return subprocess.run(
            [str(connection.flwr_bin), *args],
            capture_output=True,
            env=connection.process_env(),
            cwd=connection.flwr_home,
            timeout=connection.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SuperLinkUnavailable(
            f"flwr {args[0]} did not answer in {connection.timeout:g} s"
        ) from exc
    except OSError as exc:
        raise FlwrCliError(f"cannot run {connection.flwr_bin}: {exc}") from exc


def _flwr(connection: Connection, args: Sequence[str]) -> dict[str, object]:
    """Run ``flwr ARGS --format json``; the parsed JSON on success, else a typed error."""
    done = _cli(connection, [*args, "--format", "json"])
    text = done.stdout.decode("utf-8", "replace")
    start = text.find("{")
    try:
        result = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        stderr = done.stderr.decode("utf-8", "replace")
        raise _error(f"flwr {args[0]} printed no JSON (exit {done.returncode}): {text}{stderr}")
    if not result.get("success"):
        raise _error(str(result.get("error-message") or result))
    return result


def run_start(app_dir: Path, connection: Connection, run_config: Mapping[str, object]) -> str:
    """Submit a run of the Flower app in ``app_dir`` with these run-config overrides.

    Returns the run id (a decimal string: Flower's ids are unsigned 64-bit). The overrides go
    through a 0600 TOML file in ``FLWR_HOME`` that is removed afterwards.
    """
    Path(connection.flwr_home).mkdir(parents=True, exist_ok=True)
    fd, overrides = tempfile.mkstemp(dir=connection.flwr_home, prefix=".run-", suffix=".toml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp: mode 0600
            handle.writelines(f"{key} = {toml_value(v)}\n" for key, v in run_config.items())
        result = _flwr(
            connection, ["run", str(app_dir), connection.name, "--run-config", overrides]
        )
    finally:
        os.unlink(overrides)
    run_id = str(result.get("run-id") or "")
    if not run_id.isdigit():
        raise FlwrCliError(f"flwr run answered without a run id: {result}")
    return run_id


def run_status(run_id: str, connection: Connection) -> RunStatus:
    """The run's status, details, traffic and compute time; :class:`RunNotFound` if unknown."""
    result = _flwr(connection, ["ls", connection.name, "--run-id", str(run_id)])
    runs = result.get("runs")
    if not isinstance(runs, list) or not runs:
        raise RunNotFound(f"Run ID {run_id} not found.")
    return RunStatus.from_json(runs[0])


def runs_list(connection: Connection) -> list[RunStatus]:
    """Every run the SuperLink knows, as ``flwr ls`` lists them."""
    runs = _flwr(connection, ["ls", connection.name]).get("runs")
    return [RunStatus.from_json(run) for run in runs] if isinstance(runs, list) else []


def run_stop(run_id: str, connection: Connection) -> bool:
    """Ask the SuperLink to stop the run: True if it was stopped, False if it had finished."""
    try:
        _flwr(connection, ["stop", str(run_id), connection.name])
    except FlwrCliError as exc:
        if exc.code == _CODE_RUN_FINISHED:
            return False
        raise
    return True


def run_log(run_id: str, connection: Connection, *, max_chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``max_chars`` characters of the run's log (ServerApp output)."""
    done = _cli(connection, ["log", str(run_id), connection.name, "--show"])
    text = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0:
        raise _error(text + done.stderr.decode("utf-8", "replace"))
    return text[-max_chars:]


# --- SuperNode authentication: node keys on the SuperLink (Control API) -------------------------
#
# ``flower-superlink --enable-supernode-auth`` admits only SuperNodes whose public key was
# registered through the Control API; unregistering a node ends its next pull. The CLI
# (``flwr supernode register/unregister/ls``) does not show public keys, so these calls speak
# the Control API's protobuf-over-HTTPS directly with Flower's own client and messages.

_CODE_KEY_IN_USE = 23
_CODE_NODE_NOT_FOUND = 24


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


def _control_call(connection: Connection, method: str, request: object) -> object:
    """One Control API call; typed errors for what the SuperLink or the network answered."""
    import httpx
    from flwr.supercore.control import ControlHttpClient

    use_tls = not connection.insecure
    root = (
        Path(connection.root_certificates).read_bytes()
        if use_tls and connection.root_certificates is not None
        else None
    )
    try:
        client = ControlHttpClient.from_server_address(
            server_address=connection.address,
            insecure=not use_tls,
            root_certificates=root,
            interceptors=[],
        )
    except (ValueError, OSError) as exc:
        raise SuperLinkError(f"cannot reach the Control API: {exc}") from exc
    try:
        with client:
            return getattr(client, method)(request)
    except httpx.HTTPStatusError as exc:
        try:
            body = exc.response.json()
        except ValueError:
            body = {}
        code = body.get("code") if isinstance(body, dict) else None
        detail = str(body.get("detail") if isinstance(body, dict) else "") or exc.response.text
        if code == _CODE_KEY_IN_USE:
            raise SuperNodeKeyInUse(detail, code=code) from exc
        if code == _CODE_NODE_NOT_FOUND:
            raise SuperNodeNotFound(detail, code=code) from exc
        raise _error(f"[code: {code}] {detail}" if code is not None else detail) from exc
    except httpx.TransportError as exc:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
            # Not something a retry fixes: the wrong CA, or TLS on one side only.
            raise SuperLinkError(f"TLS to the SuperLink failed: {text}") from exc
        raise SuperLinkUnavailable(f"SuperLink unavailable: {text}") from exc


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
