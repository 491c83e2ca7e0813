"""Celery tasks of the studio: thin, each loads by id and calls one service."""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from studio.limits import generation_time_limit
from studio.services.generations import generation_fail, generation_run

_SOFT_LIMIT = generation_time_limit()


@shared_task(acks_late=True, soft_time_limit=_SOFT_LIMIT, time_limit=_SOFT_LIMIT + 30)
def generation_run_task(generation_id: int) -> str:
    """Make the image of one generation; a redelivered task finds it finished and stops."""
    try:
        return generation_run(generation_id=generation_id).status
    except SoftTimeLimitExceeded:
        generation_fail(
            generation_id=generation_id,
            code="timeout",
            message=f"The generation took longer than {_SOFT_LIMIT} s and was stopped.",
        )
        return "failed"
    except Exception as exc:
        generation_fail(
            generation_id=generation_id,
            code="worker_error",
            message=f"The worker failed: {type(exc).__name__}.",
        )
        raise
