"""core.tasks.enqueue_on_commit: tasks sent by name after the commit; a lost message is logged
and reported to the caller, never raised into the request."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from core.tasks import enqueue_on_commit

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of this test's own on the suite's Redis broker, emptied afterwards."""
    name = f"test-enqueue-{uuid.uuid4().hex[:8]}"
    yield name
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(name)


def _messages(queue: str) -> list[dict[str, Any]]:
    raw = redis.Redis.from_url(settings.CELERY_BROKER_URL).lrange(queue, 0, -1)
    return [json.loads(m) for m in raw]


def test_a_task_named_by_a_string_is_sent_only_once_the_transaction_commits(
    queue: str, django_capture_on_commit_callbacks: Any
) -> None:
    # Given a transaction that enqueues the conversion task by its name
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        enqueue_on_commit("registry.tasks.convert_pickle_file", args=[41], queue=queue)
        # Then nothing is sent before the commit
        assert _messages(queue) == []

    # When it commits
    for callback in callbacks:
        callback()

    # Then one message for that task and its arguments waits in the queue
    messages = _messages(queue)
    assert [m["headers"]["task"] for m in messages] == ["registry.tasks.convert_pickle_file"]
    assert messages[0]["headers"]["argsrepr"] == "[41]"


def test_a_task_no_module_here_defines_is_still_sent_by_its_name(
    queue: str, django_capture_on_commit_callbacks: Any
) -> None:
    # When a task that only a worker elsewhere knows is enqueued
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_on_commit("elsewhere.tasks.render", kwargs={"size": 3}, queue=queue)

    # Then its message carries the name and the keyword arguments
    messages = _messages(queue)
    assert [m["headers"]["task"] for m in messages] == ["elsewhere.tasks.render"]
    assert messages[0]["headers"]["kwargsrepr"] == "{'size': 3}"


def test_a_message_lost_to_a_broker_that_is_down_is_logged_and_reported_not_raised(
    broker_down: str, django_capture_on_commit_callbacks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[Exception] = []

    # When a task is enqueued while the broker is down and the transaction commits
    with (
        caplog.at_level(logging.ERROR, logger="core.tasks"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        enqueue_on_commit(
            "registry.tasks.convert_pickle_file", args=[7], on_failure=failures.append
        )

    # Then nothing is raised, the task and its arguments are logged, the caller is told
    assert "could not enqueue registry.tasks.convert_pickle_file(7)" in caplog.text
    assert len(failures) == 1
    assert isinstance(failures[0], Exception)
