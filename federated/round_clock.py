"""The clock of a running job's round: how long the round under way has taken so far, and an
estimate of the time left from the rounds before (shown on the live job page).

A round's duration is the time between two rounds' reports (the first: from the job's start,
so it includes the ServerApp's start and the nodes' preparation). The estimate per round is the
median of the rounds after the first when there are some (a SuperLink restart, a slow first
round do not skew it), else the first round's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from federated.models import FederatedJob, JobRound

__all__ = ["RoundClock", "job_round_clock", "round_clock"]


def _duration_text(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class RoundClock:
    """The round under way (1-based), its elapsed seconds, and the estimate, if any."""

    round: int
    rounds_total: int
    elapsed_seconds: float
    per_round_seconds: float | None
    remaining_seconds: float | None
    eta: datetime | None

    @property
    def elapsed_text(self) -> str:
        return _duration_text(self.elapsed_seconds)

    @property
    def remaining_text(self) -> str:
        return "" if self.remaining_seconds is None else _duration_text(self.remaining_seconds)


def round_clock(
    *, started_at: datetime, reported_at: Sequence[datetime], rounds_total: int, now: datetime
) -> RoundClock | None:
    """The clock from the job's start and its rounds' report times (in round order); None
    when every round is reported (the job is finishing)."""
    current = len(reported_at) + 1
    if current > rounds_total:
        return None
    marks = [started_at, *reported_at]
    durations = [max(0.0, (b - a).total_seconds()) for a, b in zip(marks, marks[1:], strict=False)]
    elapsed = max(0.0, (now - marks[-1]).total_seconds())
    if not durations:
        return RoundClock(current, rounds_total, elapsed, None, None, None)
    per_round = statistics.median(durations[1:]) if len(durations) > 1 else durations[0]
    remaining = max(per_round - elapsed, 0.0) + per_round * (rounds_total - current)
    return RoundClock(
        current, rounds_total, elapsed, per_round, remaining, now + timedelta(seconds=remaining)
    )


def job_round_clock(*, job: FederatedJob, now: datetime | None = None) -> RoundClock | None:
    """The clock of a running job (None for any other state, or before it started)."""
    if job.state != FederatedJob.State.RUNNING or job.started_at is None:
        return None
    # job.rounds.all(): the job page prefetched them (no query of its own)
    rounds: list[JobRound] = sorted(job.rounds.all(), key=lambda r: r.index)
    reported = [r.created_at for r in rounds]
    return round_clock(
        started_at=job.started_at,
        reported_at=reported,
        rounds_total=job.num_rounds,
        now=now or timezone.now(),
    )
