"""The ServerApp's per-run credentials and sender map: a channel on the SuperLink side only.

The Flower run config reaches every SuperNode (and the SuperLink keeps it in clear in its state
database), so it carries nothing secret. What the ServerApp alone may know travels in a file
the coordinator writes into the job's ``out-dir`` before it starts the run: the folder the
ServerApp writes its results to, which the site's workers share with the SuperLink host and no
node ever sees::

    <out-dir>/.serverapp-credentials.json    (mode 0600; refused if group or others can read it)
    {
      "job-id": "job-7",
      "progress-token": "atp_...",     # Bearer token of the site's progress endpoint
      "job-token": "atj_...",          # the ServerApp's Bearer token for the base model
      "senders": {                     # SuperLink node id -> the site's node and its datasets
        "8231...": {"node": 12, "datasets": ["<manifest sha-256>", ...]}
      }
    }

``senders`` binds each reply to its sender as the SuperLink knows it (``src_node_id``, set by
the SuperLink from the node's connection and, with node authentication, its key): a reply
whose dataset is not one of its sender's is rejected. An empty map (no node ids known: node
authentication off, a local federation) leaves replies unbound; the ServerApp says so.

Pure Python (standard library only): the site writes the file with :func:`write_credentials`,
the ServerApp reads it with :func:`load_credentials`.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from federated.engine.errors import ConfigError

__all__ = [
    "CREDENTIALS_FILE",
    "ServerCredentials",
    "credentials_path",
    "load_credentials",
    "write_credentials",
]

logger = logging.getLogger(__name__)

CREDENTIALS_FILE = ".serverapp-credentials.json"


@dataclass(frozen=True)
class ServerCredentials:
    """What the ServerApp of one job knows that no node may read."""

    progress_token: str = ""
    job_token: str = ""
    senders: Mapping[str, frozenset[str]] = field(default_factory=dict)  # node id -> manifests
    site_nodes: Mapping[str, int] = field(default_factory=dict)  # node id -> the site's node

    @property
    def binds_senders(self) -> bool:
        return bool(self.senders)


def credentials_path(out_dir: Path | str) -> Path:
    """The credentials file of the run whose results go to ``out_dir``."""
    return Path(out_dir) / CREDENTIALS_FILE


def write_credentials(
    out_dir: Path | str,
    job_id: str,
    *,
    progress_token: str,
    job_token: str,
    senders: Mapping[str, tuple[int, Sequence[str]]],
) -> Path:
    """Write the job's file, 0600 from its creation, atomically (a fresh file per call).

    ``senders``: SuperLink node id -> (the site's node id, the manifest hashes it serves in
    the job).
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = credentials_path(folder)
    data = {
        "job-id": job_id,
        "progress-token": progress_token,
        "job-token": job_token,
        "senders": {
            str(node_id): {"node": int(site_node), "datasets": sorted(set(manifests))}
            for node_id, (site_node, manifests) in senders.items()
        },
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, json.dumps(data).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def load_credentials(out_dir: Path | str, job_id: str) -> ServerCredentials:
    """The job's credentials from ``<out-dir>/.serverapp-credentials.json``.

    No file: empty credentials (no progress reports, no sender binding; logged). A file that
    others can read, that does not parse, or that is another job's is a :class:`ConfigError`
    (the run fails rather than use a leaked or foreign secret).
    """
    path = credentials_path(out_dir)
    try:
        info = path.stat()
    except FileNotFoundError:
        logger.warning("no credentials file %s: no progress reports, replies not bound", path)
        return ServerCredentials()
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ConfigError(
            f"the credentials file {path} is readable by others "
            f"(mode {stat.S_IMODE(info.st_mode):o}); it must be 0600"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or str(data.get("job-id", "")) != job_id:
            raise ValueError(f"it is not the file of job {job_id!r}")
        raw = data.get("senders") or {}
        if not isinstance(raw, dict):
            raise ValueError("'senders' is not an object")
        senders = {str(k): frozenset(str(h) for h in v["datasets"]) for k, v in raw.items()}
        site_nodes = {str(k): int(v["node"]) for k, v in raw.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the credentials file {path}: {exc}") from exc
    return ServerCredentials(
        progress_token=str(data.get("progress-token", "")),
        job_token=str(data.get("job-token", "")),
        senders=senders,
        site_nodes=site_nodes,
    )
