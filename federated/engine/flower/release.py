"""The ServerApp's release step: after the last round, before exporting the LoRA.

Every node that trained in the job (an accepted reply in some round) and is still connected
gets a query message ``action = "release-check"`` with the final adapter (which it would see
anyway once published). Each answers ``allow`` or ``veto`` (:mod:`federated.engine.release_check`
on the node). One veto withholds the release: the ServerApp does not export the LoRA files,
writes ``metrics.json`` with ``status = "withheld"`` and posts the same status; the site ends
the job as withheld (nothing published, owners paid for the rounds they trained except the
vetoing ones, the rest refunded: docs/data-owner.md).

Rules that keep the step honest:
- Only the verdict and a reason code from a fixed list are read from a reply; anything else a
  node puts there is ignored (and a reply with another verdict counts as no answer).
- A node that errs, or does not answer within ``release-check-timeout`` seconds, has not vetoed:
  a veto is an explicit answer, so a node cannot hold a release back by going away, and the job
  cannot hang on it.
- A node that did not train in the job is not asked, and its answer would not count.
- What leaves this step (``metrics.json``, the progress report) names how many nodes were asked,
  allowed, vetoed and did not answer, and which datasets (manifest hashes) vetoed, so the site can
  settle; never a score or an image.

Run config: ``release-check`` (true; false skips the step) and ``release-check-timeout``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from federated.engine.flower import state as saved
from federated.engine.flower.reply_check import ARRAY_RECORD, INFO_RECORD
from federated.engine.flower.settings import ServerSettings
from federated.engine.release_check import ACTION, REASONS, VERDICTS

__all__ = [
    "ReleaseReport",
    "check_before_release",
    "check_secagg_release",
    "release_check",
    "release_check_enabled",
    "release_check_timeout",
    "withhold",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0


def release_check_enabled(run_config: Mapping[str, object]) -> bool:
    value = run_config.get("release-check", True)
    return str(value).strip().lower() not in ("false", "0", "off", "no")


def release_check_timeout(run_config: Mapping[str, object]) -> float:
    try:
        timeout = float(run_config.get("release-check-timeout", DEFAULT_TIMEOUT))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_TIMEOUT
    return timeout if timeout > 0 else DEFAULT_TIMEOUT


@dataclass
class ReleaseReport:
    """Who was asked, who allowed, who vetoed (node id -> manifest), who gave no answer."""

    asked: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    vetoed: dict[str, str] = field(default_factory=dict)
    no_answer: dict[str, str] = field(default_factory=dict)  # node -> why (server log only)
    seconds: float = 0.0

    @property
    def withheld(self) -> bool:
        return bool(self.vetoed)

    def to_dict(self) -> dict[str, object]:
        """What ``metrics.json`` and the progress report say (counts and vetoing datasets)."""
        return {
            "asked": len(self.asked),
            "allowed": len(self.allowed),
            "vetoed": len(self.vetoed),
            "no-answer": len(self.no_answer),
            "vetoed-datasets": sorted(set(self.vetoed.values())),
            "seconds": round(self.seconds, 3),
        }


def _verdict(reply: Message) -> str | None:
    """``allow`` or ``veto`` from a well-formed reply; None otherwise."""
    record = reply.content.config_records.get(INFO_RECORD, ConfigRecord())
    verdict, reason = record.get("verdict"), record.get("reason")
    if verdict in VERDICTS and reason in REASONS:
        return str(verdict)
    return None


def release_check(
    grid: Grid,
    *,
    run_config: Mapping[str, object],
    trained: Mapping[str, Mapping[str, object]],
    arrays: Mapping[str, np.ndarray],
) -> ReleaseReport:
    """Ask every connected node in ``trained`` (the history's nodes) to check the release."""
    started = time.perf_counter()
    report = ReleaseReport()
    connected = {str(n) for n in grid.get_node_ids()}
    nodes = sorted(n for n in trained if n in connected)
    record = ArrayRecord(
        {name: Array(np.asarray(value, dtype=np.float32)) for name, value in arrays.items()}
    )
    messages = [
        Message(
            RecordDict({ARRAY_RECORD: record, "config": ConfigRecord({"action": ACTION})}),
            dst_node_id=int(node),
            message_type=MessageType.QUERY,
        )
        for node in nodes
    ]
    report.asked = sorted(trained)  # a node that trained but is gone counts as no answer
    timeout = release_check_timeout(run_config)
    for reply in grid.send_and_receive(messages, timeout=timeout) if messages else []:
        node = str(reply.metadata.src_node_id)
        if node not in trained or node in report.allowed or node in report.vetoed:
            continue
        if reply.has_error():
            report.no_answer[node] = f"[{reply.error.code}] {reply.error.reason}"[:500]
            continue
        verdict = _verdict(reply)
        if verdict == "veto":
            report.vetoed[node] = str(trained[node].get("manifest-hash", ""))
        elif verdict == "allow":
            report.allowed.append(node)
        else:
            report.no_answer[node] = "malformed release-check reply"
    for node in report.asked:
        if node not in report.allowed and node not in report.vetoed:
            report.no_answer.setdefault(
                node, f"no answer within {timeout:g} s" if node in connected else "not connected"
            )
    report.seconds = time.perf_counter() - started
    logger.info(
        "release check: %d asked, %d allowed, %d vetoed, no answer: %s",
        len(report.asked),
        len(report.allowed),
        len(report.vetoed),
        report.no_answer or "none",
    )
    return report


def withhold(
    settings: ServerSettings, record: Mapping[str, object], report: ReleaseReport
) -> dict[str, object]:
    """No export: write ``metrics.json`` with status withheld and post the same status."""
    reason = (
        f"release withheld: {len(report.vetoed)} of {len(report.asked)} nodes vetoed it (their "
        "owners' release check found their images reproduced); the LoRA was not exported"
    )
    result = {**record, "status": "withheld", "reason": reason, "release-check": report.to_dict()}
    saved.write_json(Path(settings.out_dir) / saved.METRICS_FILE, result)
    saved.post_progress(
        settings.progress_url,
        settings.progress_token,
        {"job-id": settings.job_id, "status": "withheld", "release-check": report.to_dict()},
    )
    logger.warning("%s", reason)
    return result


def check_before_release(
    grid: Grid,
    run_config: Mapping[str, object],
    run: Any,  # a strategy.FedAvgRun (no import back)
) -> dict[str, object] | None:
    """The release step of a FedAvg run: None to go on and export, else the withheld result.

    The report goes into ``run.extra`` (``metrics.json``'s ``release-check``) either way.
    """
    if not release_check_enabled(run_config):
        return None
    report = release_check(
        grid, run_config=run_config, trained=run.history.nodes, arrays=run.arrays
    )
    run.extra["release-check"] = report.to_dict()
    if not report.withheld:
        return None
    record = {
        **run.history.to_dict(),
        **run.extra,
        "aggregation": "fedavg",
        "num-server-rounds": run.settings.num_rounds,
        "started-at-round": run.start,
    }
    return withhold(run.settings, record, report)


def check_secagg_release(
    grid: Grid,
    run_config: Mapping[str, object],
    recorder: Any,
    extra: dict[str, object],  # a secagg.SecAggRecorder
) -> dict[str, object] | None:
    """The release step of a SecAgg+ run (same rules as :func:`check_before_release`)."""
    if not release_check_enabled(run_config):
        return None
    report = release_check(
        grid, run_config=run_config, trained=recorder.nodes, arrays=recorder.arrays
    )
    extra["release-check"] = report.to_dict()
    if not report.withheld:
        return None
    record = {
        **extra,
        "job-id": recorder.settings.job_id,
        "rounds": [r.to_dict() for r in recorder.rounds],
        "nodes": recorder.nodes,
        "aggregation": "secagg",
        "num-server-rounds": recorder.settings.num_rounds,
    }
    return withhold(recorder.settings, record, report)
