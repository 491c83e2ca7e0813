"""Cancelling a generation: its owner stops it queued (the worker skips it) or running (the
worker stops at its next step and keeps no image); anyone else is refused; progress says the
same thing in the badge and the bar, with an estimate of the time left."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from studio import services
from studio.models import Generation, GenerationStatus
from studio.selectors import generation_eta, progress_label
from studio.services.generations import (
    ResourceInput,
    generation_cancel,
    generation_create,
    generation_run,
)

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations"


def _make(studio: Any, **extra: Any) -> Generation:
    values: dict[str, Any] = {
        "user": studio.artist,
        "base_version_id": studio.base.pk,
        "prompt": "a castle",
        "seed": 5,
        "steps": 2,
        "width": 32,
        "height": 32,
        **extra,
    }
    return generation_create(**values)


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_queued_generation_cancelled_by_its_owner_is_skipped_by_the_worker(
    studio, client_for
) -> None:
    # Given a queued generation
    generation = _make(studio)
    # When its owner cancels it through the API
    response = client_for(studio.artist).post(f"{URL}/{generation.pk}/cancel")
    # Then it is cancelled, and the worker that takes it later makes nothing
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["progress"]["eta_seconds"] is None
    done = generation_run(generation_id=generation.pk)
    assert (done.status, done.started_at, bool(done.image)) == ("cancelled", None, False)


def test_a_running_generation_stops_at_its_next_step_and_keeps_no_image(
    studio, monkeypatch
) -> None:
    # Given a generation of 6 steps whose owner cancels it once the worker wrote step 1
    generation = _make(studio, steps=6)
    real_progress_set = services.generations.generation_progress_set
    steps_seen: list[int] = []

    def progress_then_cancel(*, generation_id: int, step: int) -> bool:
        steps_seen.append(step)
        if step == 1:
            mine = Generation.objects.get(pk=generation_id)
            generation_cancel(generation=mine, user=studio.artist)
        return real_progress_set(generation_id=generation_id, step=step)

    monkeypatch.setattr(services.generations, "PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr(services.generations, "generation_progress_set", progress_then_cancel)
    # When the worker runs it
    done = generation_run(generation_id=generation.pk)
    # Then the sampling stopped at step 1: cancelled, no image, not overwritten as done
    assert steps_seen == [1]
    assert done.status == GenerationStatus.CANCELLED
    assert not done.image and done.parameters == ""


def test_cancelling_also_stops_the_checkpoint_alone_twin(studio) -> None:
    generation = _make(studio, loras=[ResourceInput(studio.lora.pk)], compare=True)
    generation_cancel(generation=generation, user=studio.artist)
    baseline = Generation.objects.get(pk=generation.baseline_id)
    assert baseline.status == GenerationStatus.CANCELLED


def test_someone_else_cannot_cancel_my_generation(studio, client_for, make_user) -> None:
    # Given the artist's queued generation
    generation = _make(studio)
    stranger = make_user("stranger")
    # When a stranger tries, through the API and the page
    api = client_for(stranger).post(f"{URL}/{generation.pk}/cancel")
    page = _client(stranger).post(f"/studio/generations/{generation.pk}/cancel/")
    # Then both are refused (it is not even visible to them) and it stays queued
    assert (api.status_code, page.status_code) == (404, 404)
    assert Generation.objects.get(pk=generation.pk).status == GenerationStatus.QUEUED
    # and anonymous callers are 401 on the API
    assert Client().post(f"{URL}/{generation.pk}/cancel").status_code == 401


def test_a_public_generation_of_someone_else_is_403_to_cancel(
    studio, client_for, make_user
) -> None:
    # Given a finished public image of the artist's (visible to anyone)
    generation = _make(studio)
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.SUCCEEDED, is_public=True
    )
    stranger = make_user("stranger")
    assert client_for(stranger).post(f"{URL}/{generation.pk}/cancel").status_code == 403
    assert _client(stranger).post(f"/studio/generations/{generation.pk}/cancel/").status_code == 403


def test_a_finished_generation_cannot_be_cancelled(studio, client_for) -> None:
    generation = _make(studio)
    done = generation_run(generation_id=generation.pk)
    assert done.status == GenerationStatus.SUCCEEDED, done.error
    response = client_for(studio.artist).post(f"{URL}/{generation.pk}/cancel")
    assert response.status_code == 409
    assert response.json()["code"] == "already_finished"
    assert "already done" in response.json()["message"]


def test_the_page_cancels_and_then_says_so(studio) -> None:
    generation = _make(studio)
    client = _client(studio.artist)
    html = client.get(f"/studio/generations/{generation.pk}/").content.decode()
    assert 'id="cancel-generation"' in html
    response = client.post(f"/studio/generations/{generation.pk}/cancel/")
    assert response.status_code == 302
    html = client.get(response["Location"]).content.decode()
    assert 'id="generation-cancelled"' in html and 'id="cancel-generation"' not in html
    assert ">Cancelled</span>" in html  # the badge
    assert "studio/generation.js" not in html  # nothing left to follow


def test_the_badge_and_the_bar_say_the_same_thing(studio) -> None:
    generation = _make(studio, steps=4)
    client = _client(studio.artist)
    url = f"/studio/generations/{generation.pk}/"
    html = client.get(url).content.decode()
    assert html.count(">Queued<") == 2 or (
        'id="generation-status">Queued<' in html and 'aria-live="polite">Queued' in html
    )
    assert "Running" not in html
    started = timezone.now() - datetime.timedelta(seconds=6)
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.RUNNING, progress_step=1, started_at=started
    )
    html = client.get(url).content.decode()
    assert 'id="generation-status">Step 1 of 4<' in html
    assert 'aria-live="polite">Step 1 of 4<' in html
    # 6 s for one step: 3 steps left, about 18 s
    assert "about 18 s left" in html
    body = _client(studio.artist).get(f"{URL}/{generation.pk}").json()
    assert body["progress"]["text"] == "Step 1 of 4"
    assert 17 <= body["progress"]["eta_seconds"] <= 20


def test_the_estimate_of_a_queued_generation_uses_the_recent_pace(studio) -> None:
    # Given one finished generation that took 2 s for 2 steps (1 s a step)
    done = _make(studio)
    Generation.objects.filter(pk=done.pk).update(
        status=GenerationStatus.SUCCEEDED, duration_ms=2000, finished_at=timezone.now()
    )
    # and two queued ones of 4 steps each
    first = _make(studio, steps=4)
    second = _make(studio, steps=4)
    # Then the second waits for the first: (1 + 1) x 4 steps x 1 s
    assert generation_eta(first, ahead=0) == 4
    assert generation_eta(second, ahead=1) == 8
    assert progress_label(second) == "Queued"
    # and with no finished generation at all there is no guess
    Generation.objects.filter(pk=done.pk).delete()
    assert generation_eta(second, ahead=1) is None


def test_a_finished_image_has_a_download_button_that_saves_the_png(studio) -> None:
    generation = _make(studio)
    done = generation_run(generation_id=generation.pk)
    client = _client(studio.artist)
    html = client.get(f"/studio/generations/{done.pk}/").content.decode()
    assert f'href="/api/v1/generations/{done.pk}/image?download=1"' in html
    saved = client.get(f"/api/v1/generations/{done.pk}/image?download=1")
    shown = client.get(f"/api/v1/generations/{done.pk}/image")
    name = f"atelier-{done.pk}-{done.seed}.png"
    assert saved["Content-Disposition"] == f'attachment; filename="{name}"'
    assert shown["Content-Disposition"] == f'inline; filename="{name}"'
