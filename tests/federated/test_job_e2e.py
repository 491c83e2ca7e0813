"""A federated job end to end, every part real: PostgreSQL, Redis, a Celery worker process, the
site served over HTTP (live_server), a SuperLink and two SuperNodes on loopback with generated
datasets. The nodes hold no base model: each fetches it from the site with its own node token.

From the API call that launches the job to a published LoRA that downloads and loads, with a
balanced ledger, owners paid by participation and epsilon in the site's privacy ledger.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch

from federated.engine.localfed import LocalFederation
from sdcore.tiny import TINY_DIFFUSERS_DIR_NAME
from tests.conftest import _tiny_model
from tests.federated.factories import openssh_public_key
from tests.federated.live import (
    IMAGES,
    PRICE_PER_EXAMPLE_ROUND,
    OwnerData,
    coordinator_settings,
    load_license_catalogue,
    owners_data,
    tiny_job,
    wait_until,
)

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fast_passwords")]
CREDITS = 10_000
ROUNDS = 2
TARGET_EPSILON = 8.0


@pytest.fixture(scope="module")
def owners(tmp_path_factory: pytest.TempPathFactory) -> list[OwnerData]:
    """The owners hold no base model: their nodes fetch it from the site."""
    return owners_data(tmp_path_factory.mktemp("owners"), base_model=None)


class Api:
    """The site's HTTP API as a client sees it: bearer tokens, JSON, error bodies shown."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = requests.Session()

    def call(
        self,
        method: str,
        path: str,
        token: str,
        *,
        expect: int,
        json: object = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        response = self.http.request(
            method,
            self.base_url + path,
            json=json,
            timeout=60,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
        )
        assert response.status_code == expect, (
            method,
            path,
            response.status_code,
            response.text[:2000],
        )
        return response


def image(pipe: Any) -> np.ndarray:
    result = pipe(
        "a photo of sks red circle",
        height=64,
        width=64,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return np.asarray(result.images[0])


@pytest.mark.django_db(transaction=True)
def test_a_job_launched_through_the_api_publishes_a_lora_that_loads_and_pays_its_owners(
    request: pytest.FixtureRequest,
    live_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    fed: Any,
    token_for: Any,
    owners: list[OwnerData],
    federation: LocalFederation,
    ledger_checked: None,
) -> None:
    from federated.models import PrivacySpend
    from marketplace.selectors import wallet_balance
    from sdcore.loading import load_pipeline

    load_license_catalogue()
    request.addfinalizer(load_license_catalogue)
    coordinator_settings(
        monkeypatch,
        settings,
        tmp_path,
        superlink=f"127.0.0.1:{federation.port}",
        site_url=live_server.url,
    )
    worker_log = tmp_path / "celery-worker.log"
    request.getfixturevalue("celery_worker_process")
    api = Api(live_server.url)
    creator, trainer = fed.user("creator"), fed.user("trainer", credits=CREDITS)
    base = fed.base_version(creator)

    # Given two data owners who register their nodes and list their datasets through the API
    dataset_ids: list[int] = []
    owner_users = []
    for index, owner in enumerate(owners):
        user = fed.user(f"owner{index}")
        owner_users.append(user)
        token = token_for(user)
        node = api.call(
            "POST",
            "/api/v1/federated/nodes",
            token,
            expect=201,
            json={"name": f"node {index}", "public_key": openssh_public_key()},
        ).json()
        assert node["token"].startswith("atn_")
        owner.register(node["token"])  # the node fetches the base model with its own token
        beat = api.call(
            "POST",
            "/api/v1/federated/nodes/heartbeat",
            node["token"],
            expect=200,
            json={"datasets": [owner.manifest_hash], "version": "test"},
        ).json()
        assert beat["status"] == "online"
        listed = api.call(
            "POST",
            "/api/v1/federated/datasets",
            token,
            expect=201,
            json={
                "node_id": node["id"],
                "name": f"Shapes of owner {index}",
                "description": "Generated shapes.",
                "manifest": owner.manifest,
                "terms": {
                    "price_per_example_round": PRICE_PER_EXAMPLE_ROUND,
                    "epsilon_per_job": TARGET_EPSILON,
                    "epsilon_lifetime": 100.0,
                },
            },
        ).json()
        dataset_ids.append(listed["dataset_version_id"])

    # When the trainer launches a job, twice with one Idempotency-Key
    trainer_token = token_for(trainer)
    body = {
        "base_version_id": base.pk,
        "dataset_version_ids": dataset_ids,
        **tiny_job(rounds=ROUNDS, target_epsilon=TARGET_EPSILON),
    }
    key = {"Idempotency-Key": "e2e-launch-1"}
    first = api.call(
        "POST", "/api/v1/federated/jobs", trainer_token, expect=201, json=body, headers=key
    ).json()
    again = api.call(
        "POST", "/api/v1/federated/jobs", trainer_token, expect=200, json=body, headers=key
    ).json()
    assert again["id"] == first["id"]
    assert wallet_balance(user=trainer) == CREDITS - first["max_cost"]  # held once
    job_path = f"/api/v1/federated/jobs/{first['id']}"

    # Then it runs on the nodes and completes
    def finished() -> dict[str, Any] | None:
        detail = api.call("GET", job_path, trainer_token, expect=200).json()
        return detail if detail["state"] in ("completed", "failed", "cancelled") else None

    detail = wait_until(
        finished,
        timeout=600,
        what="the job finishes",
        log=lambda: (
            worker_log.read_text(errors="replace")[-4000:] + federation.logs()["superlink"][-4000:]
        ),
    )
    assert detail["state"] == "completed", detail["failure_reason"]
    assert [r["index"] for r in detail["rounds"]] == list(range(1, ROUNDS + 1))
    assert all(r["nodes"] == 2 and r["train_loss"] is not None for r in detail["rounds"])

    # The published LoRA downloads through the registry's API...
    versions = api.call(
        "GET", f"/api/v1/models/{detail['result_model_id']}/versions", trainer_token, expect=200
    ).json()
    versions = versions.get("results", versions) if isinstance(versions, dict) else versions
    version = next(v for v in versions if v["id"] == detail["result_version_id"])
    assert version["status"] == "published"
    download = api.call("GET", f"/api/download/models/{version['id']}", trainer_token, expect=200)
    primary = next(f for f in version["files"] if f["is_primary"])
    assert hashlib.sha256(download.content).hexdigest() == primary["sha256"]
    lora = tmp_path / "downloaded" / primary["filename"]
    lora.parent.mkdir()
    lora.write_bytes(download.content)
    # ...and loads onto the tiny base model, changing what it draws
    tiny = _tiny_model(tmp_path_factory) / TINY_DIFFUSERS_DIR_NAME
    reference = image(load_pipeline(tiny))
    pipe = load_pipeline(tiny)
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
    assert np.abs(image(pipe) - reference).max() > 0

    # Owners are paid for the examples their nodes trained on, in the rounds they took part
    for jd, user in zip(detail["datasets"], owner_users, strict=True):
        assert (jd["rounds_completed"], jd["example_rounds"]) == (ROUNDS, ROUNDS * IMAGES)
        assert jd["earned"] == PRICE_PER_EXAMPLE_ROUND * jd["example_rounds"]
        assert wallet_balance(user=user) == jd["earned"]
    paid = sum(jd["earned"] for jd in detail["datasets"])
    assert detail["owners_paid"] == paid
    assert detail["refunded"] == first["max_cost"] - paid - detail["fee_paid"]
    assert wallet_balance(user=trainer) == CREDITS - paid - detail["fee_paid"]

    # The site's privacy ledger holds the epsilon each node reported, within the job's budget
    spends = {s.dataset_version_id: s for s in PrivacySpend.objects.filter(job_id=first["id"])}
    assert set(spends) == set(dataset_ids)
    assert all(0 < s.epsilon <= TARGET_EPSILON * 1.01 for s in spends.values())
    owner_token = token_for(owner_users[0])
    budget = api.call(
        "GET", f"/api/v1/federated/datasets/{dataset_ids[0]}/budget", owner_token, expect=200
    ).json()
    assert budget["spent"] == pytest.approx(spends[dataset_ids[0]].epsilon)
