"""From the API call to the PNG, with a real Celery worker process on Redis and PostgreSQL.

The worker needs committed data: ``celery_worker_process`` brings ``transactional_db``, whose
teardown flushes every table. ``restore_license_catalogue`` comes before it in the arguments
(no ``django_db`` marker, which would set the database up first), so it is torn down after
the flush and puts the license catalogue back for the tests that follow.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdcore.generate import parse_a1111_parameters

URL = "/api/v1/generations"


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Any) -> None:
    """The worker's model cache in this test's folder (set before the worker starts)."""
    monkeypatch.setenv("ATELIER_MODEL_CACHE_DIR", str(tmp_path / "worker-model-cache"))
    monkeypatch.setenv("ATELIER_GENERATION_DEVICE", "cpu")


def _wait(client: Any, generation_id: int, seen: list[tuple[str, int]]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = client.get(f"{URL}/{generation_id}").json()
        seen.append((body["status"], body["progress"]["step"]))
        if body["status"] in ("succeeded", "failed"):
            return body
        time.sleep(0.2)
    pytest.fail(f"generation {generation_id} did not finish: {seen[-3:]}")


def test_an_api_request_becomes_a_png_made_by_the_worker(
    worker_env: None,
    restore_license_catalogue: None,
    celery_worker_process: Any,
    studio: Any,
    client_for: Any,
    publish_file: Any,
    resource_files: dict[str, Path],
) -> None:
    client = client_for(studio.artist)

    # When the artist asks for an image with a LoRA, through the API
    response = client.post(
        URL,
        {
            "base_version_id": studio.base.pk,
            "prompt": "a castle on a hill",
            "negative_prompt": "blurry",
            "seed": 42,
            "steps": 3,
            "width": 32,
            "height": 32,
            "loras": [{"version_id": studio.lora.pk, "weight": 0.9}],
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    seen: list[tuple[str, int]] = [(response.json()["status"], 0)]

    # Then the worker makes it, and the status goes from queued to succeeded with all steps
    body = _wait(client, response.json()["id"], seen)
    assert body["status"] == "succeeded", body["error"]
    assert seen[0] == ("queued", 0) and seen[-1] == ("succeeded", 3)
    assert body["progress"] == {"step": 3, "total": 3, "text": "Done", "eta_seconds": None}
    assert body["device"] == "cpu"
    # and the PNG at image_url carries the A1111 parameters
    png = client.get(body["image_url"])
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(b"".join(png.streaming_content)))
    fields = parse_a1111_parameters(image.text["parameters"])  # type: ignore[attr-defined]
    assert fields["Prompt"] == "a castle on a hill <lora:castles:0.9>"
    assert fields["Negative prompt"] == "blurry"
    assert (fields["Steps"], fields["Seed"], fields["Size"], fields["Sampler"]) == (
        "3",
        "42",
        "32x32",
        "Euler",
    )
    assert fields["Model hash"] == studio.base.files.get().blob.autov2
    assert image.text["parameters"] == body["parameters"]  # type: ignore[attr-defined]

    # When a LoRA that does not fit the checkpoint is used
    misfit = publish_file(studio.creator, resource_files["misfit_lora"], kind="lora")
    failing = client.post(
        URL,
        {
            "base_version_id": studio.base.pk,
            "prompt": "x",
            "steps": 2,
            "width": 32,
            "height": 32,
            "loras": [{"version_id": misfit.pk}],
        },
        format="json",
    )
    # Then the worker reports the failure with its reason
    failed = _wait(client, failing.json()["id"], [])
    assert failed["status"] == "failed" and failed["error_code"] == "lora_mismatch"
    assert "does not fit this checkpoint" in failed["error"] and failed["image_url"] is None
