"""The coordinator: drives each federated job's Flower run on the SuperLink.

``federated.tasks`` are its thin Celery interface; every state change goes through
``federated.services.jobs``. Each function here answers with the :class:`Step` to take next
(which task, after how long); the task enqueues it.

Idempotent by construction, so a task that runs twice (redelivered after a worker died) does
its work once:

- Launch. Under the launch lock (one launch at a time, across workers on this host/share) a
  marker file records when ``flwr run`` was called and then the run id it answered, before
  ``job_mark_running`` records it in the database. A retry first looks for that run: the
  marker's run id, or, when the worker died before reading the answer, the one run the
  SuperLink received after the marker that no job claims. Only then does it issue fresh
  tokens (``job_run_config``) and start a run.
- One driver per job. A job is driven by one chain of tasks at a time (start, then watch
  every ``ATELIER_JOB_POLL_SECONDS``). The chain holds a lease, a token in a file that expires
  unless the chain renews it; a task whose token is no longer the lease's drops out, so a
  message redelivered late, or a chain started by ``jobs_reconcile``, never doubles the work.
- Reconcile. ``jobs_reconcile`` (at worker start, taking over every lease, and periodically,
  taking only expired ones) starts a chain for every queued, running or publishing job.
- Finishing. ``job_complete`` / ``job_fail`` publish and pay once (fed-core's services lock
  the job and leave terminal jobs alone).

State files live in ``ATELIER_FEDERATION_DIR/.coordinator/`` (the out-dirs' parent, which the
workers share with the SuperLink host).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import secrets
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from django.conf import settings
from django.utils import timezone

from core.errors import ApplicationError
from federated.connection import superlink_connection
from federated.engine.superlink import (
    APP_DIR,
    Connection,
    InvalidRunConfig,
    RunNotFound,
    RunStatus,
    SuperLinkError,
    SuperLinkUnavailable,
    run_start,
    run_status,
    run_stop,
    runs_list,
)
from federated.models import FederatedJob, JobEvent
from federated.selectors import jobs_to_reconcile
from federated.services.events import job_event
from federated.services.jobs import (
    job_complete,
    job_fail,
    job_mark_running,
    job_progress_record,
    job_run_config,
    job_run_resume,
)
from federated.services.release import job_withhold, run_release_withheld

__all__ = [
    "Step",
    "job_start",
    "job_stop",
    "job_watch",
    "jobs_reconcile",
    "superlink_connection",
]

log = logging.getLogger(__name__)
State = FederatedJob.State
BACKOFF_CAP_SECONDS = 300.0
PENDING_AT_SLACK_SECONDS = 2.0  # clock skew between this host and the SuperLink's, and rounding
MAX_RESUMES = 3  # new runs for one job after lost ones; then the job fails
# Flower's details for a run whose ServerApp stopped sending heartbeats: it was lost with its
# process (the SuperLink restarted, its host went down), not failed by the app itself.
LOST_RUN_DETAILS = "No heartbeat received"
RESUME_WAIT_FOR_NODES_SECONDS = 300.0


StepTask = Literal["job_start", "job_watch"]


@dataclass(frozen=True)
class Step:
    """What to do next: run ``task`` after ``countdown`` seconds (None: nothing, done)."""

    task: StepTask | None = None
    countdown: float = 0.0
    lease: str = ""
    attempt: int = 0

    @property
    def done(self) -> bool:
        return self.task is None


DONE = Step()


# --- settings ----------------------------------------------------------------------------------


def _poll_seconds() -> float:
    return max(0.5, float(settings.ATELIER_JOB_POLL_SECONDS))


def _backoff(attempt: int) -> float:
    """Poll interval x 2^attempt, at most five minutes."""
    return min(_poll_seconds() * 2 ** min(attempt, 16), BACKOFF_CAP_SECONDS)


def _state_dir() -> Path:
    path = Path(settings.ATELIER_FEDERATION_DIR) / ".coordinator"
    path.mkdir(parents=True, exist_ok=True)
    return path


@cache
def _app_fab_id() -> str:
    """``publisher/name`` of the Flower app, as ``flwr ls`` shows it."""
    project = tomllib.loads((APP_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    return f"{project['tool']['flwr']['app']['publisher']}/{project['project']['name']}"


# --- state files: leases and launch markers ------------------------------------------------------


@contextmanager
def _locked(path: Path) -> Iterator[int]:
    """An exclusive ``flock`` on ``path`` (created if missing); the kernel drops it if we die."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_json(fd: int) -> dict[str, object]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        data = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(fd: int, data: dict[str, object]) -> None:
    raw = json.dumps(data).encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, raw)
    os.fsync(fd)


def _lease_path(job_id: int) -> Path:
    return _state_dir() / f"job-{job_id}.lease"


def lease_take(job_id: int, token: str, *, ttl: float, force: bool = False) -> str | None:
    """Hold the job's driver lease for ``ttl`` seconds; the token that holds it, or None.

    ``token`` given: renew it if it still holds the lease (None if another chain took over).
    ``token`` empty: a new token if the lease is free or expired (or ``force``), else None.
    """
    with _locked(_lease_path(job_id)) as fd:
        current = _read_json(fd)
        now = time.time()
        holder = str(current.get("token", ""))
        expired = float(current.get("expires", 0) or 0) <= now  # type: ignore[arg-type]
        if token:
            if holder != token:
                return None
        elif holder and not expired and not force:
            return None
        else:
            token = secrets.token_hex(8)
        _write_json(fd, {"token": token, "expires": now + ttl})
        return token


def lease_release(job_id: int, token: str) -> None:
    """Let the lease go (the chain is done) if ``token`` still holds it."""
    with _locked(_lease_path(job_id)) as fd:
        if _read_json(fd).get("token") == token:
            _write_json(fd, {})


def _lease_ttl(countdown: float) -> float:
    return countdown + max(60.0, 3 * _poll_seconds())


@dataclass
class _Marker:
    """``job-N.launch.json``: when ``flwr run`` was called for the job, and what it answered."""

    path: Path

    def read(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, **data: object) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _marker(job_id: int) -> _Marker:
    return _Marker(_state_dir() / f"job-{job_id}.launch.json")


# --- events ------------------------------------------------------------------------------------


def _event_once(job: FederatedJob, *, kind: str, message: str, level: str) -> None:
    """Log an event unless the job's latest one is of this kind already (no line per retry)."""
    if job.events.order_by("-pk").values_list("kind", flat=True).first() != kind:
        job_event(job=job, kind=kind, message=message, level=level)


def _superlink_trouble(job: FederatedJob, exc: SuperLinkError) -> None:
    unavailable = isinstance(exc, SuperLinkUnavailable)
    _event_once(
        job,
        kind="superlink_unavailable" if unavailable else "superlink_error",
        message=(
            f"The SuperLink cannot be reached ({exc.message}); retrying."
            if unavailable
            else f"The SuperLink answered with an error ({exc.message}); retrying."
        ),
        level=JobEvent.Level.WARNING,
    )


def _deadline_passed(job: FederatedJob) -> bool:
    return job.deadline_at is not None and timezone.now() >= job.deadline_at


# --- launch ------------------------------------------------------------------------------------


def _find_launched_run(job: FederatedJob, connection: Connection) -> str | None:
    """The run an earlier attempt started for this job and did not record, if any."""
    marker = _marker(job.pk)
    data = marker.read()
    if not data:
        return None
    run_id = str(data.get("run-id") or "")
    if run_id:
        try:
            run_status(run_id, connection)
            return run_id
        except RunNotFound:
            marker.clear()
            return None
    # The worker died between `flwr run` and reading its answer: the run, if the SuperLink got
    # it, arrived after the marker, belongs to no job, and is our app's. Launches are serial.
    started = float(data.get("started-at", 0) or 0)  # type: ignore[arg-type]
    until = started + connection.timeout + PENDING_AT_SLACK_SECONDS
    claimed = set(FederatedJob.objects.exclude(run_id="").values_list("run_id", flat=True))
    found: list[RunStatus] = [
        run
        for run in runs_list(connection)
        if run.run_id not in claimed
        and run.fab_id == _app_fab_id()
        and run.pending_at is not None
        and math.floor(started - PENDING_AT_SLACK_SECONDS) <= run.pending_at.timestamp() <= until
    ]
    if not found:
        marker.clear()
        return None
    found.sort(key=lambda run: (run.pending_at or timezone.now(), run.run_id))
    if len(found) > 1:
        log.warning(
            "job %s: %d unclaimed runs after its launch; taking %s",
            job.pk,
            len(found),
            found[0].run_id,
        )
    marker.write(**{**data, "run-id": found[0].run_id})
    job_event(
        job=job,
        kind="run_recovered",
        message=(
            f"Found Flower run {found[0].run_id}, started by an attempt that did not record it."
        ),
    )
    return found[0].run_id


@contextmanager
def _launch_lock() -> Iterator[None]:
    with _locked(_state_dir() / "launch.lock"):
        yield


def _launch(
    job: FederatedJob, connection: Connection, *, resume: bool = False, resume_from: str = ""
) -> str | None:
    """Start the job's run, or find the one already started: its run id, or None when the
    job left the queue (cancelled meanwhile) or the SuperLink refused its config (failed).
    ``resume``: the run replaces a lost one; ``resume_from``: a folder with the ServerApp's
    ``state.json`` to continue from."""
    run_id = _find_launched_run(job, connection)
    if run_id:
        return run_id
    try:
        config = job_run_config(job=job)  # commits fresh tokens before the run can use them
    except ApplicationError:
        job.refresh_from_db()
        if job.state == State.QUEUED:
            raise
        return None
    Path(str(config["out-dir"])).mkdir(parents=True, exist_ok=True)
    if resume or resume_from:
        if resume_from:
            config["resume-from"] = resume_from
        # After a SuperLink restart the nodes come back once the SuperLink sees their old
        # sessions expire (Flower: a few heartbeat intervals): give them that long.
        waited = config.get("wait-for-nodes")
        waited = float(waited) if isinstance(waited, int | float) else 0.0
        config["wait-for-nodes"] = max(waited, RESUME_WAIT_FOR_NODES_SECONDS)
    marker = _marker(job.pk)
    # Kept whatever happens next, until the run id is in the database: a retry that finds it
    # looks for the run before starting another.
    marker.write(**{"started-at": time.time(), "run-id": ""})
    try:
        run_id = run_start(APP_DIR, connection, config)
    except InvalidRunConfig as exc:
        marker.clear()
        job_fail(job=job, reason=f"The SuperLink refused the run config: {exc.message}")
        return None
    marker.write(**{**marker.read(), "run-id": run_id})
    return run_id


def _stop_unrecorded_run(job: FederatedJob, connection: Connection) -> None:
    """A job that left the queue while its run was being started: stop that run."""
    marker = _marker(job.pk)
    run_id = str(marker.read().get("run-id") or "")
    if run_id and run_id != job.run_id:
        try:
            if run_stop(run_id, connection):  # SuperLinkUnavailable: the marker stays, retry
                job_event(
                    job=job,
                    kind="run_stopped",
                    message=f"Flower run {run_id} was stopped (the job is {job.state}).",
                )
        except RunNotFound:
            pass
    marker.clear()


def job_start(*, job_id: int, lease: str = "", attempt: int = 0) -> Step:
    """Start a queued job's run and hand over to ``job_watch``; retry while the SuperLink is
    away or erring (the job stays queued, an event says why)."""
    connection = superlink_connection()
    if connection is None:
        job = FederatedJob.objects.get(pk=job_id)
        if job.state == State.QUEUED:
            _event_once(
                job,
                kind="no_superlink",
                level=JobEvent.Level.WARNING,
                message=(
                    "No SuperLink is configured (ATELIER_SUPERLINK); the job waits in the queue."
                ),
            )
        return DONE
    token = lease_take(job_id, lease, ttl=_lease_ttl(_backoff(attempt)))
    if token is None:
        return DONE  # another chain drives this job
    job = FederatedJob.objects.get(pk=job_id)
    try:
        return _start(job, token, connection)
    except SuperLinkError as exc:
        _superlink_trouble(job, exc)
        return _again("job_start", job_id, token, attempt)


def _start(job: FederatedJob, token: str, connection: Connection) -> Step:
    if job.state != State.QUEUED:
        return _next_for(job, token, connection)
    if _deadline_passed(job):
        job_fail(job=job, reason="The deadline passed before the run could start.")
        return _done(job.pk, token)
    with _launch_lock():
        job.refresh_from_db()
        if job.state != State.QUEUED:
            return _next_for(job, token, connection)
        run_id = _launch(job, connection)
        if run_id is None:
            job.refresh_from_db()
            return _next_for(job, token, connection)
        try:
            job_mark_running(job=job, run_id=run_id)
        except ApplicationError:
            job.refresh_from_db()
            if not job.is_terminal:
                raise
            return _next_for(job, token, connection)  # cancelled meanwhile: stop the run
        _marker(job.pk).clear()
    log.info("job %s: Flower run %s started", job.pk, run_id)
    return _continue("job_watch", job.pk, token, _poll_seconds())


# --- watch -------------------------------------------------------------------------------------


def _rounds_written(out_dir: Path) -> list[dict[str, object]]:
    """The rounds the ServerApp saved: ``metrics.json`` (at the end), else ``state.json``."""
    for name, keys in (("metrics.json", ("rounds",)), ("state.json", ("history", "rounds"))):
        try:
            data: object = json.loads((out_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for key in keys:
            data = data.get(key) if isinstance(data, dict) else None
        if isinstance(data, list):
            return [r for r in data if isinstance(r, dict)]
    return []


def _replay_rounds(job: FederatedJob) -> None:
    """Record every round the ServerApp saved, in case its progress report never reached the
    site (the site was down, a POST failed): what owners are paid and the privacy ledger come
    from the rounds. Idempotent by round; rounds that failed (no examples counted) are not
    rounds completed."""
    for record in _rounds_written(Path(job.out_dir)) if job.out_dir else []:
        if "num-examples" not in record:
            continue
        payload = {**record, "job-id": job.flower_job_id, "status": "running"}
        try:
            job_progress_record(job=job, payload=payload)
        except ApplicationError as exc:
            log.warning(
                "job %s: round %s not replayed: %s", job.pk, record.get("round"), exc.message
            )


def _finish_run(job: FederatedJob, status: RunStatus) -> None:
    _replay_rounds(job)
    withheld = run_release_withheld(Path(job.out_dir)) if status.completed else None
    if withheld is not None:  # a data owner's node vetoed the release: nothing is published
        job_withhold(job=job, out_dir=Path(job.out_dir), report=withheld)
    elif status.completed:
        job_complete(job=job, out_dir=Path(job.out_dir))
    elif status.failed:
        job_fail(job=job, reason=f"The Flower run failed: {status.details or 'no details'}")
    else:
        job_fail(job=job, reason=f"The Flower run ended as {status.status} on the SuperLink.")


def job_watch(*, job_id: int, lease: str = "", attempt: int = 0) -> Step:
    """Check a running job's run: finish it (complete or fail, once), stop it past its
    deadline, or look again in ``ATELIER_JOB_POLL_SECONDS``."""
    connection = superlink_connection()
    if connection is None:
        return DONE
    token = lease_take(job_id, lease, ttl=_lease_ttl(max(_poll_seconds(), _backoff(attempt))))
    if token is None:
        return DONE
    job = FederatedJob.objects.get(pk=job_id)
    try:
        return _watch(job, token, connection)
    except RunNotFound:
        try:
            step = _resume(job, token, connection)
        except SuperLinkError as exc:
            _superlink_trouble(job, exc)
            return _again("job_watch", job_id, token, attempt)
        if step is not None:
            return step
        _replay_rounds(job)
        job_fail(job=job, reason=f"The SuperLink has no run {job.run_id} (its state was lost).")
        return _done(job_id, token)
    except SuperLinkError as exc:
        _superlink_trouble(job, exc)
        return _again("job_watch", job_id, token, attempt)


def _watch(job: FederatedJob, token: str, connection: Connection) -> Step:
    if job.state == State.PUBLISHING:  # a crash mid-publish: finish it
        job_complete(job=job, out_dir=Path(job.out_dir))
        return _done(job.pk, token)
    if job.state != State.RUNNING:
        return _next_for(job, token, connection)
    status = run_status(job.run_id, connection)
    if status.failed and LOST_RUN_DETAILS in status.details:
        step = _resume(job, token, connection)
        if step is not None:
            return step
    if status.finished:
        _finish_run(job, status)
        return _done(job.pk, token)
    if _deadline_passed(job):
        run_stop(job.run_id, connection)
        _replay_rounds(job)
        job_fail(
            job=job,
            reason=(
                f"The deadline passed ({job.deadline_at:%Y-%m-%d %H:%M} UTC); the run was stopped."
            ),
        )
        return _done(job.pk, token)
    return _continue("job_watch", job.pk, token, _poll_seconds())


# --- resume ------------------------------------------------------------------------------------


def _last_saved_round(out_dir: Path) -> int:
    """The last round the ServerApp saved in ``state.json`` (0: none)."""
    try:
        state = json.loads((out_dir / "state.json").read_text(encoding="utf-8"))
        return int(state["last-round"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _resume(job: FederatedJob, token: str, connection: Connection) -> Step | None:
    """The job's run was lost with the SuperLink (no heartbeat from its ServerApp, or a
    SuperLink that forgot it): a new run goes on from the last saved round in the same
    out-dir (``resume-from``), so every round is trained and paid once. None when the job
    may not resume (SecAgg+, which cannot resume; past its deadline; resumed
    ``MAX_RESUMES`` times already): the caller fails it as before."""
    if (job.config or {}).get("aggregation", "fedavg") != "fedavg" or _deadline_passed(job):
        return None
    if job.events.filter(kind="run_resumed").count() >= MAX_RESUMES or not job.out_dir:
        return None
    lost = job.run_id
    _replay_rounds(job)  # what the site may have missed before the run was lost
    with _launch_lock():
        job.refresh_from_db()
        if job.state != State.RUNNING or job.run_id != lost:
            return _next_for(job, token, connection)
        saved = _last_saved_round(Path(job.out_dir))
        run_id = _launch(job, connection, resume=True, resume_from=job.out_dir if saved else "")
        if run_id is None:
            job.refresh_from_db()
            return _next_for(job, token, connection)
        job_run_resume(job=job, run_id=run_id, previous_run_id=lost, from_round=saved)
        _marker(job.pk).clear()
    log.info(
        "job %s: Flower run %s lost; run %s resumes after round %d", job.pk, lost, run_id, saved
    )
    return _continue("job_watch", job.pk, token, _poll_seconds())


# --- stop --------------------------------------------------------------------------------------


def job_stop(*, job_id: int) -> bool:
    """Stop the run of a cancelled (or failed) job; True if a run was stopped.

    :class:`SuperLinkUnavailable` propagates: the task retries it.
    """
    job = FederatedJob.objects.get(pk=job_id)
    connection = superlink_connection()
    run_id = job.run_id or str(_marker(job_id).read().get("run-id") or "")
    if not job.is_terminal or not run_id or connection is None:
        return False
    try:
        stopped = run_stop(run_id, connection)
    except RunNotFound:
        return False
    if stopped:
        job_event(job=job, kind="run_stopped", message=f"Flower run {run_id} was stopped.")
    return stopped


# --- reconcile ---------------------------------------------------------------------------------


def jobs_reconcile(*, take_over: bool = False) -> list[tuple[int, Step]]:
    """A driver chain for every queued, running or publishing job that has none.

    ``take_over`` (at worker start): take every lease, also live ones; the chains that held
    them drop out at their next step (their messages may sit unacknowledged with a dead
    worker for a long time). The steps to enqueue, by job id.
    """
    steps: list[tuple[int, Step]] = []
    if superlink_connection() is None:
        return steps
    for job in jobs_to_reconcile():
        token = lease_take(job.pk, "", ttl=_lease_ttl(0), force=take_over)
        if token is None:
            continue
        task: StepTask = "job_start" if job.state == State.QUEUED else "job_watch"
        steps.append((job.pk, Step(task=task, lease=token)))
    return steps


# --- steps -------------------------------------------------------------------------------------


def _continue(task: StepTask, job_id: int, token: str, countdown: float, attempt: int = 0) -> Step:
    if lease_take(job_id, token, ttl=_lease_ttl(countdown)) is None:
        return DONE  # another chain took over meanwhile
    return Step(task=task, countdown=countdown, lease=token, attempt=attempt)


def _again(task: StepTask, job_id: int, token: str, attempt: int) -> Step:
    return _continue(task, job_id, token, _backoff(attempt), attempt + 1)


def _done(job_id: int, token: str) -> Step:
    lease_release(job_id, token)
    return DONE


def _next_for(job: FederatedJob, token: str, connection: Connection) -> Step:
    """A job found in another state than the task expected: the step that state needs."""
    if job.state == State.QUEUED:
        return _continue("job_start", job.pk, token, 0.0)
    if job.state in (State.RUNNING, State.PUBLISHING):
        return _continue("job_watch", job.pk, token, 0.0)
    _stop_unrecorded_run(job, connection)
    return _done(job.pk, token)
