"""A real local federation on loopback: a SuperLink, N SuperNodes, runs driven by the ``flwr`` CLI.

Used by the tests, the benchmark and the demo. By default with TLS and SuperNode
authentication, as in production: a CA and the SuperLink's certificate (``certs``, see
:mod:`federated.engine.pki`; pass one ``certs`` to share a CA), a key pair per node,
registered on the SuperLink through the Control API before the node starts::

    flower-superlink --host 127.0.0.1 --port P --database <tmp>/state.db \
        --ssl-ca-certfile ca.crt --ssl-certfile server.crt --ssl-keyfile server.key \
        --enable-supernode-auth --disable-runtime-dependency-installation
    flower-supernode --superlink 127.0.0.1:P --root-certificates ca.crt \
        --auth-supernode-private-key node-i/node.key --port Q_i --node-config '...'

``tls=False`` gives the old ``--insecure`` federation (no node authentication either);
``register_nodes=False`` leaves the registration of node keys to the caller (the site), and
``start_nodes=False`` starts only the SuperLink (``start_nodes()`` later).

each SuperNode with its own folder (dataset, cache, privacy ledger, FLWR_HOME), writes the
connection into ``$FLWR_HOME/config.toml`` of the CLI, runs ``flwr run federated/flower_app
<conn> --format json --run-config overrides.toml`` (which exits 0 even on failure: ``success``
is read), polls ``flwr ls --run-id ID --format json`` until the run is finished, and ALWAYS
stops its processes (context manager, plus ``atexit`` if the caller forgets).

The ``flwr`` calls go through :mod:`federated.engine.superlink`, the wrapper the coordinator
uses. Pure Python and the Flower CLIs; no Django.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from federated.engine.flower import fast_supernode
from federated.engine.pki import (
    NodeKey,
    ServerCertificates,
    generate_node_key,
    generate_server_certificates,
    load_node_key,
)
from federated.engine.superlink import (
    APP_DIR,
    Connection,
    SuperLinkError,
    SuperNodeKeyInUse,
    control_clients_close,
    run_start,
    run_status,
    run_stop,
    supernode_find,
    supernode_register,
    toml_value,
)

__all__ = [
    "APP_DIR",
    "FederationError",
    "LocalFederation",
    "NodeSpec",
    "descendants",
    "RunOutcome",
    "free_port",
    "toml_value",
]

CONNECTION = "local"
# A folder holding a CA (``ca.crt``, ``ca.key``; made there if missing) that signs every local
# SuperLink's certificate: the tests set it once per session so that one CA file is trusted.
CA_DIR_ENV = "ATELIER_LOCALFED_CA"
_BIN = Path(sys.executable).parent


class FederationError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FederationError(
                f"process exited with {proc.returncode} before listening on {port}: "
                f"{log.read_text()[-2000:]}"
            )
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise FederationError(f"nothing listens on port {port} after {timeout:g} s; see {log}")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def descendants(pid: int) -> list[int]:
    children, found, todo = _children_map(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(frozen=True)
class NodeSpec:
    """One data owner's SuperNode: where its private data, cache, ledger and model are.

    ``dataset_path`` None: the datasets come from a ``node-file`` in ``extra``;
    ``base_model_path`` None: the node fetches each job's ``base-model-url``.
    ``private_key``: the node's key pair (OpenSSH private key, ``.pub`` next to it; None: one
    is made in the federation's folder); ``root_certificates``: the CA the node trusts (None:
    the federation's own).
    """

    dataset_path: Path | None
    cache_dir: Path
    ledger_path: Path
    base_model_path: Path | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    private_key: Path | None = None
    root_certificates: Path | None = None

    def node_config(self, defaults: Mapping[str, object] | None = None) -> str:
        """The ``--node-config`` string; ``defaults`` (the federation's settings for every
        node, such as ``release-samples``) come first, this node's own values win."""
        values = {
            **(defaults or {}),
            "cache-dir": str(self.cache_dir),
            "ledger-path": str(self.ledger_path),
            **({"dataset-path": str(self.dataset_path)} if self.dataset_path else {}),
            **({"base-model-path": str(self.base_model_path)} if self.base_model_path else {}),
            **self.extra,
        }
        return " ".join(f"{k}={toml_value(v)}" for k, v in values.items())


@dataclass
class RunOutcome:
    run_id: int
    status: str
    details: str
    seconds: float
    info: dict[str, object]

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"


@dataclass
class _Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


class LocalFederation:
    """``with LocalFederation(nodes, workdir) as fed: outcome = fed.run(config)``."""

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        workdir: Path,
        *,
        torch_threads: int = 1,
        port: int = 0,
        tls: bool = True,
        node_auth: bool | None = None,
        certs: ServerCertificates | None = None,
        register_nodes: bool = True,
        start_nodes: bool = True,
        executor: str = "warm",
        node_poll: float | None = 0.5,
        node_config: Mapping[str, object] | None = None,
    ) -> None:
        """``port``: the SuperLink's (0: a free one, picked at start). ``node_auth`` (default:
        ``tls``) needs TLS. ``certs``: the SuperLink's certificates (None: made in
        ``workdir/certs``, signed by the CA in ``$ATELIER_LOCALFED_CA`` if set, else by a new
        CA of its own). ``executor``: ``"warm"`` (the default, as ``atelier node start`` runs
        nodes: SuperNodes in ``process`` isolation, each served by ``client.warm_exec``) or
        ``"flower"`` (Flower's own: a fresh ClientApp process per message). ``node_poll``: the
        SuperNodes' idle poll of the SuperLink in seconds
        (:mod:`federated.engine.flower.fast_supernode`; None: Flower's own
        ``flower-supernode``, 3 s). ``node_config``: node-config values for every node (a
        node's own ``NodeSpec`` values win), e.g. ``{"release-samples": 1}``."""
        if executor not in ("flower", "warm"):
            raise FederationError(f"executor must be 'flower' or 'warm', got {executor!r}")
        self.executor = executor
        self.node_poll = node_poll
        self.node_config = dict(node_config or {})
        self.nodes = list(nodes)
        self.workdir = Path(workdir)
        self.torch_threads = torch_threads
        self.port = port
        self.tls = tls
        self.node_auth = tls if node_auth is None else node_auth
        if self.node_auth and not tls:
            raise FederationError("SuperNode authentication needs TLS")
        self.certs = certs
        self.register_nodes = register_nodes
        self.auto_start_nodes = start_nodes
        self.procs: list[_Proc] = []
        self.node_procs: list[_Proc] = []
        self.executor_procs: dict[int, _Proc] = {}  # node index -> its warm executor
        self.node_ids: dict[int, str] = {}  # node index -> the SuperLink's node id
        self.flwr_home = self.workdir / "flwr-home"

    # --- processes ---------------------------------------------------------------------------

    def _env(self, flwr_home: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "FLWR_HOME": str(flwr_home),
                "HF_HUB_OFFLINE": "1",
                "OMP_NUM_THREADS": str(self.torch_threads),
                "ATELIER_TORCH_THREADS": str(self.torch_threads),
                "PYTHONUNBUFFERED": "1",
                "FLWR_TELEMETRY_ENABLED": "0",  # nothing leaves the machine
                "PATH": f"{_BIN}{os.pathsep}{env.get('PATH', '')}",
            }
        )
        return env

    def _spawn(self, name: str, argv: list[str], flwr_home: Path) -> _Proc:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        flwr_home.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(flwr_home),
                cwd=self.workdir,
                start_new_session=True,
            )
        entry = _Proc(name, proc, log)
        self.procs.append(entry)
        return entry

    def start(self) -> LocalFederation:
        atexit.register(self.stop)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        security = ["--insecure"]
        if self.tls:
            if self.certs is None:
                shared = os.environ.get(CA_DIR_ENV)
                self.certs = generate_server_certificates(
                    self.workdir / "certs", ca_folder=Path(shared) if shared else None
                )
            security = self.certs.superlink_args()
            if self.node_auth:
                security.append("--enable-supernode-auth")
        link = self._spawn(
            "superlink",
            [
                str(_BIN / "flower-superlink"),
                *security,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database",
                str(self.workdir / "state.db"),
                "--disable-runtime-dependency-installation",
            ],
            self.flwr_home,
        )
        _wait_port(self.port, link.proc, link.log)
        self.connection.write_config()
        if self.auto_start_nodes:
            self.start_nodes()
        return self

    def start_nodes(self) -> None:
        """Start every node of ``nodes`` (registering its key first, unless told not to)."""
        for index, node in enumerate(self.nodes):
            if self.node_auth and self.register_nodes:
                self.register_node(index)
            self.node_procs.append(self.start_node(index, node))

    def node_key(self, index: int) -> NodeKey:
        """Node ``index``'s key pair: its spec's, or one made (once) in ``node-<index>/``."""
        spec = self.nodes[index] if index < len(self.nodes) else None
        if spec is not None and spec.private_key is not None:
            return load_node_key(spec.private_key)
        path = self.workdir / f"node-{index}" / "node.key"
        return load_node_key(path) if path.is_file() else generate_node_key(path)

    def register_node(self, index: int) -> str:
        """Register node ``index``'s public key on the SuperLink (idempotent); its node id."""
        key = self.node_key(index).openssh
        try:
            node_id = supernode_register(key, self.connection, name=f"local-{index}")
        except SuperNodeKeyInUse:
            found = supernode_find(key, self.connection)
            if found is None or not found.registered:
                raise
            node_id = found.node_id
        self.node_ids[index] = node_id
        return node_id

    def start_node(self, index: int, node: NodeSpec, *, wait: bool = True, name: str = "") -> _Proc:
        """Start one SuperNode; ``wait`` False: do not wait for it to listen (a node that
        is expected to be refused, see :meth:`wait_exit`)."""
        port = free_port()
        security = ["--insecure"]
        if self.tls:
            assert self.certs is not None  # made at start
            security = ["--root-certificates", str(node.root_certificates or self.certs.ca_cert)]
            if self.node_auth:
                security += ["--auth-supernode-private-key", str(self.node_key(index).private_key)]
        launcher = fast_supernode.command(str(_BIN / "flower-supernode"), self.node_poll)
        warm = self.executor == "warm"
        home = self.workdir / f"node-{index}" / "flwr-home"
        entry = self._spawn(
            name or f"supernode-{index}",
            [
                *launcher,
                *security,
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--port",
                str(port),
                *(["--isolation", "process"] if warm else []),
                "--node-config",
                node.node_config(self.node_config),
            ],
            home,
        )
        if wait:
            _wait_port(port, entry.proc, entry.log)
        if warm:  # the node's ClientApps: one warm process, a forked child per message
            self.executor_procs[index] = self._spawn(
                f"{name or f'supernode-{index}'}-exec",
                [
                    sys.executable,
                    "-m",
                    "client.warm_exec",
                    "--runtime-api-address",
                    f"127.0.0.1:{port}",
                    *(
                        [
                            "--preload-model",
                            str(node.base_model_path),
                            "--cache-dir",
                            str(node.cache_dir),
                        ]
                        if node.base_model_path
                        else []
                    ),
                ],
                home,
            )
        return entry

    @staticmethod
    def wait_exit(entry: _Proc, *, timeout: float = 60.0) -> int:
        """Wait for a SuperNode to end (the SuperLink refused it); its exit code."""
        try:
            return entry.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise FederationError(
                f"{entry.name} still runs after {timeout:g} s: "
                f"{entry.log.read_text(errors='replace')[-2000:]}"
            ) from exc

    def kill_node(self, index: int) -> None:
        """SIGKILL one SuperNode and its ClientApp processes (a machine that vanished)."""
        procs = [self.node_procs[index].proc]
        if index in self.executor_procs:
            procs.append(self.executor_procs.pop(index).proc)
        for proc in procs:
            family = descendants(proc.pid)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            for pid in family:
                _kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        # This process's kept-alive Control API connection first: uvicorn's graceful shutdown
        # waits for open connections, so the SuperLink would otherwise sit out our 10 s wait
        # (measured: stop 11.7 s -> 0.3 s)
        if self.port:
            control_clients_close(self.connection.address)
        # Flower starts its SuperExec and app processes detached (own sessions): find every
        # descendant of ours first, then end them all, by pid.
        family = [pid for entry in self.procs for pid in descendants(entry.proc.pid)]
        for entry in reversed(self.procs):
            if entry.proc.poll() is None:
                try:
                    os.killpg(entry.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for pid in family:
            _kill(pid, signal.SIGTERM)
        # Another process's connection (a Celery worker's) still holds a SuperLink in its
        # graceful wait: a second signal, as a second Ctrl+C, ends the wait
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(e.proc.poll() is None for e in self.procs):
            time.sleep(0.05)
        for entry in reversed(self.procs):
            if entry.proc.poll() is None:
                try:
                    os.killpg(entry.proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        for entry in reversed(self.procs):
            try:
                entry.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(entry.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                entry.proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in family):
            time.sleep(0.1)
        for pid in family:
            _kill(pid, signal.SIGKILL)
        atexit.unregister(self.stop)

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- runs (through federated.engine.superlink, the coordinator's CLI wrapper) --------------

    @property
    def connection(self) -> Connection:
        """The ``flwr`` CLI's connection to this federation's SuperLink."""
        return Connection(
            address=f"127.0.0.1:{self.port}",
            flwr_home=self.flwr_home,
            insecure=not self.tls,
            root_certificates=self.certs.ca_cert if self.tls and self.certs else None,
            name=CONNECTION,
            timeout=120.0,
        )

    def submit(self, run_config: Mapping[str, object]) -> int:
        app = self.workdir / "app"
        if not app.exists():
            shutil.copytree(APP_DIR, app, ignore=shutil.ignore_patterns("*.fab", "__pycache__"))
        try:
            return int(run_start(app, self.connection, run_config))
        except SuperLinkError as exc:
            raise FederationError(f"flwr run failed: {exc}") from exc

    def run_info(self, run_id: int) -> dict[str, object]:
        return dict(run_status(str(run_id), self.connection).raw)

    def wait(self, run_id: int, *, timeout: float = 600.0, poll: float = 0.25) -> RunOutcome:
        started = time.monotonic()
        info: dict[str, object] = {}
        while time.monotonic() - started < timeout:
            info = self.run_info(run_id)
            status = str(info.get("status", ""))
            if status.startswith("finished"):
                details = str(info.get("status-details", info.get("sub-status", "")))
                return RunOutcome(run_id, status, details, time.monotonic() - started, info)
            time.sleep(poll)
        run_stop(str(run_id), self.connection)
        raise FederationError(f"run {run_id} did not finish in {timeout:g} s (last: {info})")

    def run(self, run_config: Mapping[str, object], *, timeout: float = 600.0) -> RunOutcome:
        return self.wait(self.submit(run_config), timeout=timeout)

    def logs(self) -> dict[str, str]:
        return {
            entry.name: entry.log.read_text(encoding="utf-8", errors="replace")
            for entry in self.procs
        }


def temporary_workdir(prefix: str = "atelier-fed-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
