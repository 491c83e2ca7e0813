"""Fault: Redis (the Celery broker) is down when a trainer launches a federated job.

A Redis server of this test's own on a free loopback port stands for the broker; the Celery
app is pointed at it, the server is stopped, and the job is launched. The launch must not
fail half-way: the job is saved as queued with its escrow held once, the lost message is
logged, and once Redis is back the coordinator's reconcile enqueues the job's start, once.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from federated.models import FederatedJob
from tests.support import RedisServer, drop_broker_connections

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")
QUEUE = "broker-down-test"


@pytest.fixture
def broker(tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """The Celery app publishes to a Redis of this test's own, on a queue of its own."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    from celery import current_app

    server = RedisServer(tmp_path)
    server.start()
    conf = current_app.conf
    old = (conf.broker_url, conf.task_default_queue, conf.broker_connection_retry_on_startup)
    conf.broker_url, conf.task_default_queue = server.url, QUEUE
    monkeypatch.setenv("CELERY_BROKER_URL", server.url)  # Celery reads it before the conf
    settings.ATELIER_SUPERLINK = "127.0.0.1:1"  # configured (its state does not matter here)
    settings.ATELIER_FEDERATION_DIR = tmp_path / "federation"
    drop_broker_connections(current_app)  # pooled connections to the suite's broker
    try:
        yield server
    finally:
        server.stop()
        conf.broker_url, conf.task_default_queue, conf.broker_connection_retry_on_startup = old
        drop_broker_connections(current_app)


def _queued(server: RedisServer) -> list[str]:
    raw = redis.Redis.from_url(server.url).lrange(QUEUE, 0, -1)
    return [json.loads(m)["headers"]["task"] for m in raw]


def test_a_job_launched_while_redis_is_down_is_held_once_and_starts_when_redis_returns(
    broker: RedisServer,
    fed: Any,
    django_capture_on_commit_callbacks: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from federated.tasks import jobs_reconcile
    from marketplace.models import EscrowHold
    from marketplace.selectors import wallet_balance

    # Given a trainer with credits and a priced private dataset, and Redis stopped
    trainer = fed.user("trainer", credits=10_000)
    base = fed.base_version(fed.user("creator"))
    dataset = fed.dataset(fed.user("owner"), count=10, price_per_example_round=2)
    broker.stop()

    # When the trainer launches a job
    with (
        caplog.at_level(logging.ERROR, logger="core.tasks"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        job = fed.launch(trainer, fed.spec(base, [dataset]), key="while-redis-is-down")

    # Then the launch is kept: queued, its maximum cost held once, the lost message logged
    job.refresh_from_db()
    assert job.state == FederatedJob.State.QUEUED
    assert EscrowHold.objects.filter(pk=job.escrow_id).count() == 1
    assert wallet_balance(user=trainer) == 10_000 - job.max_cost > 0
    assert "could not enqueue federated.tasks.job_start" in caplog.text

    # When Redis returns and the periodic reconcile runs
    broker.start()
    assert _queued(broker) == []
    started = jobs_reconcile.apply().get()

    # Then the job's start is enqueued, once, and nothing more was charged
    assert started == [job.pk]
    assert _queued(broker) == ["federated.tasks.job_start"]
    assert jobs_reconcile.apply().get() == []  # its driver holds the lease: not twice
    assert _queued(broker) == ["federated.tasks.job_start"]
    assert wallet_balance(user=trainer) == 10_000 - job.max_cost
