"""The Message-API rounds: FedAvg of adapter arrays weighted by examples, with per-node records.

A custom loop rather than ``flwr.serverapp.strategy.FedAvg`` because every reply must pass the
privacy check (:mod:`.reply_check`) before it is aggregated, and the job needs per-node
(source node id) examples, loss and epsilon, refusals and rejections, each round.

Before round 1 (``prepare-timeout`` > 0) every connected node gets a query message asking it to
get ready (pick the job's dataset, fetch the base model, build its latent cache); the server
waits up to ``prepare-timeout`` seconds, reports who is ready and who failed (progress status
``preparing``), leaves failed nodes out of the rounds, and fails the run if fewer than
``min-nodes`` are ready. Each round's report names the dataset (manifest hash) of every
accepted node (``node-datasets``); a reply whose manifest the job does not list is rejected,
and so is a reply whose manifest its sender does not serve: the sender is the SuperLink's
``src_node_id``, mapped to the site's node and its datasets by the job's credentials file
(:mod:`.credentials`), never what the reply says. A rejected reply is left out of the average
and listed in the round's ``rejected`` with the reason (``dataset_not_owned: ...``).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from federated.engine.errors import EngineError
from federated.engine.flower import state as saved
from federated.engine.flower.aggregate import fedavg, weighted_mean
from federated.engine.flower.reply_check import (
    ARRAY_RECORD,
    INFO_RECORD,
    METRIC_RECORD,
    PACKED_ARRAY,
    ReplyParts,
    check_reply,
    pack,
    unpack,
)
from federated.engine.flower.settings import (
    HEX64,
    RunConfig,
    ServerSettings,
    train_config_from_run_config,
)
from federated.engine.rounds import MAX_GRID_BYTES, RoundRecord, RoundRecordError
from federated.engine.samples import SAMPLES_DIR, SampleGridSpec, render_sample_grid

if TYPE_CHECKING:
    from federated.engine.trainer import LoadedBase, TrainConfig
    from sdcore.generate import PipelineCache

__all__ = [
    "FederationFailed",
    "JobModel",
    "PrepareReport",
    "RoundSamples",
    "fail_run",
    "history_node_add_round",
    "history_number",
    "not_owned",
    "prepare_nodes",
    "privacy_summary",
    "ready_for_rounds",
    "report_round",
    "run_fedavg",
    "server_base_model",
]

logger = logging.getLogger(__name__)


class FederationFailed(RuntimeError):
    """The run cannot go on (too few nodes, too few accepted replies); the reason is the message."""


def server_base_model(settings: ServerSettings) -> Path:
    """The server's copy of the base model: ``base-model-path``, or the job's URL, fetched
    once into ``server-cache-dir`` (default ``<out-dir>/.cache``)."""
    if settings.base_model_path:
        return Path(settings.base_model_path)
    from federated.engine.fetch import fetch_model

    return fetch_model(
        settings.base_model_url,
        sha256=settings.base_model_sha,
        token=settings.job_token,
        cache_dir=Path(settings.cache_dir),
    ).path


@dataclass
class JobModel:
    """The server's copy of the base model: initial adapter, expected shapes, LoRA export."""

    config: TrainConfig
    base: LoadedBase
    initial: OrderedDict[str, np.ndarray]
    base_path: Path

    @classmethod
    def load(cls, settings: ServerSettings, run_config: RunConfig) -> JobModel:
        import torch

        from federated.engine.adapter import initial_adapter_arrays
        from federated.engine.trainer import load_base

        config = train_config_from_run_config(run_config)
        path = server_base_model(settings)
        base = load_base(
            path,
            device=torch.device("cpu"),
            dtype=torch.float32,
            cache_dir=Path(settings.cache_dir),
        )
        return cls(
            config=config,
            base=base,
            initial=initial_adapter_arrays(base.pipe, config.adapter),  # text encoder's too
            base_path=path,
        )

    @property
    def expected(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(value.shape) for name, value in self.initial.items()}

    @property
    def native_size(self) -> int:
        """The base model's native resolution (the UNet's sample size in pixels)."""
        pipe = self.base.pipe
        return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)

    def lora_file(self, folder: Path, arrays: OrderedDict[str, np.ndarray]) -> Path:
        """``arrays`` as a LoRA file (kohya format) in ``folder``, to draw with."""
        from federated.engine.export import LoraProvenance, save_lora_files

        files = save_lora_files(
            folder,
            unet=self.base.pipe.unet,
            spec=self.config.adapter,
            arrays=arrays,
            text_encoder=self.base.pipe.text_encoder,
            provenance=LoraProvenance(
                base_model_name=self.base_path.name,
                base_model_hash=self.base.fingerprint,
                family=self.base.family,
                resolution=self.config.resolution,
                steps=0,
            ),
        )
        return files.kohya_file

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
            text_encoder=self.base.pipe.text_encoder,
            provenance=LoraProvenance(
                base_model_name=self.base_path.name,
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
    rounds: list[RoundRecord] = field(default_factory=list)
    nodes: dict[str, dict[str, object]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "job-id": self.job_id,
            "rounds": [r.to_dict() for r in self.rounds],
            "nodes": self.nodes,
        }

    @classmethod
    def from_dict(cls, data: object) -> History:
        """The history :meth:`to_dict` wrote (``state.json``, read back to resume)."""
        if not isinstance(data, dict):
            raise FederationFailed("the saved state's history is not an object")
        rounds, nodes = data.get("rounds", []), data.get("nodes", {})
        if not isinstance(rounds, list) or not isinstance(nodes, dict):
            raise FederationFailed("the saved state's history has no rounds list or nodes object")
        try:
            records = [RoundRecord.from_dict(r) for r in rounds]
        except RoundRecordError as err:
            raise FederationFailed(f"the saved state's history: {err.message}") from err
        return cls(job_id=str(data["job-id"]), rounds=records, nodes=dict(nodes))


def history_node_add_round(entry: dict[str, object], server_round: int) -> None:
    """Add ``server_round`` to the ``rounds`` list of one node's history entry."""
    rounds = entry.setdefault("rounds", [])
    if not isinstance(rounds, list):
        raise FederationFailed(f"a node's history has rounds={rounds!r}, not a list")
    rounds.append(server_round)


def history_number(entry: Mapping[str, object], key: str, default: float) -> float:
    """A number in one node's history entry (the checked metrics copied there), or ``default``."""
    value = entry.get(key, default)
    if not isinstance(value, int | float):
        raise FederationFailed(f"a node's history has {key}={value!r}, not a number")
    return float(value)


def _parts(content: RecordDict) -> ReplyParts:
    return ReplyParts(
        arrays={n: {k: a.numpy() for k, a in r.items()} for n, r in content.array_records.items()},
        metrics={n: dict(r) for n, r in content.metric_records.items()},
        configs={n: dict(r) for n, r in content.config_records.items()},
    )


# Between two pulls of the replies: Flower's ``Grid.send_and_receive`` sleeps 3 s, on average
# 1.5 s added to every round after the last reply arrives. One pull is a small HTTP request
# to the SuperLink next to the ServerApp.
REPLY_POLL_SECONDS = 0.2


def push(grid: Grid, messages: list[Message]) -> set[str]:
    """Send ``messages``; the ids whose replies :func:`receive` waits for."""
    return set(grid.push_messages(messages))


def receive(grid: Grid, message_ids: set[str], *, timeout: float) -> list[Message]:
    """The replies to ``message_ids`` that arrive within ``timeout`` s (polled every 0.2 s)."""
    deadline = time.monotonic() + timeout
    waiting, replies = set(message_ids), []
    while waiting:
        got = list(grid.pull_messages(waiting))
        replies.extend(got)
        waiting.difference_update(m.metadata.reply_to_message_id for m in got)
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(min(REPLY_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    return replies


def _wait_for_nodes(grid: Grid, settings: ServerSettings, left_out: set[str]) -> list[int]:
    deadline = time.monotonic() + settings.wait_for_nodes
    while True:
        nodes = sorted(n for n in grid.get_node_ids() if str(n) not in left_out)
        if len(nodes) >= settings.min_nodes or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def fail_run(settings: ServerSettings, reason: str, record: dict[str, object]) -> FederationFailed:
    """Write ``metrics.json`` (``record`` + status failed), post the failure, return the error."""
    saved.write_json(
        Path(settings.out_dir) / saved.METRICS_FILE,
        {**record, "status": "failed", "reason": reason},
    )
    saved.post_progress(
        settings.progress_url,
        settings.progress_token,
        {"job-id": settings.job_id, "status": "failed", "reason": reason},
    )
    return FederationFailed(reason)


MODEL_SOURCES = frozenset({"local", "cached", "downloaded"})
NOT_OWNED = "dataset_not_owned"


def not_owned(node: str, manifest: str) -> str:
    """Why a reply from SuperLink node ``node`` naming ``manifest`` is refused."""
    return (
        f"{NOT_OWNED}: node {node} named dataset {manifest[:16] or '(none)'}..., which its "
        "registered node does not serve in this job"
    )


@dataclass
class PrepareReport:
    """Who got ready before round 1 (``ready``: node id -> what it said), who failed and why."""

    asked: list[str]
    ready: dict[str, dict[str, object]]
    failed: dict[str, str]
    no_reply: list[str]
    seconds: float
    timeout: float

    @property
    def node_datasets(self) -> dict[str, str]:
        return {node: str(info["manifest-hash"]) for node, info in self.ready.items()}

    def to_dict(self) -> dict[str, object]:
        return {
            "nodes-asked": self.asked,
            "ready": self.ready,
            "failed": self.failed,
            "no-reply": self.no_reply,
            "seconds": self.seconds,
            "timeout": self.timeout,
        }


def prepare_nodes(grid: Grid, settings: ServerSettings, nodes: list[int]) -> PrepareReport:
    """Ask ``nodes`` to get ready (a query message) and wait up to ``prepare-timeout``.

    Only three facts are taken from a reply: the dataset's manifest hash (a SHA-256 hex digest
    the job must list), where the model came from, and the seconds it took.
    """
    started = time.perf_counter()
    messages = [
        Message(
            RecordDict({"config": ConfigRecord({"action": "prepare"})}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in nodes
    ]
    ready: dict[str, dict[str, object]] = {}
    failed: dict[str, str] = {}
    for reply in receive(grid, push(grid, messages), timeout=settings.prepare_timeout):
        node = str(reply.metadata.src_node_id)
        if reply.has_error():
            failed[node] = f"[{reply.error.code}] {reply.error.reason}"
            continue
        info = reply.content.config_records.get(INFO_RECORD, ConfigRecord())
        metrics = reply.content.metric_records.get(METRIC_RECORD)
        manifest = str(info.get("manifest-hash", ""))
        if not HEX64.match(manifest):
            failed[node] = "the node named no dataset manifest (SHA-256 hex digest)"
            continue
        if settings.dataset_manifests and manifest not in settings.dataset_manifests:
            failed[node] = f"dataset_not_in_job: dataset {manifest[:16]}... is not in the job"
            continue
        if not settings.sender_owns(node, manifest):
            failed[node] = not_owned(node, manifest)
            logger.warning("prepare: %s", failed[node])
            continue
        source = str(info.get("model-source", ""))
        seconds = metrics.get("seconds") if metrics is not None else None
        ready[node] = {
            "manifest-hash": manifest,
            "model-source": source if source in MODEL_SOURCES else "unknown",
            "seconds": float(seconds) if isinstance(seconds, int | float) else None,
        }
    asked = [str(n) for n in nodes]
    return PrepareReport(
        asked=asked,
        ready=ready,
        failed=failed,
        no_reply=[n for n in asked if n not in ready and n not in failed],
        seconds=time.perf_counter() - started,
        timeout=settings.prepare_timeout,
    )


def ready_for_rounds(
    grid: Grid, settings: ServerSettings, record: dict[str, object]
) -> PrepareReport | None:
    """The readiness step before round 1 (None when ``prepare-timeout`` is 0).

    Posts ``{"job-id", "status": "preparing", "prepare": {...}, "node-datasets": {...}}``;
    raises (after :func:`fail_run`) if fewer than ``min-nodes`` are connected or ready.
    """
    if settings.prepare_timeout <= 0:
        return None
    nodes = _wait_for_nodes(grid, settings, set())
    if len(nodes) < settings.min_nodes:
        raise fail_run(
            settings,
            f"prepare: {len(nodes)} nodes connected, min-nodes is {settings.min_nodes}",
            record,
        )
    report = prepare_nodes(grid, settings, nodes)
    record["prepare"] = report.to_dict()
    saved.post_progress(
        settings.progress_url,
        settings.progress_token,
        {
            "job-id": settings.job_id,
            "status": "preparing",
            "prepare": report.to_dict(),
            "node-datasets": report.node_datasets,
        },
    )
    logger.info(
        "prepare: %d of %d nodes ready in %.1f s (failed: %s; no reply: %s)",
        len(report.ready),
        len(report.asked),
        report.seconds,
        report.failed or "none",
        report.no_reply or "none",
    )
    if len(report.ready) < settings.min_nodes:
        why = "; ".join(
            [f"node {n} failed: {r}" for n, r in report.failed.items()]
            + [
                f"node {n} was not ready within {settings.prepare_timeout:g} s"
                for n in report.no_reply
            ]
        )
        raise fail_run(
            settings,
            f"prepare: {len(report.ready)} nodes ready, min-nodes is {settings.min_nodes} ({why})",
            record,
        )
    return report


@dataclass
class RoundSamples:
    """Each round's sample grid (:mod:`federated.engine.samples`), best effort: a grid that
    cannot be drawn is logged and the round goes on without it."""

    model: JobModel
    spec: SampleGridSpec | None
    out_dir: Path
    seconds: list[float] = field(default_factory=list)
    cache: PipelineCache | None = None

    def draw(self, server_round: int, arrays: OrderedDict[str, np.ndarray]) -> bytes | None:
        if self.spec is None:
            return None
        from sdcore.generate import PipelineCache

        if self.cache is None:
            self.cache = PipelineCache(max_entries=1)
        folder = self.out_dir / SAMPLES_DIR / f"round-{server_round}"
        started = time.perf_counter()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                grid = render_sample_grid(
                    checkpoint=self.model.base_path,
                    checkpoint_key=self.model.base.fingerprint,
                    lora=self.model.lora_file(Path(tmp), arrays),
                    spec=self.spec,
                    native_size=self.model.native_size,
                    out_path=folder / "grid.png",
                    cache=self.cache,
                )
        except Exception:  # a sample grid is never worth a failed round
            logger.exception("round %d: the sample grid could not be drawn", server_round)
            return None
        seconds = time.perf_counter() - started  # the LoRA file and the drawing
        self.seconds.append(seconds)
        logger.info("round %d: sample grid of %d px in %.2f s", server_round, grid.size, seconds)
        if len(grid.png) > MAX_GRID_BYTES:  # the site would refuse the round's report
            logger.warning(
                "round %d: the sample grid (%d bytes) is over %d bytes; not sent",
                server_round,
                len(grid.png),
                MAX_GRID_BYTES,
            )
            return None
        return grid.png

    def to_dict(self) -> dict[str, object]:
        """``metrics.json``'s ``samples`` (what the site publishes the last grid with)."""
        if self.spec is None:
            return {}
        return {"samples": {**self.spec.to_dict(), "seconds": self.seconds}}


def report_round(
    settings: ServerSettings,
    record: RoundRecord,
    arrays: OrderedDict[str, np.ndarray],
    history: dict[str, object],
) -> None:
    """Save the round (``round-N.npz``, ``state.json`` with ``history``) and post its report."""
    saved.save_round(
        Path(settings.out_dir),
        record.round,
        arrays,
        {"history": history, "num-server-rounds": settings.num_rounds},
    )
    saved.post_progress(
        settings.progress_url,
        settings.progress_token,
        {"job-id": settings.job_id, "status": "running", **record.to_dict(with_grid=True)},
    )


@dataclass
class SortedReplies:
    """One round's replies: accepted (metrics, dataset, arrays), rejected, refused."""

    nodes: dict[str, dict[str, float]] = field(default_factory=dict)
    node_datasets: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    good: list[tuple[OrderedDict[str, np.ndarray], int]] = field(default_factory=list)

    def answered(self, node: str) -> bool:
        return node in self.nodes or node in self.refused or node in self.rejected


def _dataset_problem(settings: ServerSettings, node: str, manifest: str) -> str:
    """Why the dataset a reply names is refused ("" when it is fine)."""
    if settings.dataset_manifests and manifest not in settings.dataset_manifests:
        return f"dataset {manifest[:16] or '(none)'} is not one of the job's"
    if not settings.sender_owns(node, manifest):
        # The sender is the SuperLink's (src_node_id), never the reply's own claim.
        return not_owned(node, manifest)
    return ""


def sort_replies(
    replies: list[Message],
    settings: ServerSettings,
    expected: dict[str, tuple[int, ...]],
    server_round: int,
) -> SortedReplies:
    """Check every reply (:func:`.reply_check.check_reply`, the job's datasets, the sender)."""
    out = SortedReplies()
    for reply in replies:
        node = str(reply.metadata.src_node_id)
        if reply.has_error():
            out.refused[node] = f"[{reply.error.code}] {reply.error.reason}" + (
                OLD_NODE_HINT if PACKED_ARRAY in (reply.error.reason or "") else ""
            )
            continue
        parts = _parts(reply.content)
        check = check_reply(parts, expected)
        if not check.ok:
            out.rejected[node] = check.problems
            logger.warning(
                "round %d: reply of node %s rejected: %s", server_round, node, check.problems
            )
            continue
        manifest = str(parts.configs.get(INFO_RECORD, {}).get("manifest-hash", ""))
        problem = _dataset_problem(settings, node, manifest)
        if problem:
            out.rejected[node] = [problem]
            logger.warning("round %d: node %s excluded: %s", server_round, node, problem)
            continue
        metrics = {k: float(v) for k, v in parts.metrics[METRIC_RECORD].items()}  # type: ignore[arg-type]  # checked scalars
        metrics["bytes-in"] = float(reply.content.array_records[ARRAY_RECORD].count_bytes())
        out.nodes[node] = metrics
        if manifest:
            out.node_datasets[node] = manifest
        named = unpack(parts.arrays[ARRAY_RECORD], expected)
        assert not isinstance(named, str)  # check_reply passed
        out.good.append(
            (OrderedDict((name, named[name]) for name in expected), int(metrics["num-examples"]))
        )
    return out


# A node whose Atelier predates the packed wire format (the default since issue #14) refuses
# the "lora.packed" array as an unexpected tensor; say what to do instead of only that.
OLD_NODE_HINT = (
    " (this node's Atelier cannot read the packed wire format, the default: update the node, "
    'or run the job with transport = "named")'
)


def _train_messages(
    settings: ServerSettings, nodes: list[int], arrays: Mapping[str, np.ndarray], server_round: int
) -> tuple[list[Message], int]:
    """The round's train messages (the current adapter) and the bytes each node is sent."""
    wire = pack(arrays) if settings.transport == "packed" else arrays
    out_record = ArrayRecord(
        {name: Array(np.asarray(value, dtype=np.float32)) for name, value in wire.items()}
    )
    messages = [
        Message(
            RecordDict(
                {ARRAY_RECORD: out_record, "config": ConfigRecord({"server-round": server_round})}
            ),
            dst_node_id=node,
            message_type=MessageType.TRAIN,
        )
        for node in nodes
    ]
    return messages, out_record.count_bytes()


@dataclass
class FedAvgRun:
    """The state of a FedAvg run between rounds: the adapter, the history, the datasets."""

    settings: ServerSettings
    model: JobModel
    arrays: OrderedDict[str, np.ndarray]
    start: int
    history: History
    samples: RoundSamples
    manifests: set[str] = field(default_factory=set)
    extra: dict[str, object] = field(default_factory=dict)  # "prepare": in metrics.json
    # The last collected round, saved but not yet reported (its grid is drawn while the next
    # round trains: the nodes do not wait for it).
    pending: tuple[RoundRecord, OrderedDict[str, np.ndarray]] | None = None
    publisher: threading.Thread | None = None  # the thread drawing and posting it, if any

    def fail(self, reason: str) -> FederationFailed:
        self.publish()  # the last round's report first (the site then reads the failure)
        return fail_run(self.settings, reason, {**self.history.to_dict(), **self.extra})

    def remember(self, sorted_replies: SortedReplies, server_round: int) -> None:
        """Copy the accepted nodes' checked metrics into the history."""
        for node, metrics in sorted_replies.nodes.items():
            manifest = sorted_replies.node_datasets.get(node, "")
            if manifest:
                self.manifests.add(manifest)
            entry = self.history.nodes.setdefault(node, {"rounds": []})
            history_node_add_round(entry, server_round)
            entry.update({key: metrics[key] for key in NODE_HISTORY_KEYS})
            if manifest:
                entry["manifest-hash"] = manifest

    def send(self, grid: Grid, server_round: int, left_out: set[str]) -> SentRound:
        """Send the round's train messages (the current adapter) to every connected node."""
        settings = self.settings
        started = time.perf_counter()
        nodes = _wait_for_nodes(grid, settings, left_out)
        if len(nodes) < settings.min_nodes:
            raise self.fail(
                f"round {server_round}: {len(nodes)} nodes connected, "
                f"min-nodes is {settings.min_nodes}"
            )
        messages, bytes_out = _train_messages(settings, nodes, self.arrays, server_round)
        return SentRound(server_round, nodes, push(grid, messages), bytes_out, started)

    def collect(self, grid: Grid, sent: SentRound) -> RoundRecord:
        """Wait for the round's replies, check them, average and save the round (no report
        yet: :meth:`publish` draws the grid and posts it, while the next round trains)."""
        settings, server_round, nodes = self.settings, sent.round, sent.nodes
        replies = receive(grid, sent.message_ids, timeout=settings.round_timeout)
        waited = time.perf_counter()
        got = sort_replies(replies, settings, self.model.expected, server_round)
        self.remember(got, server_round)
        record = RoundRecord(
            round=server_round,
            nodes_asked=[str(n) for n in nodes],
            bytes_out_per_node=sent.bytes_out,
            nodes=got.nodes,
            node_datasets=got.node_datasets,
            rejected=got.rejected,
            refused=got.refused,
            no_reply=[str(n) for n in nodes if not got.answered(str(n))],
        )
        if len(got.good) < settings.min_nodes:
            self.history.rounds.append(record)
            raise self.fail(_too_few(settings, record, len(got.good)))
        self.arrays = fedavg(got.good)
        accepted = got.nodes.values()
        record = dataclasses.replace(
            record,
            train_loss=weighted_mean([(m["train-loss"], int(m["num-examples"])) for m in accepted]),
            num_examples=sum(int(m["num-examples"]) for m in accepted),
            seconds=time.perf_counter() - sent.started,
        )
        self.history.rounds.append(record)
        saved.save_round(  # before the next round is sent: a restart resumes after this one
            Path(settings.out_dir),
            server_round,
            self.arrays,
            {"history": self.history.to_dict(), "num-server-rounds": settings.num_rounds},
        )
        self.pending = (record, self.arrays)
        phases = self.extra.setdefault("round-phases", [])
        assert isinstance(phases, list)
        phases.append(
            {
                "round": server_round,
                "wait-replies": waited - sent.started,
                "aggregate-and-save": time.perf_counter() - waited,
            }
        )
        logger.info(
            "round %d: %d accepted, loss %.4f, %.1f s",
            server_round,
            record.accepted,
            record.train_loss,
            record.seconds,
        )
        return record

    def publish(self, *, draw: bool = True, background: bool = False) -> None:
        """Draw the last collected round's sample grid and post its report (once).

        ``background``: in a thread, so that the ServerApp collects the next round's replies
        meanwhile (a grid slower than the nodes' training does not lengthen the round). Reports
        stay in round order: each call first waits for the previous one's thread.
        """
        if self.publisher is not None:
            self.publisher.join()
            self.publisher = None
        if self.pending is None:
            return
        record, arrays = self.pending
        self.pending = None
        if background:
            self.publisher = threading.Thread(
                target=self._publish, args=(record, arrays, draw), name="round-report", daemon=True
            )
            self.publisher.start()
        else:
            self._publish(record, arrays, draw)

    def _publish(
        self, record: RoundRecord, arrays: OrderedDict[str, np.ndarray], draw: bool
    ) -> None:
        started = time.perf_counter()
        grid_png = self.samples.draw(record.round, arrays) if draw else None
        record = dataclasses.replace(record, sample_grid=grid_png)
        saved.post_progress(
            self.settings.progress_url,
            self.settings.progress_token,
            {"job-id": self.settings.job_id, "status": "running", **record.to_dict(with_grid=True)},
        )
        for phase in self.extra.get("round-phases", []):  # type: ignore[attr-defined]  # a list
            if phase.get("round") == record.round:
                phase["grid-and-report"] = time.perf_counter() - started

    def round(self, grid: Grid, server_round: int, left_out: set[str]) -> RoundRecord:
        """One round on its own: send, collect, then draw the grid and report."""
        record = self.collect(grid, self.send(grid, server_round, left_out))
        self.publish()
        return record


@dataclass(frozen=True)
class SentRound:
    """A round whose messages are out: what :meth:`FedAvgRun.collect` needs."""

    round: int
    nodes: list[int]
    message_ids: set[str]
    bytes_out: int
    started: float


NODE_HISTORY_KEYS = ("epsilon", "delta", "num-examples", "total-steps", "noise-multiplier")


def _too_few(settings: ServerSettings, record: RoundRecord, accepted: int) -> str:
    why = "; ".join(
        [f"node {n} refused: {r}" for n, r in record.refused.items()]
        + [f"node {n} rejected" for n in record.rejected]
        + [f"node {n} sent no reply within {settings.round_timeout:g} s" for n in record.no_reply]
    )
    return (
        f"round {record.round}: {accepted} accepted replies, "
        f"min-nodes is {settings.min_nodes} ({why})"
    )


def _start_fedavg(settings: ServerSettings, context: Context) -> FedAvgRun:
    """Load the base model and the initial adapter, or the saved one (``resume-from``)."""
    history = History(job_id=settings.job_id)
    try:
        model = JobModel.load(settings, dict(context.run_config))
    except EngineError as err:  # e.g. the base model could not be fetched
        raise fail_run(
            settings, f"base model: {err.code}: {err.message}", history.to_dict()
        ) from err
    arrays, start = model.initial, 1
    if settings.resume_from:
        last, arrays, state = saved.load_state(Path(settings.resume_from))
        if list(arrays) != list(model.expected):
            raise FederationFailed(
                f"resume-from {settings.resume_from} holds another adapter shape"
            )
        history = History.from_dict(state.get("history", {"job-id": settings.job_id}))
        start = last + 1
        logger.info(
            "resuming job %s from round %d (saved in %s)",
            settings.job_id,
            last,
            settings.resume_from,
        )
    samples = RoundSamples(model=model, spec=settings.sample_grid, out_dir=Path(settings.out_dir))
    return FedAvgRun(settings, model, arrays, start, history, samples)


def privacy_summary(
    nodes: Mapping[str, Mapping[str, object]],
) -> tuple[float | None, float | None, int]:
    """(largest epsilon, largest noise multiplier, most local steps) over the nodes' history."""
    epsilons = [
        history_number(n, "epsilon", -1)
        for n in nodes.values()
        if history_number(n, "epsilon", -1) >= 0
    ]
    noises = [
        history_number(n, "noise-multiplier", -1)
        for n in nodes.values()
        if history_number(n, "noise-multiplier", -1) > 0
    ]
    steps = max((int(history_number(n, "total-steps", 0)) for n in nodes.values()), default=0)
    return (max(epsilons) if epsilons else None, max(noises) if noises else None, steps)


def _finish_fedavg(run: FedAvgRun) -> dict[str, object]:
    """Export the LoRA, write ``metrics.json`` and post the final report."""
    settings, out_dir, arrays = run.settings, Path(run.settings.out_dir), run.arrays
    epsilon, noise, steps = privacy_summary(run.history.nodes)
    final = (
        saved.save_round(
            out_dir,
            settings.num_rounds,
            arrays,
            {"history": run.history.to_dict(), "num-server-rounds": settings.num_rounds},
        )
        if run.start > settings.num_rounds
        else out_dir / f"round-{settings.num_rounds}.npz"
    )
    files = run.model.export(
        out_dir / "lora",
        arrays,
        steps=steps,
        manifests=sorted(run.manifests),
        epsilon=epsilon,
        noise=noise,
        title=f"Atelier federated LoRA ({settings.job_id})",
    )
    result = {
        **run.history.to_dict(),
        **run.extra,
        **run.samples.to_dict(),
        "status": "completed",
        "aggregation": "fedavg",
        "num-server-rounds": settings.num_rounds,
        "started-at-round": run.start,
        "final": {**files, "npz": str(final)},
        "adapter-bytes": int(sum(v.nbytes for v in arrays.values())),
        "epsilon-max": epsilon,
    }
    saved.write_json(out_dir / saved.METRICS_FILE, result)
    saved.post_progress(
        settings.progress_url,
        settings.progress_token,
        {"job-id": settings.job_id, "status": "completed", "final": result["final"]},
    )
    return result


def run_fedavg(grid: Grid, context: Context, settings: ServerSettings) -> dict[str, object]:
    """Run the rounds; write round files, ``metrics.json`` and the final LoRA files."""
    run = _start_fedavg(settings, context)
    if not settings.senders:
        logger.warning("no sender map: replies are not bound to their SuperLink node ids")
    prepared = (
        ready_for_rounds(grid, settings, run.extra) if run.start <= settings.num_rounds else None
    )
    left_out = set(prepared.failed) if prepared else set()
    try:
        for server_round in range(run.start, settings.num_rounds + 1):
            sent = run.send(grid, server_round, left_out)
            run.publish(background=True)  # the previous round's grid and report, meanwhile
            run.collect(grid, sent)
    except BaseException:
        run.publish(draw=False)  # no grid for a run that is failing; the report still goes
        raise
    run.publish()
    from federated.engine.flower.release import check_before_release

    withheld = check_before_release(grid, context.run_config, run)  # a node's veto: no export
    return withheld if withheld is not None else _finish_fedavg(run)
