"""The job log: lines shown on the job page."""

from __future__ import annotations

from typing import Any

from federated.models import FederatedJob, JobEvent


def job_event(
    *,
    job: FederatedJob,
    kind: str,
    message: str,
    level: str = JobEvent.Level.INFO,
    data: dict[str, Any] | None = None,
) -> JobEvent:
    return JobEvent.objects.create(
        job=job, kind=kind[:40], message=message[:4000], level=level, data=data or {}
    )
