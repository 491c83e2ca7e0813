"""Server-rendered federated pages: the trainer's jobs, the job wizard and the job page (with
its live section), and the data owner's dashboard, approval inbox and dataset pages. Thin:
parse the form, call one service or selector, render."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.auth import AuthenticatedHttpRequest
from core.errors import ApplicationError, NotFoundError
from federated import charts, selectors
from federated.forms import JobForm, PreviewForm, RejectForm, TermsForm
from federated.models import DatasetTerms, FederatedJob, JobDataset, JobRound
from federated.round_clock import job_round_clock
from federated.services.datasets import dataset_terms_update
from federated.services.jobs import (
    JobEstimate,
    job_approve,
    job_cancel,
    job_create_and_launch,
    job_estimate,
    job_reject,
)
from marketplace.forms import new_key
from marketplace.selectors import wallet_balance
from registry.models import VersionStatus
from registry.selectors.versions import visible_versions
from registry.services.images import dataset_preview_add, dataset_preview_remove

MAX_DATASETS_OFFERED = 200
LIVE_POLL_MS = 2000


# --- trainer: jobs ----------------------------------------------------------------------------


@login_required
@require_GET
def job_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    jobs = selectors.jobs_of_trainer_with_progress(trainer=request.user)
    return render(request, "federated/job_list.html", {"jobs": jobs})


def _job_form(request: AuthenticatedHttpRequest, data: Any = None, **kwargs: Any) -> JobForm:
    return JobForm(
        data,
        base_versions=selectors.base_versions_for_training(user=request.user),
        dataset_terms=selectors.federated_datasets_available(user=request.user)[
            :MAX_DATASETS_OFFERED
        ],
        **kwargs,
    )


def _wizard(
    request: AuthenticatedHttpRequest,
    form: JobForm,
    *,
    estimate: JobEstimate | None = None,
    error: ApplicationError | None = None,
    status: int = 200,
) -> HttpResponse:
    by_dataset = {t.dataset_version_id: t for t in form.dataset_terms}
    context = {
        "form": form,
        "estimate": estimate,
        "estimate_lines": [
            (line, by_dataset.get(line.dataset_version_id)) for line in estimate.lines
        ]
        if estimate
        else [],
        "error": error,
        "balance": wallet_balance(user=request.user),
    }
    return render(request, "federated/job_new.html", context, status=status)


def _fresh_key(form: JobForm) -> None:
    """A new idempotency key in the re-rendered form (the old one belongs to another job)."""
    data = form.data.copy() if isinstance(form.data, QueryDict) else {**form.data}
    data["idempotency_key"] = new_key()
    form.data = data


@login_required
@require_http_methods(["GET", "POST"])
def job_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The wizard: "Estimate" re-renders with the cost and every problem; "Launch" creates
    and launches the job (once per idempotency key) and goes to its page."""
    if request.method == "GET":
        initial: dict[str, Any] = {"idempotency_key": new_key()}
        form = _job_form(request, initial=initial)
        wanted = request.GET.get("dataset", "")
        offered = {str(t.dataset_version_id) for t in form.dataset_terms}
        if wanted in offered:  # "Train on this" on a dataset's page
            form = _job_form(request, initial={**initial, "datasets": [int(wanted)]})
        return _wizard(request, form)
    form = _job_form(request, request.POST)
    if not form.is_valid():
        return _wizard(request, form, status=400)
    if request.POST.get("action") != "launch":
        try:
            estimate = job_estimate(trainer=request.user, spec=form.spec())
        except ApplicationError as err:
            form.add_application_error(err)
            return _wizard(request, form, status=400)
        form.add_problems(estimate.problems)
        return _wizard(request, form, estimate=estimate)
    try:
        job, created = job_create_and_launch(
            trainer=request.user,
            spec=form.spec(),
            idempotency_key=form.cleaned_data["idempotency_key"],
        )
    except ApplicationError as err:
        form.add_application_error(err)
        if err.code == "idempotency_key_reused":
            _fresh_key(form)
        return _wizard(request, form, error=err, status=400)
    if created:
        messages.success(request, f"Launched {job.name}: {job.max_cost} credits held in escrow.")
    return redirect("training:job-detail", job_id=job.pk)


def _job_or_404(request: AuthenticatedHttpRequest, job_id: int) -> FederatedJob:
    job = selectors.job_detail(job_id=job_id, user=request.user)
    if job is None:
        raise Http404("No such job.")
    return job


def _job_context(request: AuthenticatedHttpRequest, job: FederatedJob) -> dict[str, Any]:
    user = request.user
    sees_all = selectors.job_sees_everything(job=job, user=user)
    rows = selectors.job_round_rows(job=job, own_only=not sees_all)
    datasets = list(job.datasets.all())
    return {
        "job": job,
        "datasets": datasets,
        "rounds": rows,
        "events": selectors.job_events(job=job),
        "samples": selectors.job_samples(job=job),
        "loss_chart": charts.loss_chart_svg(rows, rounds_total=job.num_rounds),
        "epsilon_chart": charts.epsilon_chart_svg(rows, datasets, rounds_total=job.num_rounds),
        "is_trainer": sees_all,
        "can_cancel": sees_all
        and not job.is_terminal
        and job.state != FederatedJob.State.PUBLISHING,
        "live_url": reverse("training:job-live", kwargs={"job_id": job.pk}),
        "poll_ms": LIVE_POLL_MS,
        "round_clock": job_round_clock(job=job),
    }


@login_required
@require_GET
def job_detail(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    job = _job_or_404(request, job_id)
    return render(request, "federated/job_detail.html", _job_context(request, job))


@dataclass(frozen=True)
class PublicRound:
    """A round as the public job page shows it: how many nodes replied, not which."""

    index: int
    train_loss: float | None
    num_examples: int
    epsilon_max: float | None
    nodes: int
    grid_url: str


@require_GET
def job_public(request: HttpRequest, job_id: int) -> HttpResponse:
    """The public page of a job that published a LoRA the viewer may see (anyone, signed in
    or not, for a public LoRA): its rounds, losses, privacy spent and datasets, nothing more.
    No node identities, no owners' names or pay, no escrow, no log; a private dataset stays
    "a private dataset" unless the viewer may open it (``training_record``). Any other job
    (running, failed, withheld, its LoRA unpublished or hidden) is a 404."""
    job = (
        FederatedJob.objects.select_related("trainer", "base_version__model", "result_version")
        .prefetch_related(Prefetch("rounds", queryset=JobRound.objects.order_by("index")))
        .filter(pk=job_id, result_version__status=VersionStatus.PUBLISHED)
        .first()
    )
    if job is None or job.result_version_id is None:
        raise Http404("No such job.")
    version = visible_versions(request.user).filter(pk=job.result_version_id).first()
    if version is None:
        raise Http404("No such job.")
    record = selectors.training_record(version=version, user=request.user)
    rounds = [
        PublicRound(
            index=r.index,
            train_loss=r.train_loss,
            num_examples=r.num_examples,
            epsilon_max=r.epsilon_max,
            nodes=len(r.nodes),
            grid_url=r.sample_grid.url if r.sample_grid else "",
        )
        for r in job.rounds.all()
    ]
    rows = [
        selectors.RoundRow(
            r.index, r.train_loss, r.num_examples, None, 0, r.epsilon_max, [], {}, []
        )
        for r in rounds
    ]
    context = {
        "job": job,
        "version": version,
        "record": record,
        "rounds": rounds,
        "loss_chart": charts.loss_chart_svg(rows, rounds_total=job.num_rounds),
        "epsilon_chart": charts.epsilon_chart_svg(rows, [], rounds_total=job.num_rounds),
        "sees_full_page": selectors.job_visible_to(job=job, user=request.user),
    }
    return render(request, "federated/job_public.html", context)


@login_required
@require_GET
def job_live(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    """The job page's live section alone, for ``static/federated/job.js`` to swap in."""
    job = _job_or_404(request, job_id)
    response = render(request, "federated/_job_live.html", _job_context(request, job))
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def job_cancel_view(request: AuthenticatedHttpRequest, job_id: int) -> HttpResponse:
    job = _job_or_404(request, job_id)
    try:
        job = job_cancel(job=job, user=request.user)
    except NotFoundError as err:
        raise Http404(err.message) from err
    except ApplicationError as err:
        messages.error(request, err.message)
    else:
        messages.success(request, f"Cancelled. {job.refunded} credits came back to you.")
    return redirect("training:job-detail", job_id=job.pk)


# --- data owner: dashboard, approvals, datasets --------------------------------------------------


@login_required
@require_GET
def node_dashboard(request: AuthenticatedHttpRequest) -> HttpResponse:
    owner = request.user
    context = {
        "nodes": selectors.nodes_of_owner(owner=owner, include_revoked=True),
        "datasets": selectors.datasets_of_owner(owner=owner),
        "inbox": selectors.approval_inbox(owner=owner),
        "reject_form": RejectForm(),
    }
    return render(request, "federated/dashboard.html", context)


def _job_dataset_or_404(job_dataset_id: int) -> JobDataset:
    jd = JobDataset.objects.filter(pk=job_dataset_id).first()
    if jd is None:
        raise Http404("No such approval request.")
    return jd


@login_required
@require_POST
def approval_approve(request: AuthenticatedHttpRequest, job_dataset_id: int) -> HttpResponse:
    jd = _job_dataset_or_404(job_dataset_id)
    try:
        job = job_approve(job_dataset=jd, user=request.user)
    except NotFoundError as err:
        raise Http404(err.message) from err
    except ApplicationError as err:
        messages.error(request, err.message)
    else:
        messages.success(request, f"Approved: {job.name} by {job.trainer.get_username()}.")
    return redirect("training:dashboard")


@login_required
@require_POST
def approval_reject(request: AuthenticatedHttpRequest, job_dataset_id: int) -> HttpResponse:
    jd = _job_dataset_or_404(job_dataset_id)
    form = RejectForm(request.POST)
    note = form.cleaned_data["note"] if form.is_valid() else ""
    try:
        job = job_reject(job_dataset=jd, user=request.user, note=note)
    except NotFoundError as err:
        raise Http404(err.message) from err
    except ApplicationError as err:
        messages.error(request, err.message)
    else:
        messages.success(request, f"Declined: {job.name}. The trainer's escrow was refunded.")
    return redirect("training:dashboard")


def _owned_terms_or_404(request: AuthenticatedHttpRequest, dataset_version_id: int) -> DatasetTerms:
    terms = selectors.owned_federated_terms(
        dataset_version_id=dataset_version_id, user=request.user
    )
    if terms is None:
        raise Http404("No such dataset of yours.")
    return terms


def _dataset_page(
    request: AuthenticatedHttpRequest,
    terms: DatasetTerms,
    *,
    preview_form: PreviewForm | None = None,
    terms_form: TermsForm | None = None,
    status: int = 200,
) -> HttpResponse:
    budget = selectors.dataset_budget(terms=terms)
    earnings = selectors.dataset_earnings_timeline(terms=terms)
    context = {
        "terms": terms,
        "dataset": terms.dataset_version.dataset,
        "budget": budget,
        "earnings": earnings,
        "earned": sum(e.earned for e in earnings),
        "budget_chart": charts.budget_bar_svg(budget),
        "epsilon_chart": charts.epsilon_by_job_svg(budget),
        "earnings_chart": charts.dataset_earnings_svg(earnings),
        "previews": list(terms.dataset_version.previews.order_by("pk")),
        "preview_form": preview_form or PreviewForm(),
        "terms_form": terms_form or TermsForm(initial=TermsForm.initial_from(terms)),
    }
    return render(request, "federated/dataset_detail.html", context, status=status)


@login_required
@require_GET
def dataset_detail(request: AuthenticatedHttpRequest, dataset_version_id: int) -> HttpResponse:
    """One dataset's privacy budget (spent per job, reserved, remaining), earnings and the
    preview images its owner chose to show."""
    return _dataset_page(request, _owned_terms_or_404(request, dataset_version_id))


@login_required
@require_POST
def dataset_preview_add_view(
    request: AuthenticatedHttpRequest, dataset_version_id: int
) -> HttpResponse:
    terms = _owned_terms_or_404(request, dataset_version_id)
    form = PreviewForm(request.POST, request.FILES)
    if not form.is_valid():
        return _dataset_page(request, terms, preview_form=form, status=400)
    try:
        dataset_preview_add(
            dataset_version=terms.dataset_version,
            user=request.user,
            image=form.cleaned_data["image"],
            caption=form.cleaned_data["caption"],
        )
    except ApplicationError as err:
        form.add_error("image", err.message)
        return _dataset_page(request, terms, preview_form=form, status=err.status_code)
    messages.success(request, "Preview added: it shows on the dataset's page.")
    return redirect("training:dataset-detail", dataset_version_id=dataset_version_id)


@login_required
@require_POST
def dataset_preview_remove_view(
    request: AuthenticatedHttpRequest, dataset_version_id: int, preview_id: int
) -> HttpResponse:
    terms = _owned_terms_or_404(request, dataset_version_id)
    preview = terms.dataset_version.previews.filter(pk=preview_id).first()
    if preview is None:
        raise Http404("No such preview.")
    dataset_preview_remove(preview=preview, user=request.user)
    messages.success(request, "Preview removed.")
    return redirect("training:dataset-detail", dataset_version_id=dataset_version_id)


@login_required
@require_POST
def dataset_terms_edit(request: AuthenticatedHttpRequest, dataset_version_id: int) -> HttpResponse:
    """The owner changes the dataset's terms on its page (jobs launched keep theirs)."""
    terms = _owned_terms_or_404(request, dataset_version_id)
    form = TermsForm(request.POST)
    if not form.is_valid():
        return _dataset_page(request, terms, terms_form=form, status=400)
    try:
        dataset_terms_update(terms=terms, user=request.user, changes=form.changes())
    except ApplicationError as err:
        form.add_application_error(err)
        return _dataset_page(request, terms, terms_form=form, status=err.status_code)
    messages.success(request, "Terms saved: new jobs get them; launched jobs keep theirs.")
    return redirect("training:dataset-detail", dataset_version_id=dataset_version_id)
