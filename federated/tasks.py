"""Celery tasks of federated jobs: thin, they call ``federated.coordinator`` and enqueue the
step it answers (``job_start`` -> ``job_watch`` -> ... with countdowns, one chain per job).

``jobs_reconcile`` runs when a worker is ready (taking over every job: chains that lived on a
worker that died hold messages nobody will run soon) and periodically from beat
(``CELERY_BEAT_SCHEDULE`` in settings; only jobs whose chain has lapsed).
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.db import InterfaceError, OperationalError

from federated import coordinator
from federated.engine.superlink import SuperLinkUnavailable
from federated.services import nodes as node_services

log = logging.getLogger(__name__)
_DB_TROUBLE = (OperationalError, InterfaceError)


def _follow(job_id: int, step: coordinator.Step) -> None:
    """Enqueue the coordinator's next step (never in eager mode: it would recurse at once)."""
    if step.task is None:
        return
    task = job_start if step.task == "job_start" else job_watch
    if task.app.conf.task_always_eager:
        log.info("job %s: eager mode, not scheduling %s", job_id, step.task)
        return
    task.apply_async(
        args=(job_id,),
        kwargs={"lease": step.lease, "attempt": step.attempt},
        countdown=step.countdown,
    )


@shared_task(
    name="federated.tasks.job_start",
    acks_late=True,
    autoretry_for=_DB_TROUBLE,
    retry_backoff=True,
    max_retries=8,
)
def job_start(job_id: int, lease: str = "", attempt: int = 0) -> None:
    _follow(job_id, coordinator.job_start(job_id=job_id, lease=lease, attempt=attempt))


@shared_task(
    name="federated.tasks.job_watch",
    acks_late=True,
    autoretry_for=_DB_TROUBLE,
    retry_backoff=True,
    max_retries=8,
)
def job_watch(job_id: int, lease: str = "", attempt: int = 0) -> None:
    _follow(job_id, coordinator.job_watch(job_id=job_id, lease=lease, attempt=attempt))


@shared_task(
    name="federated.tasks.job_stop",
    acks_late=True,
    autoretry_for=(SuperLinkUnavailable, *_DB_TROUBLE),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=50,
)
def job_stop(job_id: int) -> bool:
    return coordinator.job_stop(job_id=job_id)


@shared_task(name="federated.tasks.jobs_reconcile", acks_late=True)
def jobs_reconcile(take_over: bool = False) -> list[int]:
    steps = coordinator.jobs_reconcile(take_over=take_over)
    for job_id, step in steps:
        _follow(job_id, step)
    return [job_id for job_id, _ in steps]


@worker_ready.connect
def _reconcile_on_worker_ready(**_: object) -> None:
    """A worker (re)started: every queued, running or publishing job gets a driver again."""
    try:
        jobs_reconcile.apply_async(kwargs={"take_over": True})
        nodes_superlink_reconcile.apply_async()
    except Exception:  # the broker is down: beat's periodic reconcile will do it
        log.exception("could not enqueue the federated reconciles at worker start")


# --- node keys on the SuperLink (SuperNode authentication) -------------------------------------


@shared_task(
    name="federated.tasks.node_superlink_register",
    acks_late=True,
    autoretry_for=(SuperLinkUnavailable, *_DB_TROUBLE),
    retry_backoff=2,
    retry_backoff_max=300,
    max_retries=50,
)
def node_superlink_register(node_id: int) -> str:
    return node_services.node_superlink_register(node_id=node_id).superlink_node_id


@shared_task(
    name="federated.tasks.node_superlink_unregister",
    acks_late=True,
    autoretry_for=(SuperLinkUnavailable, *_DB_TROUBLE),
    retry_backoff=2,
    retry_backoff_max=300,
    max_retries=50,
)
def node_superlink_unregister(node_id: int) -> bool:
    node = node_services.node_superlink_unregister(node_id=node_id)
    return node.superlink_unregistered_at is not None


@shared_task(name="federated.tasks.nodes_superlink_reconcile", acks_late=True)
def nodes_superlink_reconcile() -> list[int]:
    return node_services.nodes_superlink_reconcile()
