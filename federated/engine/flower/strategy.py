"""The Message-API rounds: FedAvg of adapter arrays weighted by examples, with per-node records.

A custom loop rather than ``flwr.serverapp.strategy.FedAvg`` because every reply must pass the
privacy check (:mod:`.reply_check`) before it is aggregated, and the job needs per-node
(source node id) examples, loss and epsilon, refusals and rejections, each round.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from federated.engine.flower import state as saved
from federated.engine.flower.aggregate import fedavg, weighted_mean
from federated.engine.flower.reply_check import (
    ARRAY_RECORD,
    INFO_RECORD,
    METRIC_RECORD,
    ReplyParts,
    check_reply,
    pack,
    unpack,
)
from federated.engine.flower.settings import ServerSettings, train_config_from_run_config

if TYPE_CHECKING:
    from federated.engine.trainer import LoadedBase, TrainConfig

__all__ = ["FederationFailed", "JobModel", "run_fedavg"]

logger = logging.getLogger(__name__)


class FederationFailed(RuntimeError):
    """The run cannot go on (too few nodes, too few accepted replies); the reason is the message."""


@dataclass
class JobModel:
    """The server's copy of the base model: initial adapter, expected shapes, LoRA export."""

    config: TrainConfig
    base: LoadedBase
    initial: OrderedDict[str, np.ndarray]

    @classmethod
    def load(cls, settings: ServerSettings, run_config: dict[str, object]) -> JobModel:
        import torch

        from federated.engine.adapter import attach_adapter, get_adapter_arrays
        from federated.engine.trainer import load_base

        config = train_config_from_run_config(run_config)
        cache = Path(settings.out_dir) / ".cache"
        base = load_base(
            Path(settings.base_model_path),
            device=torch.device("cpu"),
            dtype=torch.float32,
            cache_dir=cache,
        )
        unet = copy.deepcopy(base.pipe.unet)
        attach_adapter(unet, config.adapter)
        return cls(config=config, base=base, initial=get_adapter_arrays(unet, config.adapter))

    @property
    def expected(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(value.shape) for name, value in self.initial.items()}

    def export(
        self,
        out_dir: Path,
        arrays: OrderedDict[str, np.ndarray],
        *,
        steps: int,
        manifests: list[str],
        epsilon: float | None,
        noise: float | None,
        title: str,
    ) -> dict[str, str]:
        from federated.engine.export import LoraProvenance, save_lora_files

        files = save_lora_files(
            out_dir,
            unet=self.base.pipe.unet,
            spec=self.config.adapter,
            arrays=arrays,
            provenance=LoraProvenance(
                base_model_name=Path(self.base_path).name if hasattr(self, "base_path") else "base",
                base_model_hash=self.base.fingerprint,
                family=self.base.family,
                resolution=self.config.resolution,
                steps=steps,
                dataset_manifest_hashes=sorted(set(manifests)),
                dp=self.config.dp,
                noise_multiplier=noise,
                epsilon=epsilon,
                title=title,
                learning_rate=self.config.learning_rate,
            ),
        )
        return {"diffusers": str(files.diffusers_file), "kohya": str(files.kohya_file)}


@dataclass
class History:
    """Everything the metrics file says; also saved in ``state.json`` to resume."""

    job_id: str
    rounds: list[dict[str, object]] = field(default_factory=list)
    nodes: dict[str, dict[str, object]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"job-id": self.job_id, "rounds": self.rounds, "nodes": self.nodes}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> History:
        return cls(
            job_id=str(data["job-id"]),
            rounds=list(data.get("rounds", [])),
            nodes=dict(data.get("nodes", {})),
        )  # type: ignore[call-overload]  # written by to_dict


def _parts(content: RecordDict) -> ReplyParts:
    return ReplyParts(
        arrays={n: {k: a.numpy() for k, a in r.items()} for n, r in content.array_records.items()},
        metrics={n: dict(r) for n, r in content.metric_records.items()},
        configs={n: dict(r) for n, r in content.config_records.items()},
    )


def _wait_for_nodes(grid: Grid, settings: ServerSettings) -> list[int]:
    deadline = time.monotonic() + settings.wait_for_nodes
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= settings.min_nodes or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def run_fedavg(grid: Grid, context: Context, settings: ServerSettings) -> dict[str, object]:
    """Run the rounds; write round files, ``metrics.json`` and the final LoRA files."""
    out_dir = Path(settings.out_dir)
    run_config = dict(context.run_config)
    model = JobModel.load(settings, run_config)
    model.base_path = settings.base_model_path  # type: ignore[attr-defined]  # name in the LoRA metadata
    expected = model.expected
    arrays, history, start = model.initial, History(job_id=settings.job_id), 1
    if settings.resume_from:
        last, arrays, state = saved.load_state(Path(settings.resume_from))
        if list(arrays) != list(expected):
            raise FederationFailed(
                f"resume-from {settings.resume_from} holds another adapter shape"
            )
        history = History.from_dict(state.get("history", {"job-id": settings.job_id}))  # type: ignore[arg-type]
        start = last + 1
        logger.info(
            "resuming job %s from round %d (saved in %s)",
            settings.job_id,
            last,
            settings.resume_from,
        )
    manifests: set[str] = set()

    def fail(reason: str) -> FederationFailed:
        saved.write_json(
            out_dir / saved.METRICS_FILE,
            {**history.to_dict(), "status": "failed", "reason": reason},
        )
        saved.post_progress(
            settings.progress_url,
            settings.progress_token,
            {"job-id": settings.job_id, "status": "failed", "reason": reason},
        )
        return FederationFailed(reason)

    for server_round in range(start, settings.num_rounds + 1):
        started = time.perf_counter()
        nodes = _wait_for_nodes(grid, settings)
        if len(nodes) < settings.min_nodes:
            raise fail(
                f"round {server_round}: {len(nodes)} nodes connected, "
                f"min-nodes is {settings.min_nodes}"
            )
        wire = pack(arrays) if settings.transport == "packed" else arrays
        out_record = ArrayRecord(
            {name: Array(np.asarray(value, dtype=np.float32)) for name, value in wire.items()}
        )
        bytes_out = out_record.count_bytes()
        messages = [
            Message(
                RecordDict(
                    {
                        ARRAY_RECORD: out_record,
                        "config": ConfigRecord({"server-round": server_round}),
                    }
                ),
                dst_node_id=node,
                message_type=MessageType.TRAIN,
            )
            for node in nodes
        ]
        replies = list(grid.send_and_receive(messages, timeout=settings.round_timeout))
        record: dict[str, object] = {
            "round": server_round,
            "nodes-asked": [str(n) for n in nodes],
            "bytes-out-per-node": bytes_out,
        }
        accepted: dict[str, dict[str, object]] = {}
        rejected: dict[str, list[str]] = {}
        refused: dict[str, str] = {}
        good: list[tuple[OrderedDict[str, np.ndarray], int]] = []
        for reply in replies:
            node = str(reply.metadata.src_node_id)
            if reply.has_error():
                refused[node] = f"[{reply.error.code}] {reply.error.reason}"
                continue
            parts = _parts(reply.content)
            check = check_reply(parts, expected)
            if not check.ok:
                rejected[node] = check.problems
                logger.warning(
                    "round %d: reply of node %s rejected: %s", server_round, node, check.problems
                )
                continue
            metrics = {k: float(v) for k, v in parts.metrics[METRIC_RECORD].items()}  # type: ignore[arg-type]  # checked scalars
            metrics["bytes-in"] = float(reply.content.array_records[ARRAY_RECORD].count_bytes())
            accepted[node] = metrics
            info = parts.configs.get(INFO_RECORD, {})
            if "manifest-hash" in info:
                manifests.add(str(info["manifest-hash"]))
            named = unpack(parts.arrays[ARRAY_RECORD], expected)
            assert not isinstance(named, str)  # check_reply passed
            node_arrays = OrderedDict((name, named[name]) for name in expected)
            good.append((node_arrays, int(metrics["num-examples"])))
            entry = history.nodes.setdefault(node, {"rounds": []})
            entry["rounds"].append(server_round)  # type: ignore[union-attr]  # list set just above
            entry.update(
                {
                    "epsilon": metrics["epsilon"],
                    "delta": metrics["delta"],
                    "num-examples": metrics["num-examples"],
                    "total-steps": metrics["total-steps"],
                    "noise-multiplier": metrics["noise-multiplier"],
                }
            )
        missing = [
            str(n)
            for n in nodes
            if str(n) not in accepted and str(n) not in refused and str(n) not in rejected
        ]
        record.update(
            {
                "nodes": accepted,
                "rejected": rejected,
                "refused": refused,
                "no-reply": missing,
                "accepted": len(accepted),
                "all-replies-passed-check": not rejected,
            }
        )
        if len(good) < settings.min_nodes:
            history.rounds.append(record)
            why = "; ".join(
                [f"node {n} refused: {r}" for n, r in refused.items()]
                + [f"node {n} rejected" for n in rejected]
                + [f"node {n} sent no reply within {settings.round_timeout:g} s" for n in missing]
            )
            raise fail(
                f"round {server_round}: {len(good)} accepted replies, "
                f"min-nodes is {settings.min_nodes} ({why})"
            )
        arrays = fedavg(good)
        record["train-loss"] = weighted_mean(
            [(m["train-loss"], int(m["num-examples"])) for m in accepted.values()]
        )
        record["num-examples"] = sum(int(m["num-examples"]) for m in accepted.values())
        record["seconds"] = time.perf_counter() - started
        history.rounds.append(record)
        saved.save_round(
            out_dir,
            server_round,
            arrays,
            {"history": history.to_dict(), "num-server-rounds": settings.num_rounds},
        )
        saved.post_progress(
            settings.progress_url,
            settings.progress_token,
            {"job-id": settings.job_id, "status": "running", **record},
        )
        logger.info(
            "round %d: %d accepted, loss %.4f, %.1f s",
            server_round,
            len(accepted),
            record["train-loss"],
            record["seconds"],
        )

    epsilons = [
        float(n["epsilon"]) for n in history.nodes.values() if float(n.get("epsilon", -1)) >= 0
    ]  # type: ignore[arg-type]
    noises = [
        float(n["noise-multiplier"])
        for n in history.nodes.values()
        if float(n.get("noise-multiplier", -1)) > 0
    ]  # type: ignore[arg-type]
    steps = max((int(n["total-steps"]) for n in history.nodes.values()), default=0)  # type: ignore[call-overload]
    final = (
        saved.save_round(
            out_dir,
            settings.num_rounds,
            arrays,
            {"history": history.to_dict(), "num-server-rounds": settings.num_rounds},
        )
        if start > settings.num_rounds
        else out_dir / f"round-{settings.num_rounds}.npz"
    )
    files = model.export(
        out_dir / "lora",
        arrays,
        steps=steps,
        manifests=sorted(manifests),
        epsilon=max(epsilons) if epsilons else None,
        noise=max(noises) if noises else None,
        title=f"Atelier federated LoRA ({settings.job_id})",
    )
    result = {
        **history.to_dict(),
        "status": "completed",
        "aggregation": "fedavg",
        "num-server-rounds": settings.num_rounds,
        "started-at-round": start,
        "final": {**files, "npz": str(final)},
        "adapter-bytes": int(sum(v.nbytes for v in arrays.values())),
        "epsilon-max": max(epsilons) if epsilons else None,
    }
    saved.write_json(out_dir / saved.METRICS_FILE, result)
    saved.post_progress(
        settings.progress_url,
        settings.progress_token,
        {"job-id": settings.job_id, "status": "completed", "final": result["final"]},
    )
    return result
