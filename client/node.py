"""``atelier node``: run a data owner's node (SuperNode) for federated LoRA jobs.

    atelier node init [--node-dir DIR] [--force]
    atelier node add-dataset PATH --epsilon E --delta D [--trigger WORD] [--resolution R]
    atelier node register --name NAME [--site URL] [--force]
    atelier node publish PATH --name NAME --price-per-example N --epsilon-per-job E
                         [--epsilon-lifetime L] [--delta D] [--approval auto|manual]
                         [--families sd1,...] [--uses ...] [--commercial] [--description TEXT]
    atelier node start --superlink HOST:PORT [--base-model PATH] [--dataset PATH]
                       [--insecure | --root-certificates PEM] [--trusted-entities YAML] [--dry-run]
    atelier node status

The node folder (``--node-dir``, ``$ATELIER_NODE_DIR``, default ``~/.atelier/node``) holds
the SuperNode key pair (ECDSA P-256, as Flower's SuperNode authentication expects: an
OpenSSH private key that ``flower-supernode --auth-supernode-private-key`` loads, mode
0600, and an OpenSSH public key to register with the SuperLink), the privacy ledger
(``ledger.db``), the node's datasets (``node.json``), its cache (base models fetched per
job, latent caches) and, once registered on a site, ``registration.json`` (mode 0600: the
site, the node's id and its node token). Private images never leave the machine:
``add-dataset`` prints exactly what would be published (the manifest: counts and hashes) and
the dataset report; ``publish`` sends that manifest and the owner's terms, nothing else.

``start`` serves every dataset of the node (the ClientApp trains, per job, on the one whose
manifest the job lists) or only ``--dataset``; without ``--base-model`` each job's base model
is fetched from the site once and kept in the cache. A registered node sends a heartbeat to
the site every 30 s while the SuperNode runs (failures are logged, never fatal).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from client import __version__
from client.config import Config, read_json, write_private_json
from client.http import AtelierClient, AtelierError, NotLoggedInError
from federated.engine.flower import fast_supernode

__all__ = ["Heartbeat", "Served", "add_node_parser", "cmd_node"]

KEY_NAME = "node.key"
REGISTRATION = "registration.json"
HEARTBEAT_SECONDS = 30.0
RESTART_RESET_SECONDS = 60.0  # an executor that ran this long restarts without a pause
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
# The site's base-model families (registry.models.BaseModelFamily), with common spellings.
FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux", "other")
FAMILY_ALIASES = {"sd15": "sd1", "sd1.5": "sd1", "sd21": "sd2", "sd2.1": "sd2"}


class NodeUsageError(AtelierError):
    """Bad arguments (exit 2)."""


def _node_dir(args: argparse.Namespace) -> Path:
    value = args.node_dir or os.environ.get("ATELIER_NODE_DIR") or Path.home() / ".atelier" / "node"
    return Path(value).expanduser()


def _load(node_dir: Path) -> dict[str, object]:
    path = node_dir / "node.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"datasets": {}}


def _save(node_dir: Path, data: dict[str, object]) -> None:
    node_dir.mkdir(parents=True, exist_ok=True)
    tmp = node_dir / ".node.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, node_dir / "node.json")


def _registration(node_dir: Path) -> dict[str, object]:
    """What ``atelier node register`` stored ({} when the node is not registered)."""
    return read_json(node_dir / REGISTRATION)


def _datasets(node_dir: Path) -> dict[str, dict[str, object]]:
    return dict(_load(node_dir).get("datasets", {}))  # type: ignore[call-overload]  # by _save


def cmd_init(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    node_dir = _node_dir(args)
    key_path = node_dir / KEY_NAME
    if key_path.exists() and not args.force:
        raise AtelierError(f"{key_path} exists; use --force to replace the node's key")
    node_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(node_dir, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(key_path, 0o600)
    pub_path = key_path.with_name(KEY_NAME + ".pub")
    pub_path.write_bytes(public + b"\n")
    _save(node_dir, _load(node_dir))
    print(public.decode("ascii"))
    print(
        f"private key: {key_path} (0600); register the public key with: "
        f"flwr supernode register {pub_path}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_add_dataset(args: argparse.Namespace) -> int:
    from federated.engine.errors import EngineError
    from federated.engine.ledger import PrivacyLedger

    if not args.epsilon > 0:
        raise NodeUsageError(f"--epsilon must be positive, got {args.epsilon}")
    if not 0 < args.delta < 1:
        raise NodeUsageError(f"--delta must be between 0 and 1, got {args.delta}")
    from federated.engine.dataset import read_dataset
    from federated.engine.report import build_report

    try:
        scan = read_dataset(Path(args.path))
    except EngineError as err:
        raise AtelierError(err.message) from err
    manifest = scan.manifest()
    report = build_report(scan, trigger_word=args.trigger, resolution=args.resolution)
    node_dir = _node_dir(args)
    key = str(scan.root)
    PrivacyLedger(node_dir / "ledger.db").set_budget(key, epsilon=args.epsilon, delta=args.delta)
    data = _load(node_dir)
    datasets = dict(data.get("datasets", {}))  # type: ignore[call-overload]  # written by _save
    previous = datasets.get(key, {})
    # The same images again (a new budget, say): keep what the node knows of its listing.
    kept = previous if previous.get("manifest-hash") == manifest.manifest_hash else {}
    datasets[key] = {
        **kept,
        "path": key,
        "manifest-hash": manifest.manifest_hash,
        "epsilon": args.epsilon,
        "delta": args.delta,
    }
    data["datasets"] = datasets
    _save(node_dir, data)
    print("What would be published (the manifest; no image, no caption):")
    print(manifest.to_json())
    print("Dataset report (stays on this machine):")
    print(report.to_text())
    print(f"Privacy budget recorded: epsilon {args.epsilon}, delta {args.delta} for {key}")
    return EXIT_OK if report.ok else EXIT_ERROR


@dataclass(frozen=True)
class Served:
    """What a SuperNode serves: its node-config entries and the datasets' manifest hashes."""

    config: dict[str, str]
    manifests: list[str]


def _served(args: argparse.Namespace, node_dir: Path) -> Served:
    """Every dataset of the node (``node-file``), or only ``--dataset`` (``dataset-path``)."""
    datasets = _datasets(node_dir)
    if not datasets:
        raise AtelierError(
            "this node has no dataset; run `atelier node add-dataset PATH ...` first"
        )
    if args.dataset:
        chosen = str(Path(args.dataset).resolve())
        if chosen not in datasets:
            raise AtelierError(
                f"{chosen} is not one of this node's datasets ({', '.join(datasets)})"
            )
        served = {chosen: datasets[chosen]}
        config = {"dataset-path": chosen}
    else:
        served, config = datasets, {"node-file": str(node_dir / "node.json")}
    hashes = [str(d.get("manifest-hash") or "") for d in served.values()]
    return Served(config=config, manifests=[h for h in hashes if h])


def _require_key(node_dir: Path) -> Path:
    key_path = node_dir / KEY_NAME
    if not key_path.is_file() or not key_path.with_name(KEY_NAME + ".pub").is_file():
        raise AtelierError(
            f"this node has no key pair in {node_dir}; run `atelier node init` first"
        )
    return key_path


def _supernode_command(args: argparse.Namespace, node_dir: Path) -> list[str]:
    from federated.engine.localfed import toml_value

    key_path = _require_key(node_dir)
    served = _served(args, node_dir)
    if args.base_model and not Path(args.base_model).exists():
        raise AtelierError(f"base model {args.base_model} does not exist")
    host, _, port = args.superlink.rpartition(":")
    if not host or not port.isdigit():
        raise NodeUsageError(f"--superlink must be HOST:PORT, got {args.superlink!r}")
    config = {
        **served.config,
        "cache-dir": str(node_dir / "cache"),
        "ledger-path": str(node_dir / "ledger.db"),
    }
    if args.base_model:
        config["base-model-path"] = str(Path(args.base_model).resolve())
    threshold = getattr(args, "release_threshold", None)
    if threshold is not None:  # the owner's release check (federated/engine/release_check.py)
        from federated.engine.errors import ConfigError
        from federated.engine.release_check import check_threshold

        try:
            check_threshold(threshold, name="--release-threshold")
        except ConfigError as err:
            raise NodeUsageError(err.message) from err
        config["release-threshold"] = f"{threshold:g}"
    if (node_dir / REGISTRATION).is_file():  # the node's own token, to fetch a job's model
        config["registration-file"] = str((node_dir / REGISTRATION).resolve())
    exe = shutil.which("flower-supernode") or str(Path(sys.executable).parent / "flower-supernode")
    command = [
        *fast_supernode.command(exe, getattr(args, "poll_interval", None) or None),
        "--superlink",
        args.superlink,
        "--port",
        str(args.port),
        "--node-config",
        " ".join(f"{k}={toml_value(v)}" for k, v in config.items()),
    ]
    if args.insecure:
        command.append("--insecure")
    else:
        if not args.root_certificates:
            raise NodeUsageError(
                "give --root-certificates PEM (TLS, needed for node authentication) or --insecure"
            )
        command += [
            "--root-certificates",
            args.root_certificates,
            "--auth-supernode-private-key",
            str(key_path),
        ]
    if args.trusted_entities:
        if not Path(args.trusted_entities).is_file():
            raise AtelierError(f"--trusted-entities file {args.trusted_entities} does not exist")
        command += ["--trusted-entities", args.trusted_entities]
    if (
        getattr(args, "executor", "flower") == "warm"
    ):  # the node runs the ClientApps itself (client.warm_exec)
        command += ["--isolation", "process"]
    return command


def _warm_exec_command(args: argparse.Namespace, node_dir: Path | None = None) -> list[str]:
    """The warm ClientApp executor on the SuperNode's runtime API (see client.warm_exec)."""
    preload = (
        ["--preload-model", str(Path(args.base_model).resolve())]
        + (["--cache-dir", str(node_dir / "cache")] if node_dir else [])
        if getattr(args, "base_model", None)
        else []
    )
    return [
        sys.executable,
        "-m",
        "client.warm_exec",
        "--runtime-api-address",
        f"127.0.0.1:{args.port}",
        "--parent-pid",
        str(os.getpid()),
        *preload,
    ]


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} atelier node: {message}", file=sys.stderr, flush=True)


class Heartbeat(threading.Thread):
    """Tell the site every ``interval`` seconds that this node is online and what it serves.

    Runs beside the SuperNode; a failed heartbeat is logged and retried at the next beat.
    """

    def __init__(self, client: AtelierClient, datasets: list[str], interval: float) -> None:
        super().__init__(name="atelier-heartbeat", daemon=True)
        self.client, self.datasets, self.interval = client, datasets, interval
        self.stopped = threading.Event()
        self.sent = 0
        self.failed = 0

    def beat(self) -> None:
        try:
            self.client.node_heartbeat(datasets=self.datasets, version=__version__)
        except Exception as err:  # logged, never fatal: the SuperNode keeps running
            self.failed += 1
            _log(f"heartbeat to {self.client.site} failed: {err}")
            return
        if self.sent == 0 or self.failed:
            _log(f"heartbeat to {self.client.site}: online")
        self.sent += 1
        self.failed = 0

    def run(self) -> None:
        while True:
            self.beat()
            if self.stopped.wait(self.interval):
                return

    def stop(self) -> None:
        self.stopped.set()


def cmd_start(args: argparse.Namespace) -> int:
    node_dir = _node_dir(args)
    command = _supernode_command(args, node_dir)
    if args.dry_run:
        print(" ".join(command))
        if getattr(args, "executor", "flower") == "warm":
            print(" ".join(_warm_exec_command(args, node_dir)))
        return EXIT_OK
    if args.heartbeat_seconds <= 0:
        raise NodeUsageError(f"--heartbeat-seconds must be positive, got {args.heartbeat_seconds}")
    env = {
        **os.environ,
        "FLWR_HOME": str(node_dir / "flwr-home"),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        # flower-supernode starts flower-superexec by name: let it find ours
        "PATH": os.pathsep.join(
            [str(Path(command[0]).parent), *filter(None, [os.environ.get("PATH")])]
        ),
    }
    registration = _registration(node_dir)
    heartbeat: Heartbeat | None = None
    if registration.get("token") and registration.get("site"):
        client = AtelierClient(str(registration["site"]), str(registration["token"]))
        heartbeat = Heartbeat(client, _served(args, node_dir).manifests, args.heartbeat_seconds)
    else:
        _log("not registered on a site (atelier node register): no heartbeat")
    # Its own process group: flower-supernode starts flower-superexec (and ClientApps) that
    # may outlive it by a moment; stopping the node stops and waits for the whole group.
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    # The warm executor (and the ClientApps it forks) in a process group of its own too
    warm = getattr(args, "executor", "flower") == "warm"
    executor = _Executor(_warm_exec_command(args, node_dir), env) if warm else None

    def forward(signum: int, frame: FrameType | None) -> None:
        if proc.poll() is None:
            _signal_group(proc.pid, signum)
        if executor is not None:
            executor.signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    if heartbeat:
        heartbeat.start()
    try:
        if executor is not None:
            executor.start()
        code = _wait_supervising(proc, executor)
    finally:
        if heartbeat:
            heartbeat.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        if executor is not None:
            executor.stop()
        _group_stop(proc.pid)
    return code if code >= 0 else EXIT_OK  # ended by the signal we forwarded


class _Executor:
    """The warm ClientApp executor: started, restarted when it dies, stopped with the node."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.command, self.env = command, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.stopping = False

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, env=self.env, start_new_session=True)
        self.started_at = time.monotonic()

    def check(self) -> None:
        """Restart a dead executor (after a pause that grows while it keeps dying)."""
        if self.stopping or self.proc is None or self.proc.poll() is None:
            return
        if time.monotonic() - self.started_at > RESTART_RESET_SECONDS:
            self.restarts = 0
        self.restarts += 1
        pause = min(2.0 ** (self.restarts - 1), 30.0)
        _log(
            f"the ClientApp executor ended (exit {self.proc.returncode}); restarting it in "
            f"{pause:g} s"
        )
        _group_stop(self.proc.pid, timeout=5)
        time.sleep(pause)
        self.start()

    def signal(self, signum: int) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            _signal_group(self.proc.pid, signum)

    def stop(self) -> None:
        self.stopping = True
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        _group_stop(self.proc.pid, timeout=5)


def _wait_supervising(proc: subprocess.Popen[bytes], executor: _Executor | None) -> int:
    """Wait for the SuperNode to end, restarting the executor whenever it dies meanwhile."""
    while True:
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if executor is not None:
                executor.check()


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to process group ``pgid``; whether any process of it was there."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def _group_stop(pgid: int, *, timeout: float = 15.0) -> None:
    """Ask what is left of the SuperNode's process group to stop, wait for it, then kill it."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _signal_group(pgid, 0):
            return
        time.sleep(0.1)
    _log(f"processes of the SuperNode's group {pgid} did not stop in {timeout:g} s: killed")
    _signal_group(pgid, signal.SIGKILL)


def _owner_client(site: str) -> AtelierClient:
    """The logged-in owner's client (``atelier login``) on ``site`` (default: the login's)."""
    config = Config.load()
    if not config.token:
        raise NotLoggedInError()
    return AtelierClient(site or config.site, config.token)


def cmd_register(args: argparse.Namespace) -> int:
    node_dir = _node_dir(args)
    name = args.name.strip()
    if not name:
        raise NodeUsageError("--name must not be empty")
    pub_path = _require_key(node_dir).with_name(KEY_NAME + ".pub")
    existing = _registration(node_dir)
    if existing.get("token") and not args.force:
        raise AtelierError(
            f"this node is already registered on {existing.get('site')} as node "
            f"{existing.get('id')}; use --force to register it again"
        )
    client = _owner_client(args.site or "")
    site = client.site
    node = client.node_register(name=name, public_key=pub_path.read_text("ascii").strip())
    path = node_dir / REGISTRATION
    write_private_json(path, {"site": site, "id": node.id, "name": node.name, "token": node.token})
    print(f"registered node {node.name or name!r} (id {node.id}) on {site}")
    print(f"the node token is stored in {path} (readable by you only)", file=sys.stderr)
    return EXIT_OK


def _families(text: str) -> list[str]:
    families = []
    for item in (t.strip().lower() for t in text.split(",")):
        if not item:
            continue
        family = FAMILY_ALIASES.get(item, item)
        if family not in FAMILIES:
            raise NodeUsageError(
                f"--families: unknown family {item!r} (choose from {', '.join(FAMILIES)})"
            )
        families.append(family)
    if not families:
        raise NodeUsageError("--families must name at least one base-model family")
    return list(dict.fromkeys(families))


def cmd_publish(args: argparse.Namespace) -> int:
    from federated.engine.dataset import read_dataset
    from federated.engine.errors import EngineError
    from federated.engine.ledger import PrivacyLedger

    node_dir = _node_dir(args)
    key = str(Path(args.path).resolve())
    datasets = _datasets(node_dir)
    if key not in datasets:
        raise AtelierError(
            f"{key} is not one of this node's datasets; run `atelier node add-dataset` first"
        )
    registration = _registration(node_dir)
    node_id = registration.get("id")
    if not isinstance(node_id, int | str) or not node_id:
        raise AtelierError("this node is not registered on a site; run `atelier node register`")
    if not args.name.strip():
        raise NodeUsageError("--name must not be empty")
    if args.price_per_example < 0:
        raise NodeUsageError(f"--price-per-example must be 0 or more, got {args.price_per_example}")
    budget = PrivacyLedger(node_dir / "ledger.db").budget(key)
    if budget is None:
        raise AtelierError(f"{key} has no privacy budget; run `atelier node add-dataset` first")
    lifetime = budget.epsilon if args.epsilon_lifetime is None else args.epsilon_lifetime
    if not args.epsilon_per_job > 0:
        raise NodeUsageError(f"--epsilon-per-job must be positive, got {args.epsilon_per_job}")
    # The node's ledger adds up delta over jobs as it does epsilon: by default, give each job
    # the share of the delta budget that lets as many jobs run as epsilon does.
    jobs = max(1, int(lifetime // args.epsilon_per_job))
    delta = budget.delta / jobs if args.delta is None else args.delta
    if not lifetime >= args.epsilon_per_job:
        raise NodeUsageError(
            f"--epsilon-per-job ({args.epsilon_per_job:g}) is more than the lifetime budget "
            f"({lifetime:g})"
        )
    if lifetime > budget.epsilon:
        raise NodeUsageError(
            f"--epsilon-lifetime {lifetime:g} is more than this node allows for the dataset "
            f"(epsilon {budget.epsilon:g}, set by add-dataset): the node would refuse the jobs"
        )
    if not 0 < delta <= budget.delta:
        raise NodeUsageError(
            f"--delta must be positive and at most the node's {budget.delta:g}, got {delta:g}"
        )
    families = _families(args.families) if args.families else None
    try:
        manifest = read_dataset(Path(key)).manifest()
    except EngineError as err:
        raise AtelierError(err.message) from err
    recorded = datasets[key].get("manifest-hash")
    if manifest.manifest_hash != recorded:
        raise AtelierError(
            f"{key} changed since `atelier node add-dataset` (its manifest is now "
            f"{manifest.manifest_hash[:12]}, not {str(recorded)[:12]}); run add-dataset again"
        )
    client = _owner_client(args.site or str(registration.get("site") or ""))
    site = client.site
    uses = [u.strip() for u in (args.uses or "").split(",") if u.strip()]
    terms: dict[str, object] = {
        "price_per_example_round": args.price_per_example,
        "commercial_use": bool(args.commercial),
        "epsilon_per_job": args.epsilon_per_job,
        "delta": delta,
        "epsilon_lifetime": lifetime,
        "approval": args.approval,
        "require_dp": True,  # the node's ledger trains only with DP-SGD
    }
    if families:  # otherwise the site's defaults
        terms["allowed_families"] = families
    if uses:
        terms["allowed_uses"] = uses
    published = client.dataset_publish(
        node_id=node_id,
        name=args.name.strip(),
        description=args.description,
        manifest={**manifest.to_dict(), "manifest_hash": manifest.manifest_hash},
        terms=terms,
    )
    version_id = published.get("dataset_version_id", published.get("id"))
    data = _load(node_dir)
    entry = dict(datasets[key])
    entry["published"] = {"site": site, "dataset_version_id": version_id}
    data["datasets"] = {**datasets, key: entry}
    _save(node_dir, data)
    print(
        f"published {args.name.strip()!r} (dataset version {version_id}, manifest "
        f"{manifest.manifest_hash[:12]}...) on {site}: {manifest.count} examples, price "
        f"{args.price_per_example} credits per example per round, epsilon {args.epsilon_per_job:g}"
        f" per job, {lifetime:g} in all, approval {args.approval}"
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from federated.engine.ledger import PrivacyLedger

    node_dir = _node_dir(args)
    data = _load(node_dir)
    key = node_dir / KEY_NAME
    print(f"node folder: {node_dir}")
    print(f"key pair: {'yes' if key.is_file() else 'no (run atelier node init)'}")
    datasets = dict(data.get("datasets", {}))  # type: ignore[call-overload]
    if not datasets:
        print("datasets: none")
        return EXIT_OK
    ledger = PrivacyLedger(node_dir / "ledger.db")
    jobs: set[str] = set()
    for name in datasets:
        budget, spent = ledger.budget(name), ledger.spent(name)
        print(f"dataset {name}")
        if budget:
            print(
                f"  budget: epsilon {budget.epsilon:g}, delta {budget.delta:g}; "
                f"spent: epsilon {spent.epsilon:.4g}, delta {spent.delta:.3g}"
            )
        for spend in ledger.spends(name):
            jobs.add(spend.job)
            print(
                f"  job {spend.job}: epsilon {spend.epsilon:.4g}, delta {spend.delta:g}, "
                f"{spend.steps} steps"
            )
    print(f"jobs served: {len(jobs)}")
    return EXIT_OK


def cmd_node(args: argparse.Namespace) -> int:
    handler = {
        "init": cmd_init,
        "add-dataset": cmd_add_dataset,
        "register": cmd_register,
        "publish": cmd_publish,
        "start": cmd_start,
        "status": cmd_status,
    }.get(args.node_command or "")
    if handler is None:
        print(
            "atelier node: error: choose a command: "
            "init, add-dataset, register, publish, start, status",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return handler(args)
    except NodeUsageError as err:
        print(f"atelier node {args.node_command}: error: {err.message}", file=sys.stderr)
        return EXIT_USAGE
    except AtelierError as err:
        print(f"atelier node {args.node_command}: error: {err.message}", file=sys.stderr)
        return EXIT_ERROR


# argparse._SubParsersAction is argparse's own (private) type for add_subparsers().
def add_node_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--node-dir", help="the node's folder (default: $ATELIER_NODE_DIR or ~/.atelier/node)"
    )
    node = sub.add_parser("node", help="run a data owner's node for federated training")
    node_sub = node.add_subparsers(dest="node_command", metavar="NODE_COMMAND")
    init = node_sub.add_parser("init", parents=[common], help="make the node's key pair")
    init.add_argument("--force", action="store_true", help="replace an existing key pair")
    add = node_sub.add_parser(
        "add-dataset", parents=[common], help="check a dataset folder and set its privacy budget"
    )
    add.add_argument("path")
    add.add_argument("--epsilon", type=float, required=True)
    add.add_argument("--delta", type=float, required=True)
    add.add_argument("--trigger", help="a word every caption should contain")
    add.add_argument("--resolution", type=int, default=512)
    site = argparse.ArgumentParser(add_help=False)
    site.add_argument("--site", help="the site's URL (default: the one you logged in to)")
    register = node_sub.add_parser(
        "register", parents=[common, site], help="register this node on the site (login needed)"
    )
    register.add_argument("--name", required=True, help="the node's name on the site")
    register.add_argument("--force", action="store_true", help="register again (a new token)")
    publish = node_sub.add_parser(
        "publish",
        parents=[common, site],
        help="list one of the node's datasets on the site: its manifest and your terms",
    )
    publish.add_argument("path", help="a dataset added with `atelier node add-dataset`")
    publish.add_argument("--name", required=True)
    publish.add_argument("--description", default="", help="Markdown")
    publish.add_argument(
        "--price-per-example",
        type=int,
        required=True,
        metavar="CREDITS",
        help="credits per example per round",
    )
    publish.add_argument("--epsilon-per-job", type=float, required=True)
    publish.add_argument(
        "--epsilon-lifetime", type=float, help="default: the node's budget for the dataset"
    )
    publish.add_argument(
        "--delta",
        type=float,
        help="per job (default: the node's delta for the dataset shared among as many jobs as "
        "the epsilon budget allows)",
    )
    publish.add_argument("--approval", choices=("auto", "manual"), default="manual")
    publish.add_argument(
        "--families",
        help=f"comma-separated, from {', '.join(FAMILIES)} (default: the site's, SD 1.x and 2.x)",
    )
    publish.add_argument(
        "--uses", help="comma-separated uses you allow (default: the site's, every use)"
    )
    publish.add_argument(
        "--commercial", action="store_true", help="trained models may be used commercially"
    )
    start = node_sub.add_parser("start", parents=[common], help="run the SuperNode")
    start.add_argument("--superlink", required=True, metavar="HOST:PORT")
    start.add_argument(
        "--base-model", help="a local base model (default: each job's, fetched from the site)"
    )
    start.add_argument("--dataset", help="serve only this dataset (default: all of the node's)")
    start.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=HEARTBEAT_SECONDS,
        help=f"seconds between heartbeats to the site (default: {HEARTBEAT_SECONDS:g})",
    )
    start.add_argument(
        "--port", type=int, default=9094, help="the ClientApp runtime port (default: 9094)"
    )
    start.add_argument("--insecure", action="store_true", help="no TLS (a private network only)")
    start.add_argument("--root-certificates", help="the SuperLink's CA certificate (PEM)")
    start.add_argument(
        "--trusted-entities", help="YAML of public keys whose signed apps may run here"
    )
    start.add_argument(
        "--executor",
        choices=("warm", "flower"),
        default="warm",
        help="warm (default): one process imports the trainer once and forks each ClientApp "
        "from it; flower: Flower's own, a fresh process per message",
    )
    start.add_argument(
        "--poll-interval",
        type=float,
        default=fast_supernode.DEFAULT_POLL_SECONDS,
        help="seconds between the idle SuperNode's polls of the SuperLink (default: "
        f"{fast_supernode.DEFAULT_POLL_SECONDS:g}; 0: Flower's own, 3 s)",
    )
    start.add_argument(
        "--release-threshold",
        type=float,
        help="veto the release of a job's LoRA when more than this share of the samples it draws "
        "from your captions copy one of your images (closer to it than the base model alone draws "
        "it and than to your other images): 0 vetoes on any copy, 1 never vetoes (default: 0.25)",
    )
    start.add_argument(
        "--dry-run", action="store_true", help="print the flower-supernode command, do not run it"
    )
    node_sub.add_parser("status", parents=[common], help="datasets, budgets, what each job spent")
    node.set_defaults(func=cmd_node)
