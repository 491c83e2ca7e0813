"""The federated REST API under /api/v1/federated/: who may call what, with which token, and the
JSON error every bad input gets."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml
from rest_framework.test import APIClient

from federated.models import FederatedJob, JobDataset, JobRound, Node
from federated.services.jobs import job_fail, job_run_config
from marketplace.models import EscrowHold
from marketplace.selectors import wallet_balance
from tests.federated.factories import manifest, openssh_public_key

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")
API = "/api/v1/federated"


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"code", "message", "details"} and body["code"] == code, body
    return body


@pytest.fixture
def site(fed: Any, token_for: Any) -> dict[str, Any]:
    trainer = fed.user("trainer", credits=5_000)
    owner = fed.user("owner1")
    return {
        "fed": fed,
        "trainer": trainer,
        "owner": owner,
        "as_trainer": _client(token_for(trainer)),
        "as_owner": _client(token_for(owner)),
        "as_stranger": _client(token_for(fed.user("stranger"))),
    }


def _spec_body(base: Any, terms: list[Any], **values: Any) -> dict[str, Any]:
    return {
        "name": "Red circles",
        "base_version_id": base.pk,
        "use": "style",
        "dataset_version_ids": [t.dataset_version_id for t in terms],
        "rounds": 2,
        "resolution": 32,
        "rank": 2,
        "trigger_word": "sks",
        **values,
    }


# --- nodes ---------------------------------------------------------------------------------------


def test_a_node_registers_heartbeats_and_is_revoked(site: Any) -> None:
    # Register: the token comes back once
    response = site["as_owner"].post(
        f"{API}/nodes", {"name": "laptop", "public_key": openssh_public_key("ecdsa")}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["token"].startswith("atn_")
    node_id, token = body["id"], body["token"]
    # The list shows it without the token
    listed = site["as_owner"].get(f"{API}/nodes").json()
    assert [n["id"] for n in listed] == [node_id] and listed[0]["status"] == "offline"
    assert listed[0]["superlink_node_id"] == ""  # no SuperLink configured: not registered there
    assert token not in json.dumps(listed)
    assert site["as_stranger"].get(f"{API}/nodes").json() == []
    # Heartbeat with the node token
    node_client = _client(token)
    beat = node_client.post(
        f"{API}/nodes/heartbeat",
        {"datasets": ["a" * 64], "flwr_node_id": "991", "version": "1.0"},
        format="json",
    )
    assert beat.status_code == 200
    assert beat.json()["status"] == "online" and beat.json()["id"] == node_id
    # A wrong node token is 401 and changes nothing
    _error(
        _client("atn_" + "x" * 43).post(f"{API}/nodes/heartbeat", {}, format="json"),
        401,
        "authentication_failed",
    )
    _error(APIClient().post(f"{API}/nodes/heartbeat", {}, format="json"), 401, "not_authenticated")
    # A user's API token is no node token
    _error(
        site["as_owner"].post(f"{API}/nodes/heartbeat", {}, format="json"),
        401,
        "authentication_failed",
    )
    # Someone else cannot revoke it; the owner can, and the token stops working
    _error(site["as_stranger"].post(f"{API}/nodes/{node_id}/revoke"), 404, "node_not_found")
    assert site["as_owner"].post(f"{API}/nodes/{node_id}/revoke").json()["status"] == "revoked"
    _error(
        node_client.post(f"{API}/nodes/heartbeat", {}, format="json"), 401, "authentication_failed"
    )


def test_a_bad_public_key_is_400(site: Any) -> None:
    body = _error(
        site["as_owner"].post(
            f"{API}/nodes", {"name": "x", "public_key": "ssh-rsa AAA"}, format="json"
        ),
        400,
        "bad_public_key",
    )
    assert "ECDSA" in body["message"]
    assert not Node.objects.exists()


# --- datasets ------------------------------------------------------------------------------------


def test_listing_a_dataset_and_who_sees_its_manifest(site: Any) -> None:
    node = site["fed"].node(site["owner"]).node
    response = site["as_owner"].post(
        f"{API}/datasets",
        {
            "node_id": node.pk,
            "name": "Holiday photos",
            "description": "Circles",
            "manifest": manifest(count=12, seed=3),
            "terms": {
                "price_per_example_round": 2,
                "epsilon_per_job": 6.0,
                "epsilon_lifetime": 30,
                "allowed_uses": ["style", "research"],
                "approval": "manual",
            },
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    created = response.json()
    dv_id = created["dataset_version_id"]
    assert created["terms"]["price_per_example_round"] == 2
    assert created["budget"]["remaining"] == 30
    assert created["manifest"]["files"][0]["name"] == "secret_holiday_0.png"  # the owner
    # Trainers see terms and aggregate statistics, never the per-file entries or folders
    for path in (f"{API}/datasets", f"{API}/datasets/{dv_id}"):
        text = site["as_trainer"].get(path).content.decode()
        assert "Holiday photos" in text
        assert "secret_holiday" not in text and "private-photos" not in text
    public = site["as_trainer"].get(f"{API}/datasets/{dv_id}").json()
    assert public["stats"] == {"count": 12, "resolutions": {"32x32": 12}}
    assert public["terms"]["approval"] == "manual"
    # The owner's own views
    mine = site["as_owner"].get(f"{API}/datasets/mine").json()
    assert [d["dataset_version_id"] for d in mine] == [dv_id]
    assert site["as_owner"].get(f"{API}/datasets/{dv_id}/budget").json()["spent"] == 0
    _error(site["as_trainer"].get(f"{API}/datasets/{dv_id}/budget"), 404, "dataset_not_found")
    _error(site["as_trainer"].get(f"{API}/datasets/{dv_id}/earnings"), 404, "dataset_not_found")


def test_the_dataset_list_pages_by_page_size_like_every_list(site: Any) -> None:
    # Given three listed datasets
    for _ in range(3):
        site["fed"].dataset(site["owner"])
    # When a trainer asks for pages of two
    first = site["as_trainer"].get(f"{API}/datasets?page_size=2").json()
    second = site["as_trainer"].get(f"{API}/datasets?page_size=2&page=2").json()
    # Then each page holds at most two, and together they hold all three once
    assert (first["count"], len(first["results"]), len(second["results"])) == (3, 2, 1)
    ids = [d["dataset_version_id"] for d in first["results"] + second["results"]]
    assert len(set(ids)) == 3


def test_terms_update_by_the_owner_only_and_bad_terms_are_400(site: Any) -> None:
    terms = site["fed"].dataset(site["owner"])
    path = f"{API}/datasets/{terms.dataset_version_id}/terms"
    _error(
        site["as_trainer"].patch(path, {"price_per_example_round": 0}, format="json"),
        403,
        "not_owner",
    )
    _error(
        site["as_owner"].patch(path, {"price_per_example_round": "free"}, format="json"),
        400,
        "invalid",
    )
    _error(
        site["as_owner"].patch(path, {"epsilon_lifetime": 0.5}, format="json"),
        400,
        "bad_epsilon_lifetime",
    )
    ok = site["as_owner"].patch(
        path, {"price_per_example_round": 5, "require_dp": False}, format="json"
    )
    assert ok.status_code == 200 and ok.json()["price_per_example_round"] == 5
    terms.refresh_from_db()
    assert (terms.price_per_example_round, terms.require_dp) == (5, False)


# --- jobs ----------------------------------------------------------------------------------------


@pytest.fixture
def market(site: Any) -> dict[str, Any]:
    fed = site["fed"]
    base = fed.base_version(fed.user("creator"))
    d1 = fed.dataset(site["owner"], count=10, price_per_example_round=2)
    return {**site, "base": base, "d1": d1}


def test_estimate_then_launch_with_an_idempotency_key(market: Any) -> None:
    client, body = market["as_trainer"], _spec_body(market["base"], [market["d1"]])
    estimate = client.post(f"{API}/jobs/estimate", body, format="json").json()
    assert (estimate["owners_max"], estimate["fee"], estimate["total"]) == (40, 4, 44)
    assert estimate["lines"][0]["max_cost"] == 40 and estimate["problems"] == []
    # Without a key: 400
    _error(client.post(f"{API}/jobs", body, format="json"), 400, "idempotency_key_required")
    # Launch: 201, the maximum cost held
    first = client.post(f"{API}/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="launch-1")
    assert first.status_code == 201, first.content
    job = first.json()
    assert (job["state"], job["max_cost"]) == ("queued", 44)
    assert wallet_balance(user=market["trainer"]) == 5_000 - 44
    # The same key and body: 200, the same job, nothing more charged
    again = client.post(f"{API}/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="launch-1")
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    assert wallet_balance(user=market["trainer"]) == 5_000 - 44
    # The same key, another body: 409
    _error(
        client.post(
            f"{API}/jobs", {**body, "rounds": 3}, format="json", HTTP_IDEMPOTENCY_KEY="launch-1"
        ),
        409,
        "idempotency_key_reused",
    )
    assert FederatedJob.objects.count() == 1 and EscrowHold.objects.count() == 1
    # Listed among the trainer's jobs; its page for the trainer and the owner, not a stranger
    assert [j["id"] for j in client.get(f"{API}/jobs").json()["results"]] == [job["id"]]
    assert market["as_owner"].get(f"{API}/jobs/{job['id']}").status_code == 200
    _error(market["as_stranger"].get(f"{API}/jobs/{job['id']}"), 404, "job_not_found")


def test_launch_errors_are_json_and_leave_nothing(market: Any) -> None:
    fed, client = market["fed"], market["as_trainer"]
    sdxl_only = fed.dataset(fed.user("owner2"), name="SDXL photos", allowed_families=["sdxl"])
    refused = _error(
        client.post(
            f"{API}/jobs",
            _spec_body(market["base"], [sdxl_only]),
            format="json",
            HTTP_IDEMPOTENCY_KEY="a",
        ),
        400,
        "terms_forbid_family",
    )
    assert refused["details"]["dataset_version_id"] == sdxl_only.dataset_version_id
    assert refused["details"]["clause"] == "allowed_families"
    over = _error(
        client.post(
            f"{API}/jobs",
            _spec_body(market["base"], [market["d1"]], target_epsilon=9.0),
            format="json",
            HTTP_IDEMPOTENCY_KEY="b",
        ),
        400,
        "epsilon_above_job_budget",
    )
    assert over["details"]["clause"] == "epsilon_per_job"
    _error(
        client.post(
            f"{API}/jobs",
            _spec_body(market["base"], [market["d1"]], rank="4"),
            format="json",
            HTTP_IDEMPOTENCY_KEY="c",
        ),
        400,
        "invalid",
    )
    poor = _client(market["fed"].request.getfixturevalue("token_for")(fed.user("poor", credits=5)))
    _error(
        poor.post(
            f"{API}/jobs",
            _spec_body(market["base"], [market["d1"]]),
            format="json",
            HTTP_IDEMPOTENCY_KEY="d",
        ),
        402,
        "insufficient_funds",
    )
    assert FederatedJob.objects.count() == 0 and EscrowHold.objects.count() == 0


def test_cancel_through_the_api(market: Any) -> None:
    job = market["fed"].launch(
        market["trainer"], market["fed"].spec(market["base"], [market["d1"]])
    )
    _error(market["as_owner"].post(f"{API}/jobs/{job.pk}/cancel"), 404, "job_not_found")
    response = market["as_trainer"].post(f"{API}/jobs/{job.pk}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    assert response.json()["refunded"] == job.max_cost
    _error(market["as_trainer"].post(f"{API}/jobs/{99_999}/cancel"), 404, "job_not_found")


def test_progress_reports_need_the_jobs_progress_token(market: Any) -> None:
    fed = market["fed"]
    job, _ = fed.running(market["trainer"], fed.spec(market["base"], [market["d1"]]))
    other, _ = fed.running(market["trainer"], fed.spec(market["base"], [market["d1"]]))
    config, other_config = fed.credentials(job), fed.credentials(other)
    url = f"{API}/jobs/{job.pk}/progress"
    report = fed.report(job, 1, {"3": (market["d1"].dataset_version.manifest_hash, 10, 1.5)})
    # Forged: no token, a made-up one, another job's, the job token, a user's API token
    for token in ("", "atp_forged", other_config["progress-token"], config["job-token"]):
        client = _client(token) if token else APIClient()
        _error(client.post(url, report, format="json"), 401, "bad_token")
    _error(market["as_trainer"].post(url, report, format="json"), 401, "bad_token")
    assert not JobRound.objects.exists()
    assert JobDataset.objects.get(job=job).rounds_completed == 0
    # The ServerApp's report, with the token
    ok = _client(config["progress-token"]).post(url, report, format="json")
    assert ok.status_code == 200 and ok.json() == {"recorded": True, "round": 1}
    _error(
        _client(config["progress-token"]).post(url, {**report, "round": "x"}, format="json"),
        400,
        "bad_progress",
    )
    # The live page's poll: the trainer sees the round; a stranger and the node cannot
    live = market["as_trainer"].get(url).json()
    assert [r["index"] for r in live["rounds"]] == [1]
    assert live["rounds"][0]["epsilon_max"] == 1.5
    assert market["as_trainer"].get(f"{url}?after=1").json()["rounds"] == []
    _error(market["as_stranger"].get(url), 404, "job_not_found")
    # Once the job is finished, reports are 409
    job_fail(job=job, reason="stopped")
    _error(
        _client(config["progress-token"]).post(url, {**report, "round": 2}, format="json"),
        409,
        "job_not_running",
    )


def test_the_serverapp_fetches_the_base_model_with_the_job_token(market: Any) -> None:
    fed = market["fed"]
    job = fed.launch(market["trainer"], fed.spec(market["base"], [market["d1"]]))
    url = f"{API}/jobs/{job.pk}/base-model"
    _error(APIClient().get(url), 401, "bad_token")  # no token issued yet
    config = {**job_run_config(job=job), **fed.credentials(job)}
    token = str(config["job-token"])
    response = _client(token).get(url)
    assert response.status_code == 200
    data = b"".join(response.streaming_content)
    assert hashlib.sha256(data).hexdigest() == config["base-model-sha"]
    assert response["ETag"] == f'"{config["base-model-sha"]}"'
    # Resumable: a Range gives the tail
    part = _client(token).get(url, HTTP_RANGE="bytes=100-")
    assert part.status_code == 206 and b"".join(part.streaming_content) == data[100:]
    # Wrong tokens are 401; once the job is finished, 403
    _error(_client(str(config["progress-token"])).get(url), 401, "bad_token")
    _error(market["as_trainer"].get(url), 401, "bad_token")
    job_fail(job=job, reason="x")
    _error(_client(token).get(url), 403, "job_finished")


def test_approvals_inbox_approve_and_reject(market: Any) -> None:
    fed = market["fed"]
    manual = fed.dataset(market["owner"], approval="manual")
    first = fed.launch(market["trainer"], fed.spec(market["base"], [manual]))
    second = fed.launch(market["trainer"], fed.spec(market["base"], [manual], rounds=1))
    inbox = market["as_owner"].get(f"{API}/approvals").json()["results"]
    assert {row["job_id"] for row in inbox} == {first.pk, second.pk}
    ids = {row["job_id"]: row["id"] for row in inbox}
    _error(
        market["as_trainer"].post(f"{API}/approvals/{ids[first.pk]}/approve"),
        404,
        "approval_not_found",
    )
    approved = market["as_owner"].post(f"{API}/approvals/{ids[first.pk]}/approve").json()
    assert (approved["approval"], approved["job_state"]) == ("approved", "queued")
    rejected = (
        market["as_owner"]
        .post(f"{API}/approvals/{ids[second.pk]}/reject", {"note": "no"}, format="json")
        .json()
    )
    assert (rejected["approval"], rejected["job_state"]) == ("rejected", "cancelled")
    assert market["as_owner"].get(f"{API}/approvals").json()["results"] == []
    assert len(market["as_owner"].get(f"{API}/approvals?all=1").json()["results"]) == 2
    assert wallet_balance(user=market["trainer"]) == 5_000 - first.max_cost


def test_earnings_per_dataset_after_settlement(market: Any) -> None:
    fed = market["fed"]
    job, _ = fed.running(market["trainer"], fed.spec(market["base"], [market["d1"]]))
    from federated.services.jobs import job_progress_record

    job_progress_record(
        job=job,
        payload=fed.report(job, 1, {"3": (market["d1"].dataset_version.manifest_hash, 10, 1.0)}),
    )
    job_fail(job=job, reason="node dropped")
    rows = market["as_owner"].get(f"{API}/earnings").json()
    assert rows == [
        {
            "dataset_version_id": market["d1"].dataset_version_id,
            "name": market["d1"].dataset_version.dataset.name,
            "earned": 20,
            "jobs": 1,
        }
    ]
    per_job = (
        market["as_owner"].get(f"{API}/datasets/{market['d1'].dataset_version_id}/earnings").json()
    )
    assert per_job[0]["job_id"] == job.pk and per_job[0]["earned"] == 20
    budget = (
        market["as_owner"].get(f"{API}/datasets/{market['d1'].dataset_version_id}/budget").json()
    )
    assert budget["spent"] == 1.0 and budget["jobs"][0]["job_id"] == job.pk


def test_job_list_queries_do_not_grow_with_jobs(
    market: Any, django_assert_max_num_queries: Any
) -> None:
    fed = market["fed"]
    for rounds in (1, 2, 3, 4):
        fed.launch(
            market["trainer"],
            fed.spec(market["base"], [market["d1"]], rounds=rounds, target_epsilon=1.0),
        )
    with django_assert_max_num_queries(8):
        response = market["as_trainer"].get(f"{API}/jobs")
    assert response.json()["count"] == 4


def test_the_schema_documents_the_federated_routes() -> None:
    response = APIClient().get("/api/schema/")
    paths = yaml.safe_load(response.content)["paths"]
    expected = [
        "/nodes",
        "/nodes/heartbeat",
        "/nodes/{node_id}/revoke",
        "/datasets",
        "/datasets/mine",
        "/datasets/{dataset_version_id}",
        "/datasets/{dataset_version_id}/terms",
        "/datasets/{dataset_version_id}/budget",
        "/datasets/{dataset_version_id}/earnings",
        "/earnings",
        "/jobs",
        "/jobs/estimate",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/progress",
        "/jobs/{job_id}/base-model",
        "/approvals",
        "/approvals/{job_dataset_id}/approve",
        "/approvals/{job_dataset_id}/reject",
    ]
    assert [p for p in expected if API + p not in paths] == []
    assert [p for p in paths if p.startswith("/api/federated/")] == []  # old paths: redirects


# --- the old paths, /api/federated/...: permanent redirects that keep the method -------------


def test_a_post_to_an_old_path_answers_308_to_the_new_one_with_its_query(site: Any) -> None:
    # When a node registration is posted to the path the API had before /api/v1/
    response = site["as_owner"].post(
        "/api/federated/nodes?source=old", {"name": "laptop"}, format="json"
    )

    # Then it is redirected, permanently and keeping the method, to the same route under v1
    assert response.status_code == 308
    assert response["Location"] == f"{API}/nodes?source=old"
    assert not Node.objects.exists()  # the redirect itself did nothing


def test_a_client_that_follows_the_old_path_registers_its_node_once(site: Any) -> None:
    # When an old client posts to the old path and follows the redirect
    response = site["as_owner"].post(
        "/api/federated/nodes",
        {"name": "laptop", "public_key": openssh_public_key("ecdsa")},
        format="json",
        follow=True,
    )

    # Then the POST is repeated, with its body and token, at the new path, and works
    assert response.redirect_chain == [(f"{API}/nodes", 308)]
    assert response.status_code == 201, response.content
    assert response.json()["token"].startswith("atn_")
    assert list(Node.objects.values_list("name", flat=True)) == ["laptop"]


def test_an_old_path_get_is_redirected_too_and_unknown_old_paths_end_in_a_json_404(
    site: Any,
) -> None:
    listed = site["as_owner"].get("/api/federated/jobs", follow=True)
    assert listed.redirect_chain == [(f"{API}/jobs", 308)] and listed.status_code == 200
    missing = site["as_owner"].get("/api/federated/no-such-route", follow=True)
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


def test_admin_lists_federated_rows_and_cancels_through_the_service(market: Any) -> None:
    from django.test import Client

    fed = market["fed"]
    job = fed.launch(market["trainer"], fed.spec(market["base"], [market["d1"]]))
    staff = fed.user("admin")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    for name in ("node", "datasetterms", "federatedjob", "privacyspend", "jobevent"):
        response = client.get(f"/admin/federated/{name}/")
        assert response.status_code == 200, name
    page = client.get(f"/admin/federated/federatedjob/{job.pk}/change/")
    assert page.status_code == 200 and b"Red circles" in page.content
    assert b"token_digest" not in page.content
    client.post(
        "/admin/federated/federatedjob/", {"action": "cancel", "_selected_action": [job.pk]}
    )
    job.refresh_from_db()
    assert job.state == FederatedJob.State.CANCELLED and job.refunded == job.max_cost
