"""The federated web pages: the trainer's jobs, the job wizard (estimate, launch, the
problems next to their fields), the job page and its live section, the data owner's
dashboard, approvals and the dataset page."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace
from typing import Any

import pytest

from federated.models import ApprovalState, FederatedJob, JobDataset
from federated.services.jobs import job_fail, job_progress_record
from marketplace.models import EscrowHold, EscrowStatus
from marketplace.selectors import wallet_balance
from tests.federated.factories import form_data

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")
State = FederatedJob.State
# session, user, then the page's own: job, datasets, rounds, events, escrow
JOB_PAGE_QUERIES = 8  # 7 for the job and its rounds, 1 for the header (balance, roles)
# session, user, nodes (+ their datasets), datasets, spends, budgets, earnings, inbox, and 1
# for the header (balance, roles, the owner's pending training requests)
DASHBOARD_QUERIES = 10


@pytest.fixture(autouse=True)
def _fee(settings: Any) -> None:
    settings.ATELIER_PLATFORM_FEE_BPS = 1000


@pytest.fixture
def world(fed: Any) -> SimpleNamespace:
    """A trainer with 10,000 credits, a published base checkpoint, and an owner's dataset of
    10 examples at 2 credits per example and round (automatic approval)."""
    trainer = fed.user("trainer", credits=10_000)
    base = fed.base_version(fed.user("creator"))
    owner = fed.user("owner")
    terms = fed.dataset(owner, count=10, price_per_example_round=2, name="Red circles")
    return SimpleNamespace(
        trainer=trainer, base=base, owner=owner, terms=terms, other=fed.user("other")
    )


def block(html: bytes, element_id: str) -> str:
    """The element with ``id`` up to the next sibling block (field or dataset option)."""
    text = html.decode()
    match = re.search(
        rf'id="{element_id}".*?(?=<div class="(?:field|dataset-option)|</fieldset>)', text, re.S
    )
    assert match is not None, f"no #{element_id}"
    return match.group(0)


def points(html: bytes, css_class: str) -> list[str]:
    """The ``data-round`` of each point of the chart with ``css_class``."""
    svg = re.search(rf'<svg class="chart {css_class}".*?</svg>', html.decode(), re.S)
    assert svg is not None, f"no {css_class}"
    return re.findall(r'<circle class="point"[^>]*data-round="(\d+)"', svg.group(0))


# --- access -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/train/",
        "/train/new/",
        "/train/jobs/1/",
        "/train/jobs/1/live/",
        "/nodes/",
        "/nodes/datasets/1/",
    ],
)
def test_pages_send_anonymous_visitors_to_the_login(client: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_job_list_shows_my_jobs_with_state_rounds_and_cost(
    client: Any, fed: Any, world: Any
) -> None:
    job = fed.launch(world.trainer, fed.spec(world.base, [world.terms], rounds=2))
    fed.launch(
        fed.user("rival", credits=1_000), fed.spec(world.base, [world.terms], name="Not mine")
    )
    client.force_login(world.trainer)
    response = client.get("/train/")
    assert response.status_code == 200
    rows = re.findall(rb'<tr data-job="(\d+)">', response.content)
    assert rows == [str(job.pk).encode()]
    row = re.search(rf'<tr data-job="{job.pk}">(.*?)</tr>'.encode(), response.content, re.S)
    assert row is not None
    assert b'<td class="rounds">0/2</td>' in row.group(1)
    assert b"44" in row.group(1)  # 2 x 10 x 2 = 40, fee 4
    assert b"Queued" in row.group(1)
    assert b'href="/train/new/"' in response.content


def test_job_page_is_404_for_a_user_who_is_neither_trainer_nor_owner(
    client: Any, fed: Any, world: Any
) -> None:
    job = fed.launch(world.trainer, fed.spec(world.base, [world.terms]))
    client.force_login(world.other)
    assert client.get(f"/train/jobs/{job.pk}/").status_code == 404
    assert client.get(f"/train/jobs/{job.pk}/live/").status_code == 404
    client.force_login(world.owner)  # the dataset's owner sees it, without a Cancel button
    response = client.get(f"/train/jobs/{job.pk}/")
    assert response.status_code == 200
    assert b"cancel-job" not in response.content


def test_the_nodes_pages_are_the_owners_only(client: Any, world: Any, make_user: Any) -> None:
    dv = world.terms.dataset_version_id
    client.force_login(world.other)
    assert client.get(f"/nodes/datasets/{dv}/").status_code == 404
    assert world.terms.dataset_version.dataset.name.encode() not in client.get("/nodes/").content
    client.force_login(make_user("staffer", is_staff=True))
    assert client.get(f"/nodes/datasets/{dv}/").status_code == 200
    client.force_login(world.owner)
    assert client.get(f"/nodes/datasets/{dv}/").status_code == 200


# --- the wizard ---------------------------------------------------------------------------------


def test_wizard_lists_base_versions_and_datasets_with_their_terms(
    client: Any, fed: Any, world: Any
) -> None:
    nc = fed.base_version(fed.user("nc"), license_code="custom")
    client.force_login(world.trainer)
    response = client.get("/train/new/")
    assert response.status_code == 200
    options = re.findall(rb'<option value="(\d+)"', response.content)
    assert str(world.base.pk).encode() in options
    assert str(nc.pk).encode() not in options  # its license allows no derivatives
    option = block(response.content, f"dataset-{world.terms.dataset_version_id}")
    assert "Red circles" in option and "by owner" in option
    assert '<dd class="examples">10</dd>' in option
    assert "2 credits per example per round" in option
    assert "Automatic" in option
    key = re.search(rb'name="idempotency_key" value="([0-9a-f]{32})"', response.content)
    assert key is not None


def test_estimate_shows_the_cost_lines_fee_and_total_and_charges_nothing(
    client: Any, world: Any
) -> None:
    client.force_login(world.trainer)
    response = client.post("/train/new/", form_data(world, world.terms))
    assert response.status_code == 200
    html = response.content
    line = re.search(
        rf'<tr data-dataset="{world.terms.dataset_version_id}">(.*?)</tr>'.encode(), html, re.S
    )
    assert line is not None and b'<td class="max-cost">40</td>' in line.group(1)
    assert b"<td>owner</td>" in line.group(1)
    assert b'<td class="owners-max">40</td>' in html
    assert b'<td class="fee">4</td>' in html
    assert b"Platform fee (10%)" in html and b"basis points" not in html  # issue #19
    assert b'<td class="total"><strong>44</strong></td>' in html
    assert b"Nothing stops this job." in html
    assert FederatedJob.objects.count() == 0
    assert wallet_balance(user=world.trainer) == 10_000


def test_launch_holds_the_escrow_and_redirects_to_the_job_page(client: Any, world: Any) -> None:
    client.force_login(world.trainer)
    response = client.post("/train/new/", form_data(world, world.terms, action="launch"))
    job = FederatedJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/train/jobs/{job.pk}/"
    assert (job.state, job.max_cost, job.idempotency_key) == (State.QUEUED, 44, "key-1")
    assert EscrowHold.objects.get(pk=job.escrow_id).status == EscrowStatus.HELD
    assert wallet_balance(user=world.trainer) == 10_000 - 44
    page = client.get(response["Location"])
    assert page.status_code == 200 and b"Launched Red circles LoRA" in page.content
    assert b"<dt>Platform fee</dt><dd>10%</dd>" in page.content  # a percentage (issue #19)


def test_a_double_submit_with_the_same_key_launches_once(client: Any, world: Any) -> None:
    client.force_login(world.trainer)
    data = form_data(world, world.terms, action="launch")
    first = client.post("/train/new/", data)
    second = client.post("/train/new/", data)
    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"]
    assert FederatedJob.objects.count() == 1
    assert wallet_balance(user=world.trainer) == 10_000 - 44


def test_the_same_key_for_another_request_is_refused_with_a_fresh_key(
    client: Any, world: Any
) -> None:
    client.force_login(world.trainer)
    client.post("/train/new/", form_data(world, world.terms, action="launch"))
    response = client.post("/train/new/", form_data(world, world.terms, action="launch", rounds=3))
    assert response.status_code == 400
    assert b"That Idempotency-Key was used for a different job request." in response.content
    assert b'name="idempotency_key" value="key-1"' not in response.content
    assert FederatedJob.objects.count() == 1


@pytest.mark.parametrize("action", ["estimate", "launch"])
def test_a_dataset_whose_terms_forbid_the_use_says_so_next_to_it(
    client: Any, fed: Any, world: Any, action: str
) -> None:
    research = fed.dataset(world.owner, allowed_uses=["research"], name="Research only")
    client.force_login(world.trainer)
    response = client.post("/train/new/", form_data(world, world.terms, research, action=action))
    assert response.status_code == (200 if action == "estimate" else 400)
    option = block(response.content, f"dataset-{research.dataset_version_id}")
    assert "its terms allow the uses research, not style." in option
    assert "its terms allow" not in block(
        response.content, f"dataset-{world.terms.dataset_version_id}"
    )
    assert FederatedJob.objects.count() == 0
    assert wallet_balance(user=world.trainer) == 10_000


def test_a_target_epsilon_above_a_datasets_budget_says_so_next_to_it(
    client: Any, world: Any
) -> None:
    client.force_login(world.trainer)
    response = client.post(
        "/train/new/", form_data(world, world.terms, action="launch", target_epsilon=50)
    )
    assert response.status_code == 400
    option = block(response.content, f"dataset-{world.terms.dataset_version_id}")
    assert "the target epsilon 50 is above its per-job budget 8." in option
    assert FederatedJob.objects.count() == 0
    assert wallet_balance(user=world.trainer) == 10_000


def test_insufficient_credits_says_so_with_a_link_to_the_wallet(
    client: Any, fed: Any, world: Any
) -> None:
    poor = fed.user("poor", credits=10)
    client.force_login(poor)
    response = client.post("/train/new/", form_data(world, world.terms, action="launch"))
    assert response.status_code == 400
    errors = re.search(rb'<div class="form-errors".*?</div>', response.content, re.S)
    assert errors is not None
    assert b"Not enough credits" in errors.group(0)
    assert b'href="/wallet/"' in errors.group(0)
    assert FederatedJob.objects.count() == 0
    assert wallet_balance(user=poor) == 10


def test_no_dataset_picked_says_so_next_to_the_datasets(client: Any, world: Any) -> None:
    client.force_login(world.trainer)
    response = client.post("/train/new/", form_data(world, action="launch"))
    assert response.status_code == 400
    picker = re.search(rb'id="field-datasets".*?</ul>', response.content, re.S)
    assert picker is not None and b"Pick 1 to 20 datasets." in picker.group(0)
    assert FederatedJob.objects.count() == 0


def test_a_setting_out_of_range_says_so_next_to_its_field(client: Any, world: Any) -> None:
    client.force_login(world.trainer)
    response = client.post("/train/new/", form_data(world, world.terms, rank=0))
    assert response.status_code == 200
    assert "rank must be a whole number from 1 to 128." in block(response.content, "field-rank")
    assert "rank must be" not in block(response.content, "field-rounds")


def test_text_in_a_number_field_is_a_form_error_and_calls_no_service(
    client: Any, world: Any
) -> None:
    client.force_login(world.trainer)
    response = client.post(
        "/train/new/", form_data(world, world.terms, rounds="many", action="launch")
    )
    assert response.status_code == 400
    assert "Enter a whole number." in block(response.content, "field-rounds")
    assert FederatedJob.objects.count() == 0


# --- the job page -------------------------------------------------------------------------------


@pytest.fixture
def running(fed: Any, world: Any) -> SimpleNamespace:
    """A running 3-round job on two datasets (the world's and a second owner's)."""
    owner2 = fed.user("owner2")
    terms2 = fed.dataset(owner2, count=20, price_per_example_round=1, name="Blue squares")
    job, _ = fed.running(world.trainer, fed.spec(world.base, [world.terms, terms2], rounds=3))
    return SimpleNamespace(
        job=job,
        h1=world.terms.dataset_version.manifest_hash,
        h2=terms2.dataset_version.manifest_hash,
        terms2=terms2,
        owner2=owner2,
    )


def report(fed: Any, r: SimpleNamespace, index: int) -> None:
    job_progress_record(
        job=r.job,
        payload=fed.report(
            r.job, index, {"11": (r.h1, 10, 1.0 * index), "22": (r.h2, 20, 0.5 * index)}
        ),
    )


def test_the_live_section_renders_the_rounds_reported(
    client: Any, fed: Any, world: Any, running: Any
) -> None:
    client.force_login(world.trainer)
    before = client.get(f"/train/jobs/{running.job.pk}/live/")
    assert b"No round reported yet." in before.content
    for index in (1, 2):
        report(fed, running, index)
    response = client.get(f"/train/jobs/{running.job.pk}/live/")
    assert response.status_code == 200
    html = response.content
    assert html.lstrip().startswith(b"{#") is False and b"<html" not in html
    assert b'id="job-live"' in html and b'data-terminal="false"' in html
    assert re.findall(rb'<tr data-round="(\d+)">', html) == [b"1", b"2"]
    round2 = re.search(rb'<tr data-round="2">(.*?)</tr>', html, re.S)
    assert round2 is not None
    assert b"node 11: Red circles, 10 examples" in round2.group(1)
    assert b"node 22: Blue squares, 20 examples" in round2.group(1)
    assert b"1.2\xc2\xa0KB" in round2.group(1) or b"1.2 KB" in round2.group(1)
    assert b'<span class="rounds-done">2/3 rounds</span>' in html


def test_the_charts_have_one_point_per_round_and_epsilon_per_dataset(
    client: Any, fed: Any, world: Any, running: Any
) -> None:
    for index in (1, 2):
        report(fed, running, index)
    client.force_login(world.trainer)
    html = client.get(f"/train/jobs/{running.job.pk}/").content
    assert points(html, "loss-chart") == ["1", "2"]
    epsilon = re.search(rb'<svg class="chart epsilon-chart".*?</svg>', html, re.S)
    assert epsilon is not None
    series = re.findall(rb'<g class="series" data-series="([^"]+)">', epsilon.group(0))
    assert series == [b"Red circles", b"Blue squares"]
    values = re.findall(
        rb'data-round="(\d)" data-value="([\d.]+)" data-dataset="(\d+)"', epsilon.group(0)
    )
    dv1, dv2 = (
        str(world.terms.dataset_version_id).encode(),
        str(running.terms2.dataset_version_id).encode(),
    )
    assert values == [(b"1", b"1", dv1), (b"2", b"2", dv1), (b"1", b"0.5", dv2), (b"2", b"1", dv2)]


def test_the_epsilon_chart_falls_back_to_the_largest_epsilon(
    client: Any, fed: Any, world: Any, running: Any
) -> None:
    # a node that is not in the job reported: no dataset series, the round's largest epsilon
    job_progress_record(
        job=running.job, payload=fed.report(running.job, 1, {"99": ("f" * 64, 5, 0.7)})
    )
    client.force_login(world.trainer)
    html = client.get(f"/train/jobs/{running.job.pk}/").content
    assert points(html, "epsilon-chart") == ["1"]
    assert b"data-series=" not in re.search(
        rb'<svg class="chart epsilon-chart".*?</svg>', html, re.S
    ).group(0)  # type: ignore[union-attr]
    assert b"not in this job" in html


def test_the_job_page_queries_do_not_grow_with_rounds(
    client: Any, fed: Any, world: Any, running: Any, django_assert_max_num_queries: Any
) -> None:
    client.force_login(world.trainer)
    report(fed, running, 1)
    with django_assert_max_num_queries(JOB_PAGE_QUERIES):
        one = client.get(f"/train/jobs/{running.job.pk}/")
    for index in (2, 3):
        report(fed, running, index)
    with django_assert_max_num_queries(JOB_PAGE_QUERIES):
        three = client.get(f"/train/jobs/{running.job.pk}/")
    assert one.status_code == three.status_code == 200
    assert len(points(three.content, "loss-chart")) == 3


def test_the_job_page_shows_the_settlement_and_the_reason_after_a_failure(
    client: Any, fed: Any, world: Any, running: Any
) -> None:
    report(fed, running, 1)
    job_fail(job=running.job, reason="round 2: 0 accepted replies")
    client.force_login(world.trainer)
    html = client.get(f"/train/jobs/{running.job.pk}/").content
    assert b'data-terminal="true"' in html
    assert b"round 2: 0 accepted replies" in html
    assert b'<dd class="owners-paid">40 credits</dd>' in html  # 2 x 10 + 1 x 20
    assert b'<dd class="fee-paid">4 credits</dd>' in html
    assert b"cancel-job" not in html
    row = re.search(
        rf'<tr data-dataset="{world.terms.dataset_version_id}">(.*?)</tr>'.encode(), html, re.S
    )
    assert row is not None and b'<td class="earned">20 ' in row.group(1)


def test_the_page_loads_its_script_from_a_static_file(
    client: Any, fed: Any, world: Any, running: Any
) -> None:
    client.force_login(world.trainer)
    html = client.get(f"/train/jobs/{running.job.pk}/").content
    assert b'src="/static/federated/job.js"' in html
    assert re.search(rb"<script(?![^>]*\bsrc=)[^>]*>", html) is None  # no inline script
    assert b"style=" not in html


def test_only_the_trainer_can_cancel(client: Any, fed: Any, world: Any, running: Any) -> None:
    client.force_login(world.owner)
    assert client.post(f"/train/jobs/{running.job.pk}/cancel/").status_code == 404
    assert FederatedJob.objects.get(pk=running.job.pk).state == State.RUNNING
    client.force_login(world.trainer)
    assert b"cancel-job" in client.get(f"/train/jobs/{running.job.pk}/").content
    response = client.post(f"/train/jobs/{running.job.pk}/cancel/")
    assert response.status_code == 302
    assert FederatedJob.objects.get(pk=running.job.pk).state == State.CANCELLED
    assert wallet_balance(user=world.trainer) == 10_000  # no round completed: all back


def test_cancel_needs_a_post(client: Any, world: Any, running: Any) -> None:
    client.force_login(world.trainer)
    assert client.get(f"/train/jobs/{running.job.pk}/cancel/").status_code == 405
    assert FederatedJob.objects.get(pk=running.job.pk).state == State.RUNNING


def test_a_completed_job_links_its_lora_and_shows_its_sample_images(
    client: Any, fed: Any, world: Any, server_out: Any
) -> None:
    from federated.services.jobs import job_complete

    job, _ = fed.running(world.trainer, fed.spec(world.base, [world.terms], rounds=2))
    h = world.terms.dataset_version.manifest_hash
    for index in (1, 2):
        job_progress_record(job=job, payload=fed.report(job, index, {"5": (h, 10, 1.0)}))
    job = job_complete(job=job, out_dir=server_out(job))
    assert job.state == State.COMPLETED
    client.force_login(world.trainer)
    html = client.get(f"/train/jobs/{job.pk}/").content
    version = job.result_version
    assert (
        f'href="/models/{version.model_id}/{version.model.slug}/?version={version.pk}"'.encode()
    ) in html
    assert re.findall(rb'<figure data-round="(\d+)"><img src="/media/samples/', html) == [b"2"]
    listing = client.get("/train/").content
    assert b'class="result-link"' in listing


# --- the data owner -----------------------------------------------------------------------------


@pytest.fixture
def manual(fed: Any, world: Any) -> SimpleNamespace:
    """A job waiting for the owner's approval of a manual dataset."""
    terms = fed.dataset(world.owner, count=10, approval="manual", name="Ask me first")
    job = fed.launch(world.trainer, fed.spec(world.base, [terms], rounds=2, target_epsilon=4.0))
    assert job.state == State.AWAITING_APPROVAL
    return SimpleNamespace(job=job, terms=terms, jd=JobDataset.objects.get(job=job))


def test_dashboard_shows_nodes_datasets_budgets_and_the_inbox(
    client: Any, fed: Any, world: Any, manual: Any, django_assert_max_num_queries: Any
) -> None:
    client.force_login(world.owner)
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        response = client.get("/nodes/")
    assert response.status_code == 200
    html = response.content
    request = re.search(rf'<tr data-approval="{manual.jd.pk}">(.*?)</tr>'.encode(), html, re.S)
    assert request is not None
    row = request.group(1)
    assert b'<span class="trainer">trainer</span>' in row
    assert b'<dd class="use">An art style</dd>' in row
    assert b'<dd class="commercial">no</dd>' in row
    assert b'<dd class="rounds">2</dd>' in row
    assert b'<dd class="target-epsilon">4</dd>' in row
    assert b'<dd class="max-earnings">20 credits</dd>' in row  # 1 x 10 x 2
    dataset = re.search(
        rf'<tr data-dataset="{manual.terms.dataset_version_id}">(.*?)</tr>'.encode(), html, re.S
    )
    assert dataset is not None
    assert b'reserved <span class="reserved">4</span>' in dataset.group(1)
    assert b'remaining <span class="remaining">16</span>' in dataset.group(1)
    assert len(re.findall(rb'<tr data-node="\d+">', html)) == 2  # one node per dataset
    assert b"atelier node init" in html
    assert b"online" not in re.search(rb'<table class="table nodes">.*?</table>', html, re.S).group(
        0
    )  # type: ignore[union-attr]


def test_dashboard_queries_do_not_grow_with_datasets_and_requests(
    client: Any, fed: Any, world: Any, manual: Any, django_assert_max_num_queries: Any
) -> None:
    for n in range(3):
        terms = fed.dataset(world.owner, approval="manual", name=f"More {n}")
        fed.launch(world.trainer, fed.spec(world.base, [terms], name=f"Job {n}"))
    client.force_login(world.owner)
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        response = client.get("/nodes/")
    assert len(re.findall(rb'<tr data-approval="\d+">', response.content)) == 4


def test_approve_queues_the_job(client: Any, world: Any, manual: Any) -> None:
    client.force_login(world.owner)
    response = client.post(f"/nodes/approvals/{manual.jd.pk}/approve/")
    assert response.status_code == 302 and response["Location"] == "/nodes/"
    manual.jd.refresh_from_db()
    assert manual.jd.approval == ApprovalState.APPROVED
    assert FederatedJob.objects.get(pk=manual.job.pk).state == State.QUEUED
    assert b"No request waits for you." in client.get("/nodes/").content


def test_reject_with_a_note_cancels_the_job_and_refunds(
    client: Any, world: Any, manual: Any
) -> None:
    client.force_login(world.owner)
    response = client.post(
        f"/nodes/approvals/{manual.jd.pk}/reject/", {"note": "Not for this base model."}
    )
    assert response.status_code == 302
    manual.jd.refresh_from_db()
    assert (manual.jd.approval, manual.jd.decision_note) == (
        ApprovalState.REJECTED,
        "Not for this base model.",
    )
    assert FederatedJob.objects.get(pk=manual.job.pk).state == State.CANCELLED
    assert wallet_balance(user=world.trainer) == 10_000


def test_another_user_cannot_approve_or_reject(client: Any, world: Any, manual: Any) -> None:
    client.force_login(world.other)
    assert client.post(f"/nodes/approvals/{manual.jd.pk}/approve/").status_code == 404
    assert client.post(f"/nodes/approvals/{manual.jd.pk}/reject/").status_code == 404
    client.force_login(world.trainer)
    assert client.post(f"/nodes/approvals/{manual.jd.pk}/approve/").status_code == 404
    manual.jd.refresh_from_db()
    assert manual.jd.approval == ApprovalState.PENDING


def test_approving_twice_after_a_reject_says_why(client: Any, world: Any, manual: Any) -> None:
    client.force_login(world.owner)
    client.post(f"/nodes/approvals/{manual.jd.pk}/reject/")
    response = client.post(f"/nodes/approvals/{manual.jd.pk}/approve/", follow=True)
    assert response.status_code == 200
    assert b"it awaits no approval" in response.content


def test_dataset_page_shows_epsilon_spent_per_job_and_the_earnings_chart(
    client: Any, fed: Any, world: Any
) -> None:
    h = world.terms.dataset_version.manifest_hash
    spent = []
    for n, eps in enumerate((1.5, 2.5)):
        job, _ = fed.running(
            world.trainer, fed.spec(world.base, [world.terms], rounds=2, name=f"Job {n}")
        )
        job_progress_record(job=job, payload=fed.report(job, 1, {"5": (h, 10, eps)}))
        job_fail(job=job, reason="stopped after round 1")
        spent.append(job)
    client.force_login(world.owner)
    response = client.get(f"/nodes/datasets/{world.terms.dataset_version_id}/")
    assert response.status_code == 200
    html = response.content
    assert b'<dd class="spent">4</dd>' in html
    assert b'<dd class="remaining">16</dd>' in html
    per_job = re.findall(
        rb'<tr data-job="(\d+)"><td>[^<]*</td><td>[^<]*</td>'
        rb'<td class="epsilon">([\d.]+)</td>',
        html,
    )
    assert per_job == [(str(spent[0].pk).encode(), b"1.5"), (str(spent[1].pk).encode(), b"2.5")]
    earned = re.findall(
        rb'<circle class="point"[^>]*data-job="(\d+)" data-earned="(\d+)" '
        rb'data-total="(\d+)"',
        html,
    )
    assert earned == [
        (str(spent[0].pk).encode(), b"20", b"20"),
        (str(spent[1].pk).encode(), b"20", b"40"),
    ]
    assert b'<strong class="total-earned">40</strong>' in html
    assert b'class="budget-spent"' in html


# --- preview images of a private dataset ---------------------------------------------------------


def _photo(*, size: tuple[int, int] = (800, 600), fmt: str = "JPEG") -> Any:
    """A photo as a camera leaves it: EXIF with the camera's make and a GPS position."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    image = Image.new("RGB", size, (200, 40, 40))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}  # GPSInfo: latitude
    out = io.BytesIO()
    image.save(out, format=fmt, exif=exif)
    return SimpleUploadedFile("IMG_0042.jpg", out.getvalue(), content_type="image/jpeg")


def test_the_owner_adds_a_preview_stored_small_and_without_its_metadata(
    client: Any, world: Any
) -> None:
    from PIL import Image

    from registry.models import DatasetPreview

    # When the owner adds a camera photo as a preview
    client.force_login(world.owner)
    url = f"/nodes/datasets/{world.terms.dataset_version_id}/previews/"
    response = client.post(url, {"image": _photo(), "caption": "A red one"})
    # Then it is kept as a PNG of at most 512 px a side, with no EXIF, under a server name
    assert response.status_code == 302
    preview = DatasetPreview.objects.get(dataset_version=world.terms.dataset_version)
    with preview.image.open("rb") as stored:
        data = stored.read()
    image = Image.open(io.BytesIO(data))
    assert (image.format, max(image.size)) == ("PNG", 512)
    assert b"SecretCam" not in data and not image.getexif()
    assert "IMG_0042" not in preview.image.name and preview.caption == "A red one"
    # And it shows on the dataset's public page, and on the owner's page with a remove button
    dataset = world.terms.dataset_version.dataset
    public = client.get(f"/datasets/{dataset.pk}/{dataset.slug}/")
    assert preview.image.url.encode() in public.content
    mine = client.get(f"/nodes/datasets/{world.terms.dataset_version_id}/")
    assert f'data-preview="{preview.pk}"'.encode() in mine.content


def test_a_file_that_is_not_an_image_is_refused_next_to_the_field(client: Any, world: Any) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from registry.models import DatasetPreview

    client.force_login(world.owner)
    url = f"/nodes/datasets/{world.terms.dataset_version_id}/previews/"
    fake = SimpleUploadedFile("cat.png", b"not an image at all", content_type="image/png")
    response = client.post(url, {"image": fake})
    assert response.status_code == 400
    assert "not a readable PNG, JPEG or WebP" in block(response.content, "field-image")
    missing = client.post(url, {"caption": "no file"})
    assert missing.status_code == 400 and "required" in block(missing.content, "field-image")
    assert not DatasetPreview.objects.exists()


def test_only_the_owner_adds_or_removes_previews(client: Any, world: Any) -> None:
    from registry.models import DatasetPreview

    client.force_login(world.owner)
    url = f"/nodes/datasets/{world.terms.dataset_version_id}/previews/"
    assert client.post(url, {"image": _photo(size=(64, 64))}).status_code == 302
    preview = DatasetPreview.objects.get()
    # Another user can neither add one nor remove the owner's
    client.force_login(world.other)
    assert client.post(url, {"image": _photo(size=(64, 64))}).status_code == 404
    assert client.post(f"{url}{preview.pk}/remove/").status_code == 404
    assert DatasetPreview.objects.count() == 1
    # The owner removes it
    client.force_login(world.owner)
    assert client.post(f"{url}{preview.pk}/remove/").status_code == 302
    assert not DatasetPreview.objects.exists()


# --- what buyers and trainers see of a private dataset, and the owner's terms form --------------


def _public_page(client: Any, terms: Any) -> bytes:
    dataset = terms.dataset_version.dataset
    response = client.get(f"/datasets/{dataset.pk}/{dataset.slug}/")
    assert response.status_code == 200
    return bytes(response.content)


def test_the_public_page_of_a_private_dataset_shows_price_terms_and_train_on_this(
    client: Any, world: Any
) -> None:
    # Given a trainer on the public page of the owner's dataset (2 credits per example-round)
    client.force_login(world.trainer)
    html = _public_page(client, world.terms).decode()
    offer = html[
        html.index('id="dataset-offer"') : html.index(
            "</section>", html.index('id="dataset-offer"')
        )
    ]
    # Then the price, the terms and the budget left are there
    assert "2 credits per example and round" in offer
    assert "10 examples: 20 credits a round" in offer
    assert '<dd class="families">SD 1.x, SD 2.x</dd>' in offer
    assert '<dd class="commercial">Not allowed</dd>' in offer
    assert "ε 20 of 20: 2 more jobs at most" in offer
    # and "Train on this" opens the wizard with that dataset already picked
    dv = world.terms.dataset_version_id
    assert f'href="/train/new/?dataset={dv}"' in offer
    wizard = client.get(f"/train/new/?dataset={dv}").content.decode()
    assert re.search(rf'<input type="checkbox" name="datasets" value="{dv}" checked>', wizard)
    # (a made-up id is ignored: nothing is picked)
    wizard = client.get("/train/new/?dataset=999999").content.decode()
    assert (
        'name="datasets" value' in wizard
        and " checked>" not in wizard.split("dataset-picker")[1].split("</fieldset>")[0]
    )


def test_the_public_page_shows_previews_but_never_the_manifest_files(
    client: Any, world: Any
) -> None:
    # Given the owner added one preview
    client.force_login(world.owner)
    url = f"/nodes/datasets/{world.terms.dataset_version_id}/previews/"
    assert client.post(url, {"image": _photo(size=(64, 64))}).status_code == 302
    # When anyone opens the public page
    client.logout()
    html = _public_page(client, world.terms).decode()
    # Then the one preview is the only image of the dataset, and the manifest's file entries
    # and folder never show
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 1 and images[0].startswith("/media/")
    assert "secret_holiday" not in html and "private-photos" not in html
    # and visitors are asked to log in by the wizard, with the dataset kept
    dv = world.terms.dataset_version_id
    response = client.get(f"/train/new/?dataset={dv}")
    assert response.status_code == 302 and "dataset%3D" in response["Location"]


def test_the_owner_sees_edit_your_terms_instead_of_train_on_this(client: Any, world: Any) -> None:
    client.force_login(world.owner)
    html = _public_page(client, world.terms).decode()
    assert 'class="button edit-terms"' in html and 'id="train-on-this"' not in html


def _terms_form(**values: Any) -> dict[str, Any]:
    return {
        "pricing": "job",
        "price": 50,
        "allowed_families": ["sd1"],
        "allowed_uses": ["style", "research"],
        "commercial_use": "on",
        "approval": "manual",
        "require_dp": "on",
        "epsilon_per_job": 4,
        "delta": 1e-5,
        "epsilon_lifetime": 40,
        **values,
    }


def test_the_owner_edits_the_terms_on_the_dataset_page(client: Any, world: Any) -> None:
    # Given the owner's dataset page, whose form holds the current terms
    client.force_login(world.owner)
    page = f"/nodes/datasets/{world.terms.dataset_version_id}/"
    html = client.get(page).content.decode()
    assert 'id="terms-form"' in html
    assert re.search(r'name="price"[^>]*value="2"', html)
    # When they change them
    response = client.post(f"{page}terms/", _terms_form())
    # Then they are saved and the public page says so
    assert response.status_code == 302 and response["Location"] == page
    terms = type(world.terms).objects.get(pk=world.terms.pk)
    assert (terms.price_per_job, terms.price_per_example_round) == (50, 0)
    assert (terms.allowed_families, terms.allowed_uses) == (["sd1"], ["style", "research"])
    assert (terms.commercial_use, terms.approval, terms.epsilon_per_job) == (True, "manual", 4.0)
    html = _public_page(client, world.terms).decode()
    assert "50 credits per job" in html and "The owner approves each job" in html


def test_bad_terms_are_a_400_next_to_their_field(client: Any, world: Any) -> None:
    client.force_login(world.owner)
    url = f"/nodes/datasets/{world.terms.dataset_version_id}/terms/"
    response = client.post(url, _terms_form(epsilon_lifetime=1))
    assert response.status_code == 400
    html = response.content.decode()
    field = html[html.index('id="field-epsilon_lifetime"') :]
    assert (
        "has-error" in html[html.rfind("<div", 0, html.index('id="field-epsilon_lifetime"')) :][:80]
    )
    assert "Must be at least epsilon_per_job." in field[: field.index("</div>")]
    response = client.post(url, _terms_form(price=-1, allowed_uses=[]))
    assert response.status_code == 400
    assert type(world.terms).objects.get(pk=world.terms.pk).price_per_example_round == 2


def test_only_the_owner_can_edit_the_terms(client: Any, world: Any) -> None:
    url = f"/nodes/datasets/{world.terms.dataset_version_id}/terms/"
    client.force_login(world.other)
    assert client.post(url, _terms_form(price=0)).status_code == 404
    client.force_login(world.trainer)
    assert client.post(url, _terms_form(price=0)).status_code == 404
    client.logout()
    assert client.post(url, _terms_form(price=0)).status_code == 302  # to the login
    terms = type(world.terms).objects.get(pk=world.terms.pk)
    assert (terms.price_per_example_round, terms.price_per_job) == (2, 0)


def test_a_median_short_side_rounded_to_0_reads_32_px_or_less(client: Any, fed: Any) -> None:
    # Given a manifest of 32 px images, whose median the engine rounds to 64 px steps: 0
    from registry.models import DatasetVersion

    terms = fed.dataset(fed.user("owner3"))
    DatasetVersion.objects.filter(pk=terms.dataset_version_id).update(
        manifest={**terms.dataset_version.manifest, "median_short_side": 0}
    )
    html = _public_page(client, terms).decode()
    assert "<dt>Median short side</dt><dd>32 px or less</dd>" in html
    assert "<dd>0</dd>" not in html


def test_a_lora_trained_on_the_site_links_its_job_and_datasets(
    client: Any, fed: Any, world: Any, server_out: Any
) -> None:
    from federated.services.jobs import job_complete

    # Given a completed 2-round job on the world's dataset that spent epsilon 1.25
    job, _ = fed.running(world.trainer, fed.spec(world.base, [world.terms], rounds=2))
    h = world.terms.dataset_version.manifest_hash
    for index in (1, 2):
        job_progress_record(job=job, payload=fed.report(job, index, {"5": (h, 10, 1.25)}))
    job = job_complete(job=job, out_dir=server_out(job))
    version = job.result_version
    model_page = f"/models/{version.model_id}/{version.model.slug}/?version={version.pk}"
    # When a buyer opens the LoRA's page
    client.force_login(world.other)
    html = client.get(model_page).content.decode()
    # Then it says how it was trained: rounds, privacy spent, the dataset linked
    card = html[
        html.index('id="trained-from"') : html.index("</section>", html.index('id="trained-from"'))
    ]
    assert '<dd class="rounds">2 of 2</dd>' in card
    assert "ε 1.25 spent" in card
    dataset = world.terms.dataset_version.dataset
    assert (
        f'href="/datasets/{dataset.pk}/{dataset.slug}/?version={world.terms.dataset_version_id}"'
        in card
    )
    # and the job page is linked for those who may open it (its trainer), not for a buyer
    assert 'class="job-link"' not in card
    client.force_login(world.trainer)
    html = client.get(model_page).content.decode()
    assert f'class="job-link" href="/train/jobs/{job.pk}/"' in html
