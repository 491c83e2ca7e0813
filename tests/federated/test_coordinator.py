"""The coordinator against real parts: a Celery worker process, a live site, a real SuperLink
(and two SuperNodes where a run must train), PostgreSQL and Redis.

- a worker killed mid-job is restarted: the job is reconciled and completes once;
- a run past its deadline is stopped and the job failed;
- a SuperLink that is down at launch: the job stays queued and says why, then starts;
- a run started by a worker that died before recording it is found, not started twice;
- a SuperLink restarted mid-run: Flower fails the run its ServerApp lost; a new run resumes
  after the last saved round, and the job completes once, paying every round once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from federated import coordinator
from federated.engine.localfed import LocalFederation, free_port
from federated.engine.superlink import APP_DIR, run_start, run_status, runs_list
from federated.models import FederatedJob, JobEvent
from tests.conftest import celery_worker_env, celery_worker_start
from tests.federated.live import (
    IMAGES,
    PRICE_PER_EXAMPLE_ROUND,
    TEST_NODE_CONFIG,
    OwnerData,
    coordinator_settings,
    list_datasets,
    load_license_catalogue,
    process_alive,
    tiny_job,
    wait_until,
)

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("fast_passwords")
State = FederatedJob.State
CREDITS = 10_000


@dataclass
class Site:
    """The site side of one test: people, the base model, the listed datasets, the worker."""

    fed: Any
    trainer: Any
    base: Any
    terms: list[Any]
    worker: subprocess.Popen[bytes]
    worker_log: Path
    settings: Any

    def launch(self, **overrides: Any) -> FederatedJob:
        return self.fed.launch(
            self.trainer, self.fed.spec(self.base, self.terms, **tiny_job(**overrides))
        )

    def job(self, job: FederatedJob) -> FederatedJob:
        return FederatedJob.objects.get(pk=job.pk)

    def log(self) -> str:
        return self.worker_log.read_text(errors="replace")[-6000:]

    def kill_worker(self) -> None:
        os.kill(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=10)

    def restart_worker(self) -> None:
        queue = self.settings.CELERY_TASK_DEFAULT_QUEUE
        self.worker = celery_worker_start(celery_worker_env(self.settings, queue), self.worker_log)

    def wait_state(self, job: FederatedJob, *states: str, timeout: float) -> FederatedJob:
        return wait_until(
            lambda: (j := self.job(job)).state in states and j,
            timeout=timeout,
            what=f"job {job.pk} in {states}",
            log=self.log,
            alive=lambda: process_alive(self.worker, "the Celery worker")(),
        )


@pytest.fixture
def make_site(
    request: pytest.FixtureRequest,
    transactional_db: None,
    live_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    tmp_path: Path,
    fed: Any,
    owners: list[OwnerData],
) -> Iterator[Callable[[str], Site]]:
    """``make_site("127.0.0.1:PORT")``: settings pointing at that SuperLink and the live
    site, then the worker (which reads them from its environment), then the data."""
    load_license_catalogue()
    started: list[Site] = []

    def make(superlink: str) -> Site:
        coordinator_settings(
            monkeypatch, settings, tmp_path, superlink=superlink, site_url=live_server.url
        )
        worker = request.getfixturevalue("celery_worker_process")
        trainer = fed.user("trainer", credits=CREDITS)
        site = Site(
            fed=fed,
            trainer=trainer,
            base=fed.base_version(fed.user("creator")),
            terms=list_datasets(fed, owners),
            worker=worker,
            worker_log=tmp_path / "celery-worker.log",
            settings=settings,
        )
        started.append(site)
        return site

    yield make
    for site in started:  # a restarted worker is not the fixture's: stop it here
        if site.worker.poll() is None:
            # A warm shutdown on a busy machine: the time the fixture's worker gets
            site.worker.terminate()
            try:
                site.worker.wait(timeout=120)
            except subprocess.TimeoutExpired:
                site.worker.kill()
                site.worker.wait()
    load_license_catalogue()


def events(job: FederatedJob, kind: str) -> list[JobEvent]:
    return list(JobEvent.objects.filter(job_id=job.pk, kind=kind))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes_once(
    make_site: Callable[[str], Site],
    federation: LocalFederation,
    ledger_checked: None,
) -> None:
    from marketplace.selectors import wallet_balance
    from registry.models import Model, ModelKind

    site = make_site(f"127.0.0.1:{federation.port}")
    job = site.launch(rounds=1)
    job = site.wait_state(job, State.RUNNING, timeout=90)
    # When the worker dies while the run goes on, and the run finishes with nobody watching
    site.kill_worker()
    final = wait_until(
        lambda: (s := run_status(job.run_id, federation.connection)).finished and s,
        timeout=300,
        what="the run finishes",
        log=lambda: federation.logs()["superlink"][-3000:],
    )
    assert final.completed, final.details
    assert site.job(job).state == State.RUNNING  # nobody has looked yet
    # Then a new worker reconciles the job from the SuperLink's state: completed once
    site.restart_worker()
    job = site.wait_state(job, State.COMPLETED, State.FAILED, timeout=120)
    assert job.state == State.COMPLETED, (job.failure_reason, site.log())
    assert job.result_version is not None and job.settled_at is not None
    assert Model.objects.filter(owner=site.trainer, kind=ModelKind.LORA).count() == 1
    assert len(events(job, "completed")) == 1 and len(events(job, "published")) == 1
    # Owners are paid for what their node trained on: 16 examples in 1 round, 2 credits each
    paid = 0
    for jd in job.datasets.select_related("dataset_version__dataset__owner"):
        assert (jd.rounds_completed, jd.example_rounds) == (1, IMAGES)
        assert jd.earned == PRICE_PER_EXAMPLE_ROUND * IMAGES
        assert wallet_balance(user=jd.dataset_version.dataset.owner) == jd.earned
        paid += jd.earned
    assert job.owners_paid == paid and job.refunded == job.max_cost - paid - job.fee_paid
    assert wallet_balance(user=site.trainer) == CREDITS - paid - job.fee_paid
    # The SuperLink counted the run's traffic and compute time
    assert final.inbound_bytes > 0 and final.outbound_bytes > 0
    assert final.serverapp_seconds > 0 and final.clientapp_seconds > 0
    # Running everything again (a redelivered task, another reconcile) changes nothing
    settlement = job.settlement_id
    assert coordinator.job_watch(job_id=job.pk).done
    assert coordinator.job_start(job_id=job.pk).done
    assert coordinator.jobs_reconcile(take_over=True) == []
    job = site.job(job)
    assert job.settlement_id == settlement and len(events(job, "completed")) == 1
    assert Model.objects.filter(owner=site.trainer, kind=ModelKind.LORA).count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_run_past_its_deadline_is_stopped_and_the_job_failed(
    make_site: Callable[[str], Site],
    tmp_path: Path,
    ledger_checked: None,
) -> None:
    from marketplace.selectors import wallet_balance

    # Given a SuperLink without nodes: the ServerApp waits for them, the run hangs
    with LocalFederation([], tmp_path / "lonely") as link:
        site = make_site(f"127.0.0.1:{link.port}")
        job = site.launch()
        FederatedJob.objects.filter(pk=job.pk).update(
            deadline_at=timezone.now() + timedelta(seconds=6)
        )
        running = site.wait_state(job, State.RUNNING, State.FAILED, timeout=60)
        assert running.run_id
        # Then past the deadline the run is stopped and the job fails, refunding everything
        job = site.wait_state(job, State.FAILED, timeout=60)
        status = run_status(job.run_id, link.connection)
    assert "deadline passed" in job.failure_reason
    assert status.status == "finished:stopped", status
    assert (job.owners_paid, job.fee_paid, job.refunded) == (0, 0, job.max_cost)
    assert wallet_balance(user=site.trainer) == CREDITS
    assert len(events(job, "failed")) == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_job_launched_while_the_superlink_is_down_waits_then_starts(
    make_site: Callable[[str], Site],
    tmp_path: Path,
    ledger_checked: None,
) -> None:
    # Given a SuperLink address where nothing listens yet
    port = free_port()
    site = make_site(f"127.0.0.1:{port}")
    job = site.launch()
    # Then the job stays queued, and says why (once, not once per retry)
    wait_until(
        lambda: events(job, "superlink_unavailable"),
        timeout=60,
        what="an event saying the SuperLink is unavailable",
        log=site.log,
    )
    assert site.job(job).state == State.QUEUED and not site.job(job).run_id
    # When the SuperLink comes up, the job starts on it
    with LocalFederation([], tmp_path / "late", port=port) as link:
        job = site.wait_state(job, State.RUNNING, timeout=60)
        assert len(events(job, "superlink_unavailable")) == 1
        assert job.run_id in {run.run_id for run in runs_list(link.connection)}
        # And cancelling it stops the run
        from federated.services.jobs import job_cancel

        job_cancel(job=job, user=site.trainer)
        wait_until(
            lambda: events(job, "run_stopped"),
            timeout=60,
            what="the cancelled job's run is stopped",
            log=site.log,
        )
        status = run_status(job.run_id, link.connection)
    assert status.status == "finished:stopped"
    assert site.job(job).state == State.CANCELLED


@pytest.mark.django_db
def test_a_run_started_by_a_worker_that_died_before_recording_it_is_not_started_twice(
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    tmp_path: Path,
    fed: Any,
    owners: list[OwnerData],
) -> None:
    from federated.services.jobs import job_run_config

    with LocalFederation([], tmp_path / "link") as link:
        # Given a job whose first start called `flwr run` and died before reading the answer
        coordinator_settings(
            monkeypatch,
            settings,
            tmp_path,
            superlink=f"127.0.0.1:{link.port}",
            site_url=f"http://127.0.0.1:{free_port()}",
        )
        trainer = fed.user("trainer", credits=CREDITS)
        job = fed.launch(
            trainer,
            fed.spec(
                fed.base_version(fed.user("creator")), list_datasets(fed, owners), **tiny_job()
            ),
        )
        config = job_run_config(job=job)
        coordinator._marker(job.pk).write(
            **{"started-at": timezone.now().timestamp(), "run-id": ""}
        )
        orphan = run_start(APP_DIR, link.connection, config)
        before = {run.run_id for run in runs_list(link.connection)}
        # When the start task runs again
        step = coordinator.job_start(job_id=job.pk)
        # Then it takes over that run instead of starting another
        job = FederatedJob.objects.get(pk=job.pk)
        assert (job.state, job.run_id) == (State.RUNNING, orphan)
        assert {run.run_id for run in runs_list(link.connection)} == before
        assert step.task == "job_watch" and step.lease
        assert len(events(job, "run_recovered")) == 1
        assert not coordinator._marker(job.pk).path.exists()


def test_one_driver_chain_per_job_a_superseded_one_drops_out(settings: Any, tmp_path: Path) -> None:
    settings.ATELIER_FEDERATION_DIR = tmp_path
    settings.ATELIER_SUPERLINK = "127.0.0.1:1"
    # Given a chain driving job 7
    first = coordinator.lease_take(7, "", ttl=60)
    assert first and coordinator.lease_take(7, first, ttl=60) == first
    # Then a periodic reconcile leaves it alone, a restarted worker takes over
    assert coordinator.lease_take(7, "", ttl=60) is None
    second = coordinator.lease_take(7, "", ttl=60, force=True)
    assert second and second != first
    # And the first chain's next task (redelivered late) drops out, touching nothing
    assert coordinator.job_watch(job_id=7, lease=first).done
    assert coordinator.job_start(job_id=7, lease=first).done is True
    # A lapsed lease is free again
    coordinator.lease_take(7, second, ttl=0)
    assert coordinator.lease_take(7, "", ttl=60) not in (None, second)


def superlink_kill(link: LocalFederation) -> list[str]:
    """SIGKILL the SuperLink and what it started (its SuperExec, the ServerApp); its argv."""
    from federated.engine.localfed import descendants

    entry = link.procs[0]
    family = descendants(entry.proc.pid)
    os.killpg(entry.proc.pid, signal.SIGKILL)
    entry.proc.wait(timeout=10)
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    link.procs.remove(entry)
    return [str(arg) for arg in entry.proc.args]  # type: ignore[union-attr]


def superlink_restart(link: LocalFederation, argv: list[str]) -> None:
    """The same SuperLink again: same port, certificates and state database."""
    from federated.engine.localfed import _wait_port

    entry = link._spawn("superlink-restarted", argv, link.flwr_home)
    link.procs.remove(entry)
    link.procs.insert(0, entry)
    _wait_port(link.port, entry.proc, entry.log)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(1800)
def test_a_superlink_restarted_mid_run_resumes_the_job_from_the_last_saved_round(
    make_site: Callable[[str], Site],
    owners: list[OwnerData],
    tmp_path: Path,
    ledger_checked: None,
) -> None:
    from federated.engine.ledger import PrivacyLedger
    from marketplace.selectors import wallet_balance
    from registry.models import Model, ModelKind

    # Given a two-round job running on a SuperLink of its own (state kept in its database)
    port, workdir = free_port(), tmp_path / "restarting"
    nodes = [owner.spec for owner in owners]
    link = LocalFederation(nodes, workdir, port=port, node_config=TEST_NODE_CONFIG).start()
    try:
        site = make_site(f"127.0.0.1:{port}")
        # (the worker may first render the base's sample images: a minute on a busy machine)
        job = site.wait_state(site.launch(rounds=2, local_steps=8), State.RUNNING, timeout=300)
        lost_run = job.run_id
        # (the ServerApp saves round 1 before it sends round 2, and reports it after drawing
        # its grid: on warm nodes round 2 may be over by then, so the event is the save)
        state = Path(job.out_dir) / "state.json"
        wait_until(
            lambda: state.is_file() and json.loads(state.read_text())["last-round"] == 1,
            timeout=600,
            what="round 1 is saved",
            log=site.log,
        )
        # When the SuperLink (and with it the ServerApp) stops after the first round, while
        # round 2 trains; the owners' SuperNodes keep running (their machines did not restart)
        argv = superlink_kill(link)
        wait_until(
            lambda: events(job, "superlink_unavailable"),
            timeout=60,
            what="an event saying the SuperLink is unavailable",
            log=site.log,
        )
        # Then the job is not failed for the outage itself: it keeps its run and waits
        assert (site.job(job).state, site.job(job).run_id) == (State.RUNNING, lost_run)
        # When the SuperLink comes back on its state database
        superlink_restart(link, argv)
        # Then Flower fails the run whose ServerApp died with the old SuperLink (no
        # heartbeat), and the coordinator starts a new run that resumes after round 1
        job = site.wait_state(job, State.COMPLETED, State.FAILED, timeout=900)
        lost = run_status(lost_run, link.connection)
        resumed = run_status(job.run_id, link.connection)
    finally:
        link.stop()
    assert job.state == State.COMPLETED, (job.failure_reason, site.log())
    assert lost.status == "finished:failed" and "heartbeat" in lost.details.lower(), lost
    assert resumed.completed and job.run_id != lost_run
    (event,) = events(job, "run_resumed")
    assert event.data == {"previous_run_id": lost_run, "run_id": job.run_id, "from_round": 1}
    metrics = json.loads((Path(job.out_dir) / "metrics.json").read_text())
    assert metrics["started-at-round"] == 2 and [r["round"] for r in metrics["rounds"]] == [1, 2]
    assert len(events(job, "published")) == 1 and not events(job, "failed")
    assert Model.objects.filter(owner=site.trainer, kind=ModelKind.LORA).count() == 1
    # And every round is recorded and paid once, nothing refunded but the unspent rest
    assert list(job.rounds.order_by("index").values_list("index", flat=True)) == [1, 2]
    for jd in job.datasets.select_related("dataset_version__dataset__owner"):
        assert (jd.rounds_completed, jd.example_rounds) == (2, 2 * IMAGES)
        assert jd.earned == PRICE_PER_EXAMPLE_ROUND * IMAGES * 2
        assert wallet_balance(user=jd.dataset_version.dataset.owner) == jd.earned
    assert job.refunded == job.max_cost - job.owners_paid - job.fee_paid
    assert wallet_balance(user=site.trainer) == CREDITS - job.owners_paid - job.fee_paid
    # And each node's privacy ledger holds the job's spend, which the ServerApp reported
    ledgers = []
    for owner in owners:
        assert owner.spec.dataset_path is not None
        spend = PrivacyLedger(owner.spec.ledger_path).job_spend(
            str(owner.spec.dataset_path.resolve()), job.flower_job_id
        )
        assert spend is not None and spend.epsilon > 0
        ledgers.append(spend.epsilon)
    reported = [float(n["epsilon"]) for n in metrics["nodes"].values()]
    assert sorted(reported) == pytest.approx(sorted(ledgers), rel=1e-9)
