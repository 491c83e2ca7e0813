"""Publishing through the REST API queues the sample rendering after the commit, and the real
Celery worker process (Redis, PostgreSQL) renders them; a version that cannot be rendered is
published all the same, with no samples.

``restore_license_catalogue`` comes before ``samples_on_publish`` (the worker; see
``test_end_to_end.py``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATELIER_MODEL_CACHE_DIR", str(tmp_path / "worker-model-cache"))
    monkeypatch.setenv("ATELIER_GENERATION_DEVICE", "cpu")
    monkeypatch.setenv("ATELIER_SAMPLE_MAX_STEPS", "2")


def _images(client: Any, version_id: int, count: int, log: Path) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 180
    images: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        images = client.get(f"/api/v1/versions/{version_id}").json()["images"]
        if len(images) >= count:
            return images
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no worker log)"
    pytest.fail(f"version {version_id} has {len(images)} of {count} sample images\n{tail}")


def test_publishing_over_the_api_gets_samples_rendered_by_the_worker(
    worker_env: None,
    restore_license_catalogue: None,
    samples_on_publish: Any,
    make_user: Any,
    publish_file: Any,
    tiny_checkpoint: Path,
    resource_files: dict[str, Path],
    client_for: Any,
    tmp_path: Path,
) -> None:
    log = tmp_path / "celery-worker.log"
    creator = make_user("renderer")
    client = client_for(creator)
    base = publish_file(creator, tiny_checkpoint, kind="checkpoint", publish=False)
    lora = publish_file(creator, resource_files["lora"], kind="lora", publish=False)
    broken = publish_file(creator, resource_files["other_lora"], kind="checkpoint", publish=False)

    # When the creator publishes the three through the API (the broken one first: the
    # worker takes them in order, so it is done when the others are)
    for version in (broken, base, lora):
        response = client.post(f"/api/v1/versions/{version.pk}/publish")
        assert response.status_code == 200, response.json()

    # Then the worker renders the checkpoint's fixed prompts at its native 64x64
    images = _images(client, base.pk, 3, log)
    assert [i["position"] for i in images] == [0, 1, 2]
    assert {(i["source"], i["parameters"]["width"]) for i in images} == {("rendered", 64)}
    # and the LoRA's base-alone / with-LoRA pairs on that checkpoint, same seed
    pairs = _images(client, lora.pk, 4, log)
    assert [i["role"] for i in pairs] == ["base", "adapted", "base", "adapted"]
    assert pairs[1]["pair_id"] == pairs[0]["id"]
    assert pairs[1]["parameters"]["seed"] == pairs[0]["parameters"]["seed"]
    assert pairs[1]["parameters"]["base_version_id"] == base.pk

    # and the "checkpoint" that is a LoRA file is published, with no samples (the worker
    # logged why)
    body = client.get(f"/api/v1/versions/{broken.pk}").json()
    assert body["status"] == "published" and body["images"] == []
