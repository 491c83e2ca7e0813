"""One round on a node, with no Flower in sight: run config + node config + arrays -> reply.

Each Flower message runs in a fresh ClientApp process, so what must outlive a round lives on
disk under the node's cache folder: the job's accountant state
(``cache-dir/jobs/<job>/accountant.json``; the ledger stays the source of truth), the latent
cache and the model fingerprint (both kept by the trainer).
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from federated.engine.errors import ConfigError
from federated.engine.flower.settings import (
    NodePaths,
    RunConfig,
    node_paths,
    train_config_from_run_config,
)

__all__ = ["NodeReply", "accountant_path", "adapter_layout", "adapter_names", "run_node_round"]

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


def _check_base_model(paths: NodePaths, expected_sha: str) -> None:
    if not expected_sha:
        return
    from federated.engine.cache import model_fingerprint

    actual = model_fingerprint(Path(paths.base_model), memo_dir=Path(paths.cache_dir))
    if actual != expected_sha:
        raise ConfigError(
            f"the node's base model {paths.base_model} has fingerprint {actual[:16]}..., "
            f"the job asks for {expected_sha[:16]}...; refusing to train on another model"
        )


def adapter_names(paths: NodePaths, run_config: RunConfig) -> list[str]:
    """Transported array names in module order (the SecAgg+ mode sends bare lists)."""
    return list(adapter_layout(paths, run_config))


def adapter_layout(paths: NodePaths, run_config: RunConfig) -> dict[str, tuple[int, ...]]:
    """Transported array names and shapes, in module order (to unpack packed transport)."""
    import copy

    import torch

    from federated.engine.adapter import attach_adapter, get_adapter_arrays
    from federated.engine.trainer import _device_and_dtype, load_base

    config = train_config_from_run_config(run_config)
    device, dtype = _device_and_dtype(config)
    base = load_base(
        Path(paths.base_model), device=device, dtype=dtype, cache_dir=Path(paths.cache_dir)
    )
    unet = copy.deepcopy(base.pipe.unet)
    attach_adapter(unet, config.adapter)
    del torch
    return {
        name: tuple(value.shape) for name, value in get_adapter_arrays(unet, config.adapter).items()
    }


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
    _check_base_model(paths, str(run_config.get("base-model-sha", "")))
    state_file = accountant_path(paths.cache_dir, job_id)
    state = state_file.read_bytes() if state_file.is_file() else None
    result = train_round(
        config,
        base_model=Path(paths.base_model),
        dataset=Path(paths.dataset),
        cache_dir=Path(paths.cache_dir),
        adapter_in=adapter_in,
        accountant_state=state,
        ledger=PrivacyLedger(Path(paths.ledger)),
        job_id=job_id,
        dataset_key=paths.dataset_key or None,
        round_index=server_round,
    )
    if result.accountant_state is not None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_suffix(".tmp")
        tmp.write_bytes(result.accountant_state)
        os.replace(tmp, state_file)
    metrics = {k: v for k, v in result.metrics().items() if not isinstance(v, str)}
    metrics["server-round"] = server_round
    return NodeReply(arrays=result.adapter, metrics=metrics, manifest_hash=result.manifest_hash)  # type: ignore[arg-type]  # strings removed above
