"""Small helpers of ``scripts/demo.sh`` (``make demo``): processes, ports, the owners' machines.

    demo_helpers.py record PIDFILE PID NAME     remember a process the demo started
    demo_helpers.py stop PIDFILE                end them all, with every descendant
    demo_helpers.py ports-free PORT...          exit 1 (saying who holds it) if one is taken
    demo_helpers.py wait-port PORT PID LOG [--url URL] [--timeout S]
    demo_helpers.py dataset DIR --seed N        a private dataset of generated images
    demo_helpers.py added NODE_DIR DATA EPSILON DELTA  exit 0 if added with that budget
    demo_helpers.py registered NODE_DIR SITE    exit 0 if the node is registered there
    demo_helpers.py published NODE_DIR DATA SITE  exit 0 if the node lists DATA there

Flower's SuperLink and SuperNodes start their app processes detached (sessions of their own),
so ``stop`` first lists every descendant of each recorded process, then sends SIGTERM to the
process groups and to each descendant, waits, and SIGKILLs what is left: the same as
``federated.engine.localfed``. A recorded pid is only signalled while its start time is the
recorded one (a pid the system gave to another process since is left alone).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from federated.engine.localfed import descendants  # noqa: E402  (after the path fix)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str:
    fields = _stat(pid)
    return fields[19] if fields else ""  # field 22 of stat: start time in clock ticks


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _signal(pid: int, sig: int, *, group: bool = False) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def cmd_record(args: argparse.Namespace) -> int:
    start = _start_time(args.pid)
    with open(args.pidfile, "a", encoding="utf-8") as out:
        out.write(f"{args.pid} {start} {args.name}\n")
    return 0


def _recorded(pidfile: Path) -> list[tuple[int, str]]:
    """The recorded processes still alive with their recorded start time: (pid, name)."""
    try:
        lines = pidfile.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        pid = int(parts[0])
        if _alive(pid) and _start_time(pid) == parts[1]:
            found.append((pid, parts[2]))
    return found


def cmd_stop(args: argparse.Namespace) -> int:
    pidfile = Path(args.pidfile)
    procs = _recorded(pidfile)
    family = [child for pid, _ in procs for child in descendants(pid)]
    for pid, _ in procs:
        try:
            leader = os.getpgid(pid) == pid
        except ProcessLookupError:
            continue
        _signal(pid, signal.SIGTERM, group=leader)
        _signal(pid, signal.SIGTERM)
    for pid in family:
        _signal(pid, signal.SIGTERM)
    everyone = [pid for pid, _ in procs] + family
    deadline = time.monotonic() + args.grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in everyone):
        time.sleep(0.1)
    left = [pid for pid in everyone if _alive(pid)]
    for pid in left:
        _signal(pid, signal.SIGKILL)
    if procs:
        names = ", ".join(name for _, name in procs)
        forced = f"; {len(left)} did not stop in {args.grace:g} s and were killed" if left else ""
        print(f"    stopped {names} ({len(family)} child processes){forced}")
    pidfile.unlink(missing_ok=True)
    return 0


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def cmd_ports_free(args: argparse.Namespace) -> int:
    taken = [port for port in args.ports if _listening(port)]
    for port in taken:
        holder = ""
        try:
            out = subprocess.run(
                ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            holder = f" by {out.split('users:', 1)[1]}" if "users:" in out else ""
        except (OSError, subprocess.SubprocessError):
            pass
        print(f"port {port} is already in use{holder}", file=sys.stderr)
    return 1 if taken else 0


def cmd_wait_port(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not _alive(args.pid):
            print(
                f"the process exited before listening on port {args.port}; the end of {args.log}:",
                file=sys.stderr,
            )
            try:
                print(Path(args.log).read_text(errors="replace")[-3000:], file=sys.stderr)
            except OSError:
                pass
            return 1
        if _listening(args.port):
            if not args.url:
                return 0
            import requests

            try:
                if requests.get(args.url, timeout=5).status_code < 500:
                    return 0
            except requests.RequestException:
                pass
        time.sleep(0.2)
    print(
        f"nothing answers on port {args.port} after {args.timeout:g} s; see {args.log}",
        file=sys.stderr,
    )
    return 1


def cmd_dataset(args: argparse.Namespace) -> int:
    from federated.engine.synthetic import generate_concept_dataset

    folder = Path(args.dir)
    first = folder / "00000.txt"
    if (
        folder.is_dir()
        and len(list(folder.glob("*.png"))) == args.images
        and first.is_file()
        and args.trigger in first.read_text(encoding="utf-8").split()
    ):
        print(f"    {folder}: {args.images} images (kept from an earlier run)")
        return 0
    # The concept the shapes base model does not know: orange figures, captioned with the
    # trigger word where a colour word would stand ("a atlr circle on a white background").
    generate_concept_dataset(
        folder,
        n_images=args.images,
        seed=args.seed,
        resolution=args.resolution,
        trigger=args.trigger,
    )
    print(
        f"    {folder}: {args.images} generated {args.resolution}x{args.resolution} scenes of "
        f"orange shapes (seed {args.seed}), captioned with the trigger {args.trigger!r}"
    )
    return 0


def _read(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _owner_token() -> str:
    """The API token ``atelier login`` stored for this owner (``$ATELIER_CONFIG``)."""
    return str(_read(Path(os.environ.get("ATELIER_CONFIG", ""))).get("token", ""))


def _entry(node_dir: str, data: str) -> dict[str, object]:
    """The node's record of the dataset at ``data`` (``node.json``, written by the CLI)."""
    datasets = _read(Path(node_dir) / "node.json").get("datasets", {})
    entry = datasets.get(str(Path(data).resolve())) if isinstance(datasets, dict) else None
    return entry if isinstance(entry, dict) else {}


def cmd_added(args: argparse.Namespace) -> int:
    """``atelier node add-dataset`` was run for DATA with this privacy budget."""
    entry = _entry(args.node_dir, args.data)
    try:
        same = (float(entry["epsilon"]), float(entry["delta"])) == (args.epsilon, args.delta)
    except (KeyError, TypeError, ValueError):
        return 1
    return 0 if same else 1


def cmd_registered(args: argparse.Namespace) -> int:
    """The node's stored registration is for SITE, where the owner's nodes still include it."""
    import requests

    registration = _read(Path(args.node_dir) / "registration.json")
    if not registration.get("token") or registration.get("site") != args.site.rstrip("/"):
        return 1
    response = requests.get(
        f"{args.site}/api/v1/federated/nodes",
        timeout=30,
        headers={"Authorization": f"Bearer {_owner_token()}"},
    )
    if response.status_code != 200:
        return 1
    if not any(n.get("id") == registration.get("id") for n in response.json()):
        return 1
    print(f"    already registered: node {registration.get('name')!r} (id {registration['id']})")
    return 0


def cmd_admitted(args: argparse.Namespace) -> int:
    """Wait until the site has registered this node's key on the SuperLink (SuperNode
    authentication: a node whose key is not registered there is refused)."""
    import requests

    registration = _read(Path(args.node_dir) / "registration.json")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        response = requests.get(
            f"{args.site}/api/v1/federated/nodes",
            timeout=30,
            headers={"Authorization": f"Bearer {_owner_token()}"},
        )
        if response.status_code == 200:
            for node in response.json():
                if node.get("id") == registration.get("id") and node.get("superlink_node_id"):
                    print(
                        f"    the site registered the node's key on the SuperLink "
                        f"(SuperLink node {node['superlink_node_id']})"
                    )
                    return 0
        time.sleep(0.5)
    print(
        f"    the node's key is not registered on the SuperLink after {args.timeout:g} s "
        "(see var/log/celery.log)",
        file=sys.stderr,
    )
    return 1


def cmd_published(args: argparse.Namespace) -> int:
    """The owner's datasets on SITE include this one (its manifest), listed from this node."""
    import requests

    entry = _entry(args.node_dir, args.data)
    registration = _read(Path(args.node_dir) / "registration.json")
    response = requests.get(
        f"{args.site}/api/v1/federated/datasets/mine",
        timeout=30,
        headers={"Authorization": f"Bearer {_owner_token()}"},
    )
    if response.status_code != 200 or not entry.get("manifest-hash"):
        return 1
    for listed in response.json():
        if listed.get("manifest_hash") == entry["manifest-hash"] and (listed.get("node") or {}).get(
            "id"
        ) == registration.get("id"):
            print(
                f"    already listed: {listed.get('name')!r} (dataset version "
                f"{listed.get('dataset_version_id')})"
            )
            return 0
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="demo_helpers.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("record")
    p.add_argument("pidfile")
    p.add_argument("pid", type=int)
    p.add_argument("name")
    p.set_defaults(func=cmd_record)
    p = sub.add_parser("stop")
    p.add_argument("pidfile")
    p.add_argument("--grace", type=float, default=15.0)
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("ports-free")
    p.add_argument("ports", type=int, nargs="+")
    p.set_defaults(func=cmd_ports_free)
    p = sub.add_parser("wait-port")
    p.add_argument("port", type=int)
    p.add_argument("pid", type=int)
    p.add_argument("log")
    p.add_argument("--url", default="")
    p.add_argument("--timeout", type=float, default=90.0)
    p.set_defaults(func=cmd_wait_port)
    p = sub.add_parser("dataset")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--trigger", default="atlr")
    p.set_defaults(func=cmd_dataset)
    p = sub.add_parser("added")
    p.add_argument("node_dir")
    p.add_argument("data")
    p.add_argument("epsilon", type=float)
    p.add_argument("delta", type=float)
    p.set_defaults(func=cmd_added)
    p = sub.add_parser("registered")
    p.add_argument("node_dir")
    p.add_argument("site")
    p.set_defaults(func=cmd_registered)
    p = sub.add_parser("admitted")
    p.add_argument("node_dir")
    p.add_argument("site")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=cmd_admitted)
    p = sub.add_parser("published")
    p.add_argument("node_dir")
    p.add_argument("data")
    p.add_argument("site")
    p.set_defaults(func=cmd_published)
    args = parser.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
