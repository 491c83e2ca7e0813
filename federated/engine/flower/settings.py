"""Run config (kebab-case keys, from ``flwr run -c`` and the app's pyproject) -> typed settings.

Pure Python: no Flower, no torch import at module load, so both apps and the coordinator can
use it. Every key has a default in ``federated/flower_app/pyproject.toml``; the defaults here
are the same, so a missing key never changes behaviour.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from federated.engine.errors import ConfigError
from federated.engine.samples import DEFAULT_PROMPTS, MAX_CELLS, SampleGridSpec

if TYPE_CHECKING:
    from federated.engine.trainer import TrainConfig

__all__ = [
    "AGGREGATIONS",
    "HEX64",
    "ServerSettings",
    "job_manifests",
    "node_paths",
    "sample_grid_spec",
    "train_config_from_run_config",
]

AGGREGATIONS = ("fedavg", "secagg")
RunConfig = Mapping[str, object]
HEX64 = re.compile(r"^[0-9a-f]{64}$")  # a SHA-256 hex digest


def _get(config: RunConfig, key: str, default: object) -> object:
    value = config.get(key, default)
    return default if value is None else value


def _int(config: RunConfig, key: str, default: int) -> int:
    try:
        return int(_get(config, key, default))  # type: ignore[call-overload]  # bool/int/float/str
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"run config {key!r} must be an integer") from exc


def _float(config: RunConfig, key: str, default: float) -> float:
    try:
        return float(_get(config, key, default))  # type: ignore[arg-type]  # int/float/str
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"run config {key!r} must be a number") from exc


def _str(config: RunConfig, key: str, default: str = "") -> str:
    return str(_get(config, key, default))


def _bool(config: RunConfig, key: str, default: bool) -> bool:
    value = _get(config, key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "on", "yes"):
        return True
    if text in ("false", "0", "off", "no"):
        return False
    raise ConfigError(f"run config {key!r} must be true or false")


def sample_grid_spec(config: RunConfig) -> SampleGridSpec | None:
    """The sample grid each round draws (``sample-grid = false``: None).

    ``sample-grid-prompts``: prompts separated by ``|`` (empty: :data:`DEFAULT_PROMPTS`);
    ``sample-grid-seeds``: comma-separated seeds; ``sample-grid-size`` 0: the base's native
    resolution.
    """
    if not _bool(config, "sample-grid", True):
        return None
    prompts = tuple(p.strip() for p in _str(config, "sample-grid-prompts").split("|") if p.strip())
    try:
        seeds = tuple(
            int(s) for s in _str(config, "sample-grid-seeds", "0").split(",") if s.strip()
        )
    except ValueError as exc:
        raise ConfigError("run config 'sample-grid-seeds' must list whole numbers") from exc
    spec = SampleGridSpec(
        prompts=prompts or DEFAULT_PROMPTS,
        seeds=seeds or (0,),
        steps=_int(config, "sample-grid-steps", 20),
        guidance=_float(config, "sample-grid-guidance", 4.0),
        size=_int(config, "sample-grid-size", 0),
    )
    if len(spec.prompts) * len(spec.seeds) > MAX_CELLS:
        raise ConfigError(f"the sample grid has at most {MAX_CELLS} cells (prompts x seeds)")
    if not 1 <= spec.steps <= 200 or spec.size < 0 or spec.size % 8 or spec.size > 1024:
        raise ConfigError(
            "sample-grid-steps must be 1 to 200 and sample-grid-size 0 or a multiple of 8 "
            "up to 1024"
        )
    return spec


def job_manifests(config: RunConfig) -> tuple[str, ...]:
    """The manifest hashes of the datasets the job may train on (``dataset-manifests``).

    Comma-separated SHA-256 hex digests; empty means "the node's one dataset" (no check).
    """
    raw = _str(config, "dataset-manifests")
    hashes = tuple(dict.fromkeys(h.strip().lower() for h in raw.split(",") if h.strip()))
    bad = [h for h in hashes if not HEX64.match(h)]
    if bad:
        raise ConfigError(
            f"run config 'dataset-manifests' must list SHA-256 hex digests, got {bad[0]!r}"
        )
    return hashes


def train_config_from_run_config(config: RunConfig) -> TrainConfig:
    """The job's :class:`TrainConfig` (identical on every node and on the server)."""
    from federated.engine.adapter import AdapterSpec
    from federated.engine.dp import DPConfig
    from federated.engine.trainer import TrainConfig

    dp: DPConfig | None = None
    if _str(config, "dp", "on") != "off":
        noise = _float(config, "dp-noise-multiplier", 0.0)
        target = _float(config, "dp-target-epsilon", 8.0)
        dp = DPConfig(
            noise_multiplier=noise if noise > 0 else None,
            target_epsilon=None if noise > 0 else target,
            target_delta=_float(config, "dp-delta", 1e-5),
            max_grad_norm=_float(config, "dp-max-grad-norm", 1.0),
            planned_rounds=_int(config, "dp-planned-rounds", 0)
            or _int(config, "num-server-rounds", 3),
            accountant=_str(config, "dp-accountant", "rdp"),  # type: ignore[arg-type]  # checked by DPConfig
            grad_sample_mode=_str(config, "dp-grad-sample-mode", "auto"),  # type: ignore[arg-type]
        )
    return TrainConfig(
        resolution=_int(config, "resolution", 512),
        adapter=AdapterSpec(
            rank=_int(config, "rank", 4),
            alpha=_float(config, "alpha", 4.0),
            mode=_str(config, "adapter-mode", "ffa"),  # type: ignore[arg-type]  # checked by AdapterSpec
            init_seed=_int(config, "seed", 0),
            text_encoder=_bool(config, "text-encoder-lora", False),
        ),
        learning_rate=_float(config, "lr", 1e-3),
        batch_size=_int(config, "batch-size", 4),
        local_steps=_int(config, "local-steps", 10),
        noise_draws=_int(config, "noise-draws", 1),
        buckets=_bool(config, "buckets", True),
        seed=_int(config, "seed", 0),
        dp=dp,
        device=_str(config, "device", "") or None,
    )


@dataclass(frozen=True)
class ServerSettings:
    num_rounds: int
    min_nodes: int
    round_timeout: float
    wait_for_nodes: float
    aggregation: str
    out_dir: str
    job_id: str
    base_model_path: str
    base_model_sha: str
    resume_from: str
    progress_url: str
    progress_token: str = ""  # from the credentials file (never the run config)
    transport: str = "packed"
    base_model_url: str = ""
    job_token: str = ""  # from the credentials file (never the run config)
    server_cache_dir: str = ""
    prepare_timeout: float = 600.0
    dataset_manifests: tuple[str, ...] = ()
    # SuperLink node id -> the manifests its node serves in the job (credentials file);
    # empty: replies are not bound to their senders (node ids unknown to the site).
    senders: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # What each round's sample grid draws (None: no grid, ``sample-grid = false``).
    sample_grid: SampleGridSpec | None = None

    def sender_owns(self, node: str, manifest: str) -> bool:
        """Whether the SuperLink's sender ``node`` serves ``manifest`` (always, unbound)."""
        return not self.senders or manifest in self.senders.get(node, frozenset())

    @property
    def cache_dir(self) -> str:
        """Where the ServerApp keeps downloaded models and fingerprints."""
        return self.server_cache_dir or f"{self.out_dir.rstrip('/')}/.cache"

    @classmethod
    def from_run_config(cls, config: RunConfig, *, run_id: int) -> ServerSettings:
        settings = cls(
            num_rounds=_int(config, "num-server-rounds", 3),
            min_nodes=_int(config, "min-nodes", 2),
            round_timeout=_float(config, "round-timeout", 600.0),
            wait_for_nodes=_float(config, "wait-for-nodes", 60.0),
            aggregation=_str(config, "aggregation", "fedavg"),
            out_dir=_str(config, "out-dir"),
            job_id=_str(config, "job-id") or f"run-{run_id}",
            base_model_path=_str(config, "base-model-path"),
            base_model_sha=_str(config, "base-model-sha"),
            resume_from=_str(config, "resume-from"),
            progress_url=_str(config, "progress-url"),
            transport=_str(config, "transport", "packed"),
            base_model_url=_str(config, "base-model-url"),
            server_cache_dir=_str(config, "server-cache-dir"),
            prepare_timeout=_float(config, "prepare-timeout", 600.0),
            dataset_manifests=job_manifests(config),
            sample_grid=sample_grid_spec(config),
        )
        leaked = sorted(k for k in ("progress-token", "job-token") if config.get(k))
        if leaked:
            raise ConfigError(
                f"the run config holds {', '.join(leaked)}: every node reads it; the "
                "ServerApp's credentials come from its credentials file"
            )
        if settings.num_rounds < 1 or settings.min_nodes < 1:
            raise ConfigError("num-server-rounds and min-nodes must be at least 1")
        if settings.aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"aggregation must be one of {AGGREGATIONS}, got {settings.aggregation!r}"
            )
        if settings.transport not in ("named", "packed"):
            raise ConfigError(f"transport must be 'named' or 'packed', got {settings.transport!r}")
        if settings.prepare_timeout < 0:
            raise ConfigError("prepare-timeout must be 0 (no readiness step) or more seconds")
        if not settings.out_dir:
            raise ConfigError(
                "run config 'out-dir' is required (where the ServerApp writes its results)"
            )
        if not settings.base_model_path and not settings.base_model_url:
            raise ConfigError(
                "run config needs 'base-model-url' (with 'base-model-sha') or "
                "'base-model-path' (the server's copy of the base model)"
            )
        if settings.base_model_url and not HEX64.match(settings.base_model_sha):
            raise ConfigError(
                "run config 'base-model-url' needs 'base-model-sha' (the SHA-256 of the file)"
            )
        return settings


@dataclass(frozen=True)
class NodePaths:
    """The node's own settings (``flower-supernode --node-config``).

    A node serves one dataset (``dataset-path``, ledger key ``dataset-key`` or the folder's
    absolute path) and/or the datasets listed in ``node-file`` (the ``node.json`` that
    ``atelier node add-dataset`` keeps: ``{"datasets": {key: {"path", "manifest-hash"}}}``).
    ``base-model-path`` is optional: without it (or when its fingerprint is not the job's) the
    node fetches the job's ``base-model-url`` into ``cache-dir``, authenticated with its own
    node token, read from ``registration-file`` (the ``registration.json`` that ``atelier node
    register`` writes, mode 0600): the site lets a node fetch only the base model of a job
    that trains on one of its datasets.
    """

    dataset: str
    cache_dir: str
    ledger: str
    base_model: str
    dataset_key: str
    node_file: str = ""
    registration_file: str = ""  # the node's registration.json: its own site token


def node_paths(node_config: RunConfig) -> NodePaths:
    """The node's own paths, from ``flower-supernode --node-config``."""
    values = {
        key: _str(node_config, key)
        for key in (
            "dataset-path",
            "node-file",
            "cache-dir",
            "ledger-path",
            "base-model-path",
            "registration-file",
        )
    }
    missing = [key for key in ("cache-dir", "ledger-path") if not values[key]]
    if not values["dataset-path"] and not values["node-file"]:
        missing.append("dataset-path (or node-file)")
    if missing:
        raise ConfigError(f"the SuperNode's --node-config lacks {', '.join(missing)}")
    return NodePaths(
        dataset=values["dataset-path"],
        cache_dir=values["cache-dir"],
        ledger=values["ledger-path"],
        base_model=values["base-model-path"],
        dataset_key=_str(node_config, "dataset-key"),
        node_file=values["node-file"],
        registration_file=values["registration-file"],
    )
