"""One round on a node, with no Flower in sight: run config + node config + arrays -> reply.

Each Flower message runs in a fresh ClientApp process, so what must outlive a round lives on
disk under the node's cache folder: the job's accountant state
(``cache-dir/jobs/<job>/accountant.json``; the ledger stays the source of truth), the latent
cache and the model fingerprint (both kept by the trainer), and the job's base model
(``cache-dir/models/<sha256>.safetensors``, fetched once by :mod:`federated.engine.fetch`).

Which dataset: the one the node serves whose manifest hash the job lists
(``dataset-manifests``); none listed is refused (``dataset_not_in_job``); a job that lists
none trains on the node's only dataset. :func:`prepare_node` (the ServerApp's readiness query)
does everything a round needs before its first step: pick the dataset, fetch the model, build
the latent cache.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from federated.engine.errors import ConfigError, DatasetError, DatasetNotInJobError
from federated.engine.flower.settings import (
    NodePaths,
    RunConfig,
    job_manifests,
    node_paths,
    train_config_from_run_config,
)

if TYPE_CHECKING:
    from federated.engine.dataset import DatasetScan

__all__ = [
    "NodeDataset",
    "NodeReply",
    "PrepareReply",
    "accountant_path",
    "adapter_layout",
    "adapter_names",
    "node_token",
    "prepare_node",
    "resolve_base_model",
    "run_node_round",
    "select_dataset",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeReply:
    arrays: OrderedDict[str, np.ndarray]
    metrics: dict[str, float | int]
    manifest_hash: str


def _safe(job_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", job_id)[:120] or "job"


def accountant_path(cache_dir: str | Path, job_id: str) -> Path:
    return Path(cache_dir) / "jobs" / _safe(job_id) / "accountant.json"


def _set_threads(node_config: RunConfig) -> None:
    import torch

    threads = int(
        str(node_config.get("torch-threads", "") or os.environ.get("ATELIER_TORCH_THREADS", "1"))
    )
    torch.set_num_threads(max(1, threads))


@dataclass(frozen=True)
class NodeDataset:
    """The dataset this node trains on for a job."""

    path: Path
    key: str  # its name in the privacy ledger ("" = the folder's absolute path)
    manifest_hash: str  # the listed hash it was chosen by ("" when the job lists none)
    scan: DatasetScan | None = field(default=None, compare=False, repr=False)  # if read


@dataclass(frozen=True)
class PrepareReply:
    manifest_hash: str
    model_source: str  # "local", "cached" or "downloaded"
    seconds: float


def _served(paths: NodePaths) -> list[NodeDataset]:
    """Every dataset the node serves, with the manifest hash recorded for it (if any)."""
    served: list[NodeDataset] = []
    if paths.node_file:
        try:
            data = json.loads(Path(paths.node_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the node file {paths.node_file}: {exc}") from exc
        datasets = data.get("datasets", {}) if isinstance(data, dict) else {}
        for key, entry in (datasets if isinstance(datasets, dict) else {}).items():
            if isinstance(entry, dict) and entry.get("path"):
                served.append(
                    NodeDataset(Path(entry["path"]), str(key), str(entry.get("manifest-hash", "")))
                )
    if paths.dataset:
        served.append(NodeDataset(Path(paths.dataset), paths.dataset_key, ""))
    if not served:
        raise DatasetError("this node serves no dataset (add one with `atelier node add-dataset`)")
    return served


def select_dataset(paths: NodePaths, run_config: RunConfig) -> NodeDataset:
    """The node's dataset whose manifest hash the job lists (first in the job's order).

    Hashes recorded in the node file are used as they are; a dataset without one is read to
    compute it. The chosen dataset is read again before training and must still match.
    """
    listed = job_manifests(run_config)
    served = _served(paths)
    if not listed:
        if len(served) == 1:  # no manifest to check against
            return NodeDataset(served[0].path, served[0].key, "")
        raise DatasetNotInJobError(
            f"the job lists no dataset manifest and this node serves {len(served)} datasets; "
            "refusing to guess which one it may train on"
        )
    known = [d for d in served if d.manifest_hash]
    if len(known) < len(served):
        from federated.engine.dataset import read_dataset

        for dataset in served:
            if not dataset.manifest_hash:
                scan = read_dataset(dataset.path)
                known.append(
                    NodeDataset(dataset.path, dataset.key, scan.manifest().manifest_hash, scan)
                )
    by_hash = {d.manifest_hash: d for d in reversed(known)}
    for manifest in listed:
        if manifest in by_hash:
            return by_hash[manifest]
    raise DatasetNotInJobError(
        f"none of this node's {len(served)} datasets is in the job (the job lists "
        f"{', '.join(h[:12] for h in listed)}; this node serves "
        f"{', '.join(d.manifest_hash[:12] for d in known)})",
        details={"job": list(listed), "node": [d.manifest_hash for d in known]},
    )


def _scan_for_job(chosen: NodeDataset) -> DatasetScan:
    """Read the chosen dataset; refuse if it no longer has the manifest the job lists."""
    from federated.engine.dataset import read_dataset

    scan = chosen.scan or read_dataset(chosen.path)
    actual = scan.manifest().manifest_hash
    if chosen.manifest_hash and actual != chosen.manifest_hash:
        raise DatasetError(
            f"the dataset {chosen.path} changed since it was listed: its manifest is now "
            f"{actual[:16]}..., the job trains on {chosen.manifest_hash[:16]}...; refusing",
            code="dataset_changed",
        )
    return scan


def node_token(paths: NodePaths) -> str:
    """The node's own site token (``registration-file``), or "" when it has none."""
    if not paths.registration_file:
        return ""
    try:
        data = json.loads(Path(paths.registration_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the node's registration {paths.registration_file}: {exc}"
        ) from exc
    return str(data.get("token", "")) if isinstance(data, dict) else ""


def resolve_base_model(paths: NodePaths, run_config: RunConfig) -> tuple[Path, str]:
    """(the base model file or folder, where it came from: local, cached or downloaded).

    The node's ``base-model-path`` when the job names no URL or the copy has the job's
    fingerprint; otherwise the job's ``base-model-url``, fetched once into the cache.
    """
    sha = str(run_config.get("base-model-sha", "") or "").strip().lower()
    url = str(run_config.get("base-model-url", "") or "").strip()
    cache_dir = Path(paths.cache_dir)
    if paths.base_model:
        local = Path(paths.base_model)
        if not url or not sha:
            return local, "local"
        from federated.engine.cache import model_fingerprint

        if local.exists() and model_fingerprint(local, memo_dir=cache_dir) == sha:
            return local, "local"
        logger.info("the node's base model %s is not the job's (%s...); fetching", local, sha[:16])
    if not url:
        raise ConfigError(
            "no base model for this job: the run config has no base-model-url and the node "
            "config no base-model-path"
        )
    from federated.engine.fetch import fetch_model

    fetched = fetch_model(url, sha256=sha, token=node_token(paths), cache_dir=cache_dir)
    return fetched.path, fetched.source


def _check_base_model(base_model: Path, cache_dir: str, expected_sha: str) -> None:
    if not expected_sha:
        return
    from federated.engine.cache import model_fingerprint

    actual = model_fingerprint(base_model, memo_dir=Path(cache_dir))
    if actual != expected_sha:
        raise ConfigError(
            f"the node's base model {base_model} has fingerprint {actual[:16]}..., "
            f"the job asks for {expected_sha[:16]}...; refusing to train on another model"
        )


def adapter_names(paths: NodePaths, run_config: RunConfig) -> list[str]:
    """Transported array names in module order (the SecAgg+ mode sends bare lists)."""
    return list(adapter_layout(paths, run_config))


def adapter_layout(paths: NodePaths, run_config: RunConfig) -> dict[str, tuple[int, ...]]:
    """Transported array names and shapes, in module order (to unpack packed transport).

    Remembered per (model fingerprint, adapter spec) in ``cache-dir/layouts/``: the first
    message of a job (or its readiness step) copies the UNet once to attach the adapter;
    later rounds read a small JSON file instead (a UNet copy is gigabytes at SD 1.5 size).
    """
    import hashlib

    from federated.engine.cache import model_fingerprint

    config = train_config_from_run_config(run_config)
    base_model, _ = resolve_base_model(paths, run_config)
    cache_dir = Path(paths.cache_dir)
    key = json.dumps(
        [model_fingerprint(base_model, memo_dir=cache_dir), config.adapter.to_dict()],
        sort_keys=True,
    )
    memo = cache_dir / "layouts" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
    try:
        saved = json.loads(memo.read_text(encoding="utf-8"))
        return {str(name): tuple(int(n) for n in shape) for name, shape in saved}
    except (OSError, ValueError, TypeError):
        pass  # not remembered yet (or unreadable): compute it
    from federated.engine.adapter import initial_adapter_arrays
    from federated.engine.trainer import _device_and_dtype, load_base

    device, dtype = _device_and_dtype(config)
    base = load_base(base_model, device=device, dtype=dtype, cache_dir=cache_dir)
    layout = {
        name: tuple(value.shape)
        for name, value in initial_adapter_arrays(base.pipe, config.adapter).items()
    }
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps([[name, list(shape)] for name, shape in layout.items()]), "utf-8")
    os.replace(tmp, memo)
    return layout


def prepare_node(*, run_config: RunConfig, node_config: RunConfig) -> PrepareReply:
    """Get ready for the job's rounds: pick the dataset, fetch the model, build the cache.

    Raises what a round would (``dataset_not_in_job``, ``model_sha_mismatch``, a dataset with
    no privacy budget...) before the first round, so the server learns it early.
    """
    started = time.perf_counter()
    paths = node_paths(node_config)
    chosen = select_dataset(paths, run_config)  # before importing torch: a refusal is quick
    scan = _scan_for_job(chosen)
    base_model, source = resolve_base_model(paths, run_config)
    _set_threads(node_config)
    _check_base_model(base_model, paths.cache_dir, str(run_config.get("base-model-sha", "")))
    from federated.engine.errors import BudgetNotSetError
    from federated.engine.ledger import PrivacyLedger

    key = chosen.key or str(scan.root)
    if PrivacyLedger(Path(paths.ledger)).budget(key) is None:
        raise BudgetNotSetError(
            f"no privacy budget is set for dataset {key!r}; the owner must set one first"
        )
    from federated.engine.cache import build_latent_cache
    from federated.engine.trainer import _device_and_dtype, load_base

    config = train_config_from_run_config(run_config)
    device, dtype = _device_and_dtype(config)
    base = load_base(base_model, device=device, dtype=dtype, cache_dir=Path(paths.cache_dir))
    manifest_hash = scan.manifest().manifest_hash
    build_latent_cache(
        base.pipe,
        scan,
        cache_dir=Path(paths.cache_dir),
        resolution=config.resolution,
        model_hash=base.fingerprint,
        family=base.family,
        manifest_hash=manifest_hash,
    )
    adapter_layout(paths, run_config)  # remembered now, so round 1 unpacks without a UNet copy
    return PrepareReply(manifest_hash, source, time.perf_counter() - started)


def run_node_round(
    *,
    run_config: RunConfig,
    node_config: RunConfig,
    adapter_in: Mapping[str, np.ndarray] | None,
    server_round: int,
    run_id: int,
) -> NodeReply:
    """Train one round; raises an :class:`EngineError` (e.g. ``BudgetExceededError``) to refuse."""
    paths = node_paths(node_config)
    _set_threads(node_config)
    from federated.engine.ledger import PrivacyLedger
    from federated.engine.trainer import train_round

    config = train_config_from_run_config(run_config)
    job_id = str(run_config.get("job-id", "") or f"run-{run_id}")
    chosen = select_dataset(paths, run_config)
    scan = _scan_for_job(chosen)
    base_model, _ = resolve_base_model(paths, run_config)
    _check_base_model(base_model, paths.cache_dir, str(run_config.get("base-model-sha", "")))
    state_file = accountant_path(paths.cache_dir, job_id)
    state = state_file.read_bytes() if state_file.is_file() else None
    result = train_round(
        config,
        base_model=base_model,
        dataset=scan,
        cache_dir=Path(paths.cache_dir),
        adapter_in=adapter_in,
        accountant_state=state,
        ledger=PrivacyLedger(Path(paths.ledger)),
        job_id=job_id,
        dataset_key=chosen.key or None,
        round_index=server_round,
    )
    if result.accountant_state is not None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_suffix(".tmp")
        tmp.write_bytes(result.accountant_state)
        os.replace(tmp, state_file)
    metrics = {k: v for k, v in result.metrics().items() if not isinstance(v, str)}
    metrics["server-round"] = server_round
    return NodeReply(arrays=result.adapter, metrics=metrics, manifest_hash=result.manifest_hash)
