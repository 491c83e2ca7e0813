"""Only the ServerApp reports progress, and no node can read what it reports with.

Real HTTP against the live site (``live_server``, ``requests``). The run config is what every
SuperNode receives (and the SuperLink keeps in clear): it must hold no secret. A node's own
token lets it fetch the base model of a job it serves, nothing more. A second, different
report for a round already recorded is a conflict (409, logged), an identical one is fine.
"""

from __future__ import annotations

import base64
import io
import re
import stat
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.test import Client
from django.urls import reverse

from federated.models import FederatedJob, JobDataset, JobEvent, JobRound
from federated.services.jobs import job_credentials_path, job_mark_running, job_run_config
from federated.services.nodes import node_revoke
from tests.federated.live import load_license_catalogue

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]

# What a bearer secret of the site looks like (atn_/atj_/atp_/atl_ + 43 url-safe characters),
# and any long random-looking run of url-safe characters.
TOKEN_LIKE = re.compile(r"at[a-z]_[A-Za-z0-9_-]{20,}|[A-Za-z0-9_-]{40,}")


@pytest.fixture
def world(fed: Any, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A running job on two owners' datasets; a third owner's node serves none of them."""
    load_license_catalogue()
    request.addfinalizer(load_license_catalogue)
    trainer = fed.user("trainer", credits=5_000)
    owners = [fed.user("owner1"), fed.user("owner2"), fed.user("outsider")]
    nodes = [fed.node(owner, name=f"node of {owner.username}") for owner in owners]
    terms = [
        fed.dataset(owner, node=reg.node, count=10, price_per_example_round=2)
        for owner, reg in zip(owners, nodes, strict=True)
    ]
    job = fed.launch(trainer, fed.spec(fed.base_version(fed.user("creator")), terms[:2]))
    config = job_run_config(job=job)
    job = job_mark_running(job=job, run_id="4242")
    yield {
        "job": job,
        "config": config,
        "credentials": fed.credentials(job),
        "nodes": nodes,
        "terms": terms,
        "fed": fed,
    }


def _post(url: str, token: str, body: object) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url, json=body, headers=headers, timeout=30)


def _error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"code", "message", "details"} and body["code"] == code, body
    return dict(body)


def _report(world: dict[str, Any], index: int, *which: int, **extra: Any) -> dict[str, Any]:
    """The ServerApp's report for round ``index``: the nodes of datasets ``which``."""
    return world["fed"].report(
        world["job"],
        index,
        {str(100 + i): (world["terms"][i].dataset_version.manifest_hash, 10, 1.0) for i in which},
        **extra,
    )


def test_the_run_config_holds_no_secret_and_the_serverapps_file_is_private(
    world: dict[str, Any],
) -> None:
    config, credentials = world["config"], world["credentials"]
    # Nothing token-like in what every node reads
    assert "progress-token" not in config and "job-token" not in config
    for key, value in config.items():
        assert not TOKEN_LIKE.search(str(value)) or key in (
            "base-model-sha",
            "dataset-manifests",
        ), (key, value)
    secrets = {credentials["progress-token"], credentials["job-token"]}
    assert all(s.startswith(("atp_", "atj_")) for s in secrets)
    assert not any(secret in str(config) for secret in secrets)
    # The ServerApp's credentials: a file only its owner reads, in the job's out-dir
    path = job_credentials_path(job=FederatedJob.objects.get(pk=world["job"].pk))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path.parent) == config["out-dir"]


def test_a_node_cannot_report_progress_with_anything_it_can_read(
    world: dict[str, Any],
    live_server: Any,
) -> None:
    job, config = world["job"], world["config"]
    url = f"{live_server.url}/api/v1/federated/jobs/{job.pk}/progress"
    report = _report(world, 1, 0)  # a hostile owner 0 drops owner 1 from round 1
    # Everything a node holds: each run config value, and its own node token
    readable = [str(v) for v in config.values()] + [world["nodes"][0].token, ""]
    for token in readable:
        response = _post(url, token, report)
        assert response.status_code == 401, (token[:20], response.status_code)
        assert response.json()["code"] in ("bad_token", "authentication_failed")
    assert not JobRound.objects.filter(job_id=job.pk).exists()
    # The ServerApp's token, from its own file, records the round
    ok = _post(url, world["credentials"]["progress-token"], _report(world, 1, 0, 1))
    assert ok.status_code == 200 and ok.json() == {"recorded": True, "round": 1}
    paid = JobDataset.objects.filter(job=job).values_list("rounds_completed", flat=True)
    assert list(paid) == [1, 1]


def test_a_different_report_for_a_recorded_round_is_a_logged_409_and_changes_nothing(
    world: dict[str, Any],
    live_server: Any,
) -> None:
    job = world["job"]
    url = f"{live_server.url}/api/v1/federated/jobs/{job.pk}/progress"
    token = world["credentials"]["progress-token"]
    first = _report(world, 1, 0, 1)
    assert _post(url, token, first).status_code == 200
    # The identical report again (a retry, the coordinator's replay): idempotent
    again = _post(url, token, first)
    assert again.status_code == 200 and again.json() == {"recorded": True, "round": 1}
    # Another report for round 1 (owner 1 left out): 409, the first stands, the log says so
    body = _error(_post(url, token, _report(world, 1, 0)), 409, "round_conflict")
    assert body["details"]["round"] == 1 and "nodes" in body["details"]["differs"]
    assert [jd.rounds_completed for jd in JobDataset.objects.filter(job=job).order_by("pk")] == [
        1,
        1,
    ]
    assert JobRound.objects.get(job=job, index=1).nodes.keys() == {"100", "101"}
    conflict = JobEvent.objects.get(job=job, kind="round_conflict")
    assert conflict.level == "error" and "already recorded" in conflict.message
    # A report naming other losses for the round is a conflict too
    _error(_post(url, token, _report(world, 1, 0, 1, **{"train-loss": 9.0})), 409, "round_conflict")


def test_a_node_fetches_the_base_model_only_of_a_job_it_serves(
    world: dict[str, Any],
    live_server: Any,
) -> None:
    job, nodes = world["job"], world["nodes"]
    url = f"{live_server.url}/api/v1/federated/jobs/{job.pk}/base-model"

    def get(token: str) -> requests.Response:
        return requests.get(
            url, headers={"Authorization": f"Bearer {token}", "Range": "bytes=0-99"}, timeout=30
        )

    # The nodes serving the job's datasets, with their own tokens; the ServerApp, with its own
    for token in (nodes[0].token, nodes[1].token, world["credentials"]["job-token"]):
        response = get(token)
        assert response.status_code == 206 and len(response.content) == 100
    # A node that serves no dataset of the job: 403; the progress token is no download token
    _error(get(nodes[2].token), 403, "node_not_in_job")
    _error(get(world["credentials"]["progress-token"]), 401, "bad_token")
    # A revoked node: 401
    node_revoke(node=nodes[1].node, user=nodes[1].node.owner)
    _error(get(nodes[1].token), 401, "bad_token")


def test_the_readiness_report_logs_a_node_left_out_for_claiming_a_dataset_it_does_not_serve(
    world: dict[str, Any],
    live_server: Any,
) -> None:
    job = world["job"]
    url = f"{live_server.url}/api/v1/federated/jobs/{job.pk}/progress"
    preparing = {
        "job-id": job.flower_job_id,
        "status": "preparing",
        "prepare": {
            "nodes-asked": ["100", "101", "102"],
            "ready": {},
            "no-reply": [],
            "failed": {
                "102": "dataset_not_owned: node 102 named dataset 0123..., which its "
                "registered node does not serve in this job",
                "101": "[4001] privacy_budget_exceeded: spent",
            },
        },
    }
    answer = _post(url, world["credentials"]["progress-token"], preparing)
    assert answer.status_code == 200 and answer.json() == {"recorded": False, "round": None}
    events = {
        e.kind: e
        for e in JobEvent.objects.filter(job=job, kind__in=("reply_rejected", "node_not_ready"))
    }
    assert events["reply_rejected"].level == "error" and "102" in events["reply_rejected"].message
    assert events["node_not_ready"].level == "warning"


def _png(size: tuple[int, int] = (64, 256), *, text: str = "") -> bytes:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("parameters", text)
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def test_a_rounds_sample_grid_is_stored_as_public_media_and_listed_by_the_job_api(
    world: dict[str, Any], live_server: Any, token_for: Any
) -> None:
    from PIL import Image

    job = world["job"]
    url = live_server.url + reverse("federated:job-progress", args=[job.pk])
    token = world["credentials"]["progress-token"]
    # Given the ServerApp's report of round 1 with its sample grid (a PNG with a text chunk)
    grid = base64.b64encode(_png(text="private note")).decode()
    report = _report(world, 1, 0, 1, **{"sample-grid-png": grid})
    # When it is posted with the ServerApp's token
    assert _post(url, token, report).status_code == 200
    # Then the round's grid is a public PNG (re-encoded: no text chunk) ...
    row = JobRound.objects.get(job=job, index=1)
    public = requests.get(live_server.url + row.sample_grid.url, timeout=30)
    assert public.status_code == 200
    with Image.open(io.BytesIO(public.content)) as image:
        assert (image.format, image.size) == ("PNG", (64, 256))
        assert "parameters" not in image.info
    # ... that the job's REST detail lists, and the job's live section shows
    detail_url = live_server.url + reverse("federated:job-detail", args=[job.pk])
    auth = {"Authorization": f"Bearer {token_for(job.trainer)}"}
    detail = requests.get(detail_url, headers=auth, timeout=30).json()
    assert [r["sample_grid_url"] for r in detail["rounds"]] == [row.sample_grid.url]
    browser = Client()
    browser.force_login(job.trainer)
    live = browser.get(reverse("training:job-live", args=[job.pk])).content.decode()
    assert f'<figure class="round-grid" data-round="1"><a href="{row.sample_grid.url}">' in live
    # And round 2, reported without a grid, lists null
    assert _post(url, token, _report(world, 2, 0, 1)).status_code == 200
    detail = requests.get(detail_url, headers=auth, timeout=30).json()
    assert [r["sample_grid_url"] for r in detail["rounds"]] == [row.sample_grid.url, None]


@pytest.mark.parametrize(
    "grid",
    [
        "bm90IGEgcG5n",  # "not a png"
        "%%%",  # not base64
        base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode(),  # a PNG signature only
        base64.b64encode(_png((5000, 8))).decode(),  # wider than any grid
    ],
)
def test_a_bad_sample_grid_is_a_400_and_records_no_round(
    world: dict[str, Any], live_server: Any, grid: str
) -> None:
    job = world["job"]
    url = live_server.url + reverse("federated:job-progress", args=[job.pk])
    report = _report(world, 1, 0, 1, **{"sample-grid-png": grid})
    body = _error(_post(url, world["credentials"]["progress-token"], report), 400, "bad_progress")
    assert "sample grid" in body["message"] or "sample-grid-png" in body["message"]
    assert not JobRound.objects.filter(job_id=job.pk).exists()
    assert [jd.rounds_completed for jd in JobDataset.objects.filter(job=job)] == [0, 0]
