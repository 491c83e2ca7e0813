"""Enqueue a Celery task once the transaction commits: the one way services send work.

Services name a task by its Celery name (``"registry.tasks.convert_pickle_file"``), never by
importing a ``tasks`` module: the tasks import the services they call, so the services
importing them back would make a cycle. :func:`enqueue_on_commit` finds the task in Celery's
registry (importing its module by name the first time, so eager mode and the task's own options
still apply), or sends the message by name when the module is not there.

One behaviour when the broker is down: the row is already committed, so the request does not
fail. The error is logged with the task's name and arguments, and ``on_failure`` runs: a
service whose row a periodic task picks up again (federated jobs and node keys:
``jobs_reconcile``, ``nodes_superlink_reconcile``) passes none; a service whose row nothing
would pick up (a conversion, a generation) marks it failed there, with a message the user reads,
so that it never shows "queued" forever and can be asked for again.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence

from celery import Task, current_app
from django.db import transaction

__all__ = ["enqueue_on_commit"]

log = logging.getLogger(__name__)


def _registered(name: str) -> Task | None:
    """The task called ``name`` in Celery's registry, importing its module by name if needed."""
    task = current_app.tasks.get(name)
    if task is None:
        module = name.rpartition(".")[0]
        try:
            importlib.import_module(module)
        except ImportError:
            return None
        task = current_app.tasks.get(name)
    return task


def _send(
    name: str, args: Sequence[object], kwargs: Mapping[str, object], queue: str | None
) -> None:
    options = {"queue": queue} if queue else {}
    task = _registered(name)
    if task is not None:
        task.apply_async(args=list(args), kwargs=dict(kwargs), **options)
    else:  # not importable here: a worker that knows the name runs it
        current_app.send_task(name, args=list(args), kwargs=dict(kwargs), **options)


def enqueue_on_commit(
    task_name: str,
    *,
    args: Sequence[object] = (),
    kwargs: Mapping[str, object] | None = None,
    queue: str | None = None,
    on_failure: Callable[[Exception], None] | None = None,
) -> None:
    """Send the task ``task_name`` with ``args`` and ``kwargs`` once the current transaction
    commits (at once outside one), to ``queue`` or the default queue.

    Never raises: if the message cannot be sent (the broker is down), the error is logged as
    ``could not enqueue <task_name>(<args>)`` and ``on_failure(error)`` is called.
    """
    arguments = tuple(args)
    keywords = dict(kwargs or {})

    def send() -> None:
        try:
            _send(task_name, arguments, keywords, queue)
        except Exception as exc:  # the row is committed: say so on it, not as a 500
            shown = ", ".join([*map(repr, arguments), *(f"{k}={v!r}" for k, v in keywords.items())])
            log.exception("could not enqueue %s(%s)", task_name, shown)
            if on_failure is not None:
                on_failure(exc)

    transaction.on_commit(send)
