"""``atelier node``: run a data owner's node (SuperNode) for federated LoRA jobs.

    atelier node init [--node-dir DIR] [--force]
    atelier node add-dataset PATH --epsilon E --delta D [--trigger WORD] [--resolution R]
    atelier node start --superlink HOST:PORT --base-model PATH [--dataset PATH]
                       [--insecure | --root-certificates PEM] [--trusted-entities YAML] [--dry-run]
    atelier node status

The node folder (``--node-dir``, ``$ATELIER_NODE_DIR``, default ``~/.atelier/node``) holds
the SuperNode key pair (ECDSA P-256, as Flower's SuperNode authentication expects: an
OpenSSH private key that ``flower-supernode --auth-supernode-private-key`` loads, mode
0600, and an OpenSSH public key to register with the SuperLink), the privacy ledger
(``ledger.db``), the node's datasets (``node.json``) and its cache. Private images never
leave the machine: ``add-dataset`` prints exactly what would be published (the manifest:
counts and hashes) and the dataset report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from client.http import AtelierError

__all__ = ["add_node_parser", "cmd_node"]

KEY_NAME = "node.key"
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


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
    datasets[key] = {
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


def _supernode_command(args: argparse.Namespace, node_dir: Path) -> list[str]:
    from federated.engine.localfed import toml_value

    key_path = node_dir / KEY_NAME
    if not key_path.is_file():
        raise AtelierError(
            f"this node has no key pair in {node_dir}; run `atelier node init` first"
        )
    datasets = dict(_load(node_dir).get("datasets", {}))  # type: ignore[call-overload]
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
    elif len(datasets) == 1:
        chosen = next(iter(datasets))
    else:
        raise NodeUsageError("this node has several datasets; choose one with --dataset")
    if not Path(args.base_model).exists():
        raise AtelierError(f"base model {args.base_model} does not exist")
    host, _, port = args.superlink.rpartition(":")
    if not host or not port.isdigit():
        raise NodeUsageError(f"--superlink must be HOST:PORT, got {args.superlink!r}")
    config = {
        "dataset-path": chosen,
        "cache-dir": str(node_dir / "cache"),
        "ledger-path": str(node_dir / "ledger.db"),
        "base-model-path": str(Path(args.base_model).resolve()),
    }
    exe = shutil.which("flower-supernode") or str(Path(sys.executable).parent / "flower-supernode")
    command = [
        exe,
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
    return command


def cmd_start(args: argparse.Namespace) -> int:
    node_dir = _node_dir(args)
    command = _supernode_command(args, node_dir)
    if args.dry_run:
        print(" ".join(command))
        return EXIT_OK
    env = {
        **os.environ,
        "FLWR_HOME": str(node_dir / "flwr-home"),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
    }
    os.execvpe(command[0], command, env)  # replaces this process with the SuperNode


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
        "start": cmd_start,
        "status": cmd_status,
    }.get(args.node_command or "")
    if handler is None:
        print(
            "atelier node: error: choose a command: init, add-dataset, start, status",
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
    start = node_sub.add_parser("start", parents=[common], help="run the SuperNode")
    start.add_argument("--superlink", required=True, metavar="HOST:PORT")
    start.add_argument("--base-model", required=True, help="the base model in the node's cache")
    start.add_argument("--dataset", help="which of the node's datasets (default: the only one)")
    start.add_argument(
        "--port", type=int, default=9094, help="the ClientApp runtime port (default: 9094)"
    )
    start.add_argument("--insecure", action="store_true", help="no TLS (a private network only)")
    start.add_argument("--root-certificates", help="the SuperLink's CA certificate (PEM)")
    start.add_argument(
        "--trusted-entities", help="YAML of public keys whose signed apps may run here"
    )
    start.add_argument(
        "--dry-run", action="store_true", help="print the flower-supernode command, do not run it"
    )
    node_sub.add_parser("status", parents=[common], help="datasets, budgets, what each job spent")
    node.set_defaults(func=cmd_node)
