"""The clock of the round under way on the job page: elapsed time and an estimate from the
rounds before (issue #14)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from federated.models import FederatedJob, JobRound
from federated.round_clock import job_round_clock, round_clock
from federated.services.jobs import job_progress_record

pytest_plugins = ["tests.federated.fixtures"]
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_before_the_first_report_the_round_has_an_elapsed_time_and_no_estimate() -> None:
    clock = round_clock(started_at=T0, reported_at=[], rounds_total=3, now=at(75))
    assert clock is not None
    assert (clock.round, clock.elapsed_seconds, clock.elapsed_text) == (1, 75.0, "1 min 15 s")
    assert clock.eta is None and clock.remaining_seconds is None and clock.remaining_text == ""


def test_the_estimate_is_the_median_of_the_rounds_after_the_first() -> None:
    # Round 1 took 100 s (start-up included), rounds 2-4 took 30, 90 (a restart) and 40 s
    reports = [at(100), at(130), at(220), at(260)]
    clock = round_clock(started_at=T0, reported_at=reports, rounds_total=6, now=at(270))
    assert clock is not None and clock.round == 5 and clock.elapsed_seconds == 10.0
    assert clock.per_round_seconds == 40.0
    # 30 s left of round 5, then round 6
    assert clock.remaining_seconds == 70.0 and clock.eta == at(340)
    assert clock.remaining_text == "1 min 10 s"


def test_one_round_reported_is_the_estimate_and_an_overrun_round_counts_as_nearly_done() -> None:
    clock = round_clock(started_at=T0, reported_at=[at(60)], rounds_total=3, now=at(200))
    assert clock is not None and clock.per_round_seconds == 60.0
    assert clock.elapsed_seconds == 140.0 and clock.remaining_seconds == 60.0


def test_no_clock_once_every_round_is_reported() -> None:
    assert round_clock(started_at=T0, reported_at=[at(1), at(2)], rounds_total=2, now=at(3)) is None


def test_long_durations_read_in_hours() -> None:
    clock = round_clock(started_at=T0, reported_at=[], rounds_total=1, now=at(3 * 3600 + 125))
    assert clock is not None and clock.elapsed_text == "3 h 02 min"


@pytest.mark.django_db
def test_the_live_job_page_shows_the_round_clock_while_running_only(
    client: Any, fed: Any, fast_passwords: None
) -> None:
    trainer = fed.user("trainer", credits=10_000)
    base = fed.base_version(fed.user("creator"))
    terms = fed.dataset(fed.user("owner"), count=10, price_per_example_round=2, name="Circles")
    job, _ = fed.running(trainer, fed.spec(base, [terms], rounds=3))
    client.force_login(trainer)
    url = f"/train/jobs/{job.pk}/live/"
    html = client.get(url).content.decode()
    assert re.search(r'class="round-clock[^"]*" data-round="1"', html)
    assert "an estimate comes with the first round" in html
    # One round reported 90 s after the start: round 2 is under way, with an estimate
    FederatedJob.objects.filter(pk=job.pk).update(
        started_at=job.started_at - timedelta(seconds=100)
    )
    job.refresh_from_db()
    node = {"11": (terms.dataset_version.manifest_hash, 10, 1.0)}
    job_progress_record(job=job, payload=fed.report(job, 1, node))
    JobRound.objects.filter(job=job).update(created_at=job.started_at + timedelta(seconds=90))
    clock = job_round_clock(job=FederatedJob.objects.get(pk=job.pk))
    assert clock is not None and clock.round == 2 and clock.per_round_seconds == 90.0
    html = client.get(url).content.decode()
    assert re.search(r'class="round-clock[^"]*" data-round="2"', html)
    assert "until the last round ends" in html and '<time class="eta" datetime="' in html
    # A job that is no longer running has no clock
    FederatedJob.objects.filter(pk=job.pk).update(state=FederatedJob.State.FAILED)
    assert "round-clock" not in client.get(url).content.decode()
