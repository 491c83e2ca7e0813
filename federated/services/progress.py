"""The ServerApp's reports: one per round (idempotent by round), a final and a failure report.

A round maps each accepted node to the dataset it trained on through ``node-datasets``
(``{flower node id: manifest hash}``): the dataset's examples and rounds completed (what its
owner is paid for) and the epsilon its node reported (the site's privacy ledger, the largest
per job and dataset). A node or manifest that is not in the job is logged and paid nothing.
"""

from __future__ import annotations

import io
import logging
import math
import uuid
from collections.abc import Mapping
from typing import Any

from django.core.files.base import ContentFile
from django.db import transaction
from PIL import Image, UnidentifiedImageError

from core.errors import ApplicationError, ConflictError
from federated.engine.rounds import MAX_NODES, RoundRecord, RoundRecordError
from federated.models import (
    ApprovalState,
    FederatedJob,
    JobDataset,
    JobEvent,
    JobRound,
    PrivacySpend,
)
from federated.services.events import job_event

log = logging.getLogger(__name__)
State = FederatedJob.State
RECORDING_STATES = (State.QUEUED, State.RUNNING, State.PUBLISHING)
MAX_GRID_SIDE = 4096  # pixels, either side of a round's sample grid


def _bad(message: str) -> ApplicationError:
    return ApplicationError(f"Malformed progress report: {message}", code="bad_progress")


def _parse_round(payload: Mapping[str, Any], job: FederatedJob) -> RoundRecord:
    """The report's round, parsed and checked once (400 ``bad_progress`` otherwise)."""
    try:
        record = RoundRecord.from_dict(payload)
    except RoundRecordError as err:
        raise _bad(err.message) from err
    if record.round > job.num_rounds:
        raise _bad(f"round {record.round} is outside 1..{job.num_rounds}.")
    return record


def _prepare_failures(prepare: object) -> dict[str, object]:
    """The readiness report's ``failed`` (node id -> why), checked."""
    failed = prepare.get("failed") if isinstance(prepare, dict) else None
    if failed is None:
        return {}
    if not isinstance(failed, dict) or len(failed) > MAX_NODES:
        raise _bad("'failed' must be an object keyed by node id.")
    return {str(node): reason for node, reason in failed.items()}


def _grid_file(png: bytes) -> ContentFile[bytes]:
    """The round's sample grid, checked (a whole PNG of bounded size) and re-encoded (no text
    chunks reach public media); 400 ``bad_progress`` for anything else."""
    try:
        with Image.open(io.BytesIO(png)) as image:
            if image.format != "PNG":
                raise _bad("the sample grid is not a PNG image.")
            width, height = image.size
            if width > MAX_GRID_SIDE or height > MAX_GRID_SIDE:
                raise _bad(f"the sample grid is {width}x{height}; at most {MAX_GRID_SIDE} a side.")
            image.load()  # decodes every pixel: a truncated file fails here
            clean = image.convert("RGB")
    except ApplicationError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise _bad("the sample grid is not a readable PNG image.") from exc
    except ValueError as exc:
        raise _bad("the sample grid is not a readable PNG image.") from exc
    out = io.BytesIO()
    clean.save(out, format="PNG", optimize=True)
    return ContentFile(out.getvalue(), name=f"{uuid.uuid4().hex}.png")


def _datasets_credit(job: FederatedJob, record: RoundRecord) -> list[dict[str, str]]:
    """Credit each dataset an accepted node trained on with the round (examples capped by its
    manifest, its node ids, the largest epsilon); returns the nodes whose dataset is not in the
    job (paid nothing). Locks the job's datasets."""
    by_hash = {
        jd.manifest_hash: jd
        for jd in job.datasets.select_for_update()
        .order_by("pk")
        .exclude(approval=ApprovalState.REJECTED)
    }
    examples: dict[int, int] = {}
    epsilons: dict[int, tuple[float, float]] = {}
    node_ids: dict[int, set[str]] = {}
    ignored: list[dict[str, str]] = []
    for node, metrics in record.nodes.items():
        digest = record.node_datasets.get(node, "")
        jd = by_hash.get(digest)
        if jd is None:
            ignored.append({"node": node, "manifest_hash": digest})
            continue
        reported = int(max(0.0, metrics.get("num-examples", 0.0)))
        examples[jd.pk] = max(examples.get(jd.pk, 0), min(reported, jd.examples))
        node_ids.setdefault(jd.pk, set()).add(node)
        epsilon = metrics.get("epsilon", -1.0)
        if epsilon >= 0:
            old = epsilons.get(jd.pk, (0.0, 0.0))
            epsilons[jd.pk] = (max(old[0], epsilon), max(old[1], metrics.get("delta", 0.0)))
    for jd in by_hash.values():
        if jd.pk not in examples:
            continue
        jd.rounds_completed += 1
        jd.example_rounds += examples[jd.pk]
        jd.flwr_node_ids = sorted(set(jd.flwr_node_ids) | node_ids[jd.pk])
        jd.save(update_fields=["rounds_completed", "example_rounds", "flwr_node_ids"])
        if jd.pk in epsilons:
            _privacy_spend_record(job, jd, *epsilons[jd.pk])
    return ignored


def _record_round(job: FederatedJob, payload: Mapping[str, Any]) -> JobRound:
    record = _parse_round(payload, job)
    grid = _grid_file(record.sample_grid) if record.sample_grid is not None else None
    existing = JobRound.objects.filter(job_id=job.pk, index=record.round).first()
    if existing is not None:
        _same_round_or_conflict(job, existing, record)
        return existing
    ignored = _datasets_credit(job, record)
    row = JobRound(
        job=job,
        index=record.round,
        train_loss=record.train_loss,
        num_examples=record.num_examples or 0,
        seconds=record.seconds,
        bytes_out_per_node=record.bytes_out_per_node,
        epsilon_max=record.epsilon_max,
        nodes=record.nodes,
        node_datasets=record.node_datasets,
        refused=record.refused,
        rejected=record.rejected,
        no_reply=record.no_reply,
    )
    if grid is not None:
        row.sample_grid.save(grid.name or "grid.png", grid, save=False)
    row.save()
    _round_events(job, row, ignored)
    return row


def _round_events(job: FederatedJob, record: JobRound, ignored: list[dict[str, str]]) -> None:
    """The job's log lines for a recorded round: the round, then what was left out and why."""
    index = record.index
    loss = "n/a" if record.train_loss is None else f"{record.train_loss:.4f}"
    job_event(
        job=job,
        kind="round",
        message=(
            f"Round {index}/{job.num_rounds}: {len(record.nodes)} node(s), "
            f"{record.num_examples} examples, loss {loss}."
        ),
        data={"round": index},
    )
    if ignored:
        job_event(
            job=job,
            kind="unknown_dataset",
            level=JobEvent.Level.WARNING,
            message=(
                f"Round {index}: {len(ignored)} node(s) trained on a dataset that is not in this "
                "job; ignored for payment."
            ),
            data={"round": index, "nodes": ignored},
        )
    for node, reason in record.refused.items():
        job_event(
            job=job,
            kind="node_refused",
            level=JobEvent.Level.WARNING,
            message=f"Round {index}: node {node} refused: {reason}",
            data={"round": index, "node": node},
        )
    for node, reasons in record.rejected.items():
        why = "; ".join(reasons) if isinstance(reasons, list) else str(reasons)
        job_event(
            job=job,
            kind="reply_rejected",
            level=JobEvent.Level.ERROR,
            message=f"Round {index}: the reply of node {node} was rejected and left out "
            f"of the average: {why}",
            data={"round": index, "node": node, "reasons": reasons},
        )
    for node in record.no_reply:
        job_event(
            job=job,
            kind="node_no_reply",
            level=JobEvent.Level.WARNING,
            message=f"Round {index}: node {node} sent no reply.",
            data={"round": index, "node": node},
        )


def _same_round_or_conflict(job: FederatedJob, existing: JobRound, record: RoundRecord) -> None:
    """An identical repeat of a recorded round is fine (the ServerApp retried, the coordinator
    replayed its files); a different one is a conflict: 409, logged, nothing changes."""
    loss = record.train_loss
    differs = [
        name
        for name, same in (
            ("nodes", record.nodes == existing.nodes),
            ("node-datasets", record.node_datasets == existing.node_datasets),
            ("rejected", record.rejected == existing.rejected),
            ("num-examples", (record.num_examples or 0) == existing.num_examples),
            (
                "train-loss",
                loss == existing.train_loss
                or (
                    loss is not None
                    and existing.train_loss is not None
                    and math.isclose(loss, existing.train_loss, rel_tol=1e-9)
                ),
            ),
        )
        if not same
    ]
    if not differs:
        return
    log.warning(
        "job %s: a different report for round %s, already recorded (%s differ)",
        job.pk,
        existing.index,
        ", ".join(differs),
    )
    raise ConflictError(
        f"Round {existing.index} is already recorded with another report "
        f"({', '.join(differs)} differ); the first report stands.",
        code="round_conflict",
        details={"round": existing.index, "differs": differs},
    )


def _privacy_spend_record(job: FederatedJob, jd: JobDataset, epsilon: float, delta: float) -> None:
    spend, _ = PrivacySpend.objects.select_for_update().get_or_create(
        job=job, dataset_version_id=jd.dataset_version_id
    )
    if epsilon > spend.epsilon or delta > spend.delta:
        spend.epsilon = max(spend.epsilon, epsilon)
        spend.delta = max(spend.delta, delta)
        spend.save(update_fields=["epsilon", "delta", "updated_at"])


def job_progress_record(*, job: FederatedJob, payload: dict[str, Any]) -> JobRound | None:
    """Record one report of the ServerApp. A round already recorded with the same report is
    returned unchanged; a different report for it is 409 ``round_conflict`` (logged in the
    job's log, the first report stands); the readiness, final and failure reports are logged
    (the coordinator completes or fails the job from the SuperLink's state). 409 for a job
    that is finished or not started; 400 when malformed.

    Locks the job row, then its datasets.
    """
    if not isinstance(payload, dict):
        raise _bad("the body must be a JSON object.")
    try:
        return _progress_record(job, payload)
    except ConflictError as err:
        if err.code == "round_conflict":  # outside the rolled-back transaction: it stays
            job_event(
                job=job,
                kind="round_conflict",
                level=JobEvent.Level.ERROR,
                message=f"A conflicting progress report was refused: {err.message}",
                data=dict(err.details or {}),
            )
        raise


@transaction.atomic
def _progress_record(job: FederatedJob, payload: dict[str, Any]) -> JobRound | None:
    locked = FederatedJob.objects.select_for_update().get(pk=job.pk)
    sent_id = payload.get("job-id")
    if sent_id not in (None, "") and str(sent_id) != locked.flower_job_id:
        raise ApplicationError(
            f"This report is for {sent_id}, not {locked.flower_job_id}.", code="wrong_job"
        )
    if locked.state not in RECORDING_STATES:
        raise ConflictError(
            f"The job is {locked.state}; it takes no more reports.",
            code="job_not_running",
            details={"state": locked.state},
        )
    status = payload.get("status", "running")
    if status == "running":
        return _record_round(locked, payload)
    if status == "preparing":
        failed = _prepare_failures(payload.get("prepare"))
        for node, reason in failed.items():
            text = str(reason)[:500]
            hostile = text.startswith("dataset_not_owned")
            job_event(
                job=locked,
                kind="reply_rejected" if hostile else "node_not_ready",
                level=JobEvent.Level.ERROR if hostile else JobEvent.Level.WARNING,
                message=f"Before round 1: node {node} left out: {text}",
                data={"node": node, "reason": text},
            )
        return None
    if status == "completed":
        job_event(
            job=locked,
            kind="server_completed",
            message="The ServerApp finished every round and saved the LoRA.",
        )
        return None
    if status == "withheld":  # counts only: a node never says which image or how similar
        check = payload.get("release-check")
        check = check if isinstance(check, dict) else {}
        vetoed, asked = check.get("vetoed"), check.get("asked")
        counted = isinstance(vetoed, int) and isinstance(asked, int)
        job_event(
            job=locked,
            kind="server_withheld",
            level=JobEvent.Level.WARNING,
            message=(
                f"The release check: {vetoed if counted else 'a'} of "
                f"{asked if counted else 'the'} nodes vetoed the release; the LoRA was not "
                "exported."
            ),
        )
        return None
    if status == "failed":
        reason = str(payload.get("reason", ""))[:2000]
        job_event(
            job=locked,
            kind="server_failed",
            level=JobEvent.Level.ERROR,
            message=f"The ServerApp failed: {reason}",
            data={"reason": reason},
        )
        return None
    raise _bad(f"unknown status {str(status)[:40]!r}.")
