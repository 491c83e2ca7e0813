"""Server-rendered marketplace pages: buy flow, wallet, payouts, library, earnings, reviews,
reports. Thin: parse the form, call one service or selector, render."""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.auth import AuthenticatedHttpRequest
from core.errors import ApplicationError
from core.pagination import page_context
from marketplace import selectors
from marketplace.charts import earnings_chart_svg
from marketplace.exports import statement_response
from marketplace.forms import (
    ListingForm,
    PayoutForm,
    PurchaseConfirmForm,
    ReportForm,
    ReviewForm,
    StatementForm,
    TopUpForm,
    new_key,
)
from marketplace.models import LedgerEntry, Listing
from marketplace.payments import default_provider
from marketplace.services.ledger import wallet_top_up
from marketplace.services.listings import listing_terms_set
from marketplace.services.payouts import payout_minimum, payout_request
from marketplace.services.purchases import platform_fee_bps, purchase_create
from marketplace.services.reports import report_create
from marketplace.services.reviews import review_create
from marketplace.templatetags.labels import bps_percent
from marketplace.upload_terms import LISTING_ERROR_FIELDS
from registry.access import can_view_dataset, can_view_version
from registry.models import Dataset, DatasetVersion, ModelVersion
from registry.selectors.models import own_models

ENTRIES_PER_PAGE = 25


def _target_url(target: ModelVersion | Dataset | object) -> str:
    if isinstance(target, ModelVersion):
        url = reverse(
            "registry:model-detail", kwargs={"model_id": target.model_id, "slug": target.model.slug}
        )
        return f"{url}?version={target.pk}"
    dataset = target if isinstance(target, Dataset) else target.dataset  # type: ignore[attr-defined]
    return reverse(
        "registry:dataset-detail", kwargs={"dataset_id": dataset.pk, "slug": dataset.slug}
    )


def _download_url(target: ModelVersion | DatasetVersion) -> str:
    if isinstance(target, ModelVersion):
        return reverse("registry:download-model-version", args=[target.pk])
    return reverse("registry:download-dataset-version", args=[target.pk])


def _visible_listing(request: HttpRequest, listing_id: int) -> Listing:
    listing = (
        Listing.objects.select_related("seller", "model_version__model", "dataset_version__dataset")
        .filter(pk=listing_id, is_active=True)
        .first()
    )
    if listing is None:
        raise Http404("No such listing.")
    target = listing.target
    visible = (
        can_view_version(request.user, target)
        if isinstance(target, ModelVersion)
        else can_view_dataset(request.user, target.dataset)
    )
    if not visible:
        raise Http404("No such listing.")
    return listing


# --- buying ------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def purchase_confirm(request: AuthenticatedHttpRequest, listing_id: int) -> HttpResponse:
    """The confirmation page; its form carries a fresh idempotency key."""
    listing = _visible_listing(request, listing_id)
    form = PurchaseConfirmForm(initial={"idempotency_key": new_key()})
    return _confirm_page(request, listing, form)


def _confirm_page(
    request: AuthenticatedHttpRequest,
    listing: Listing,
    form: PurchaseConfirmForm,
    error: ApplicationError | None = None,
) -> HttpResponse:
    target = listing.target
    buy = selectors.buy_state(request.user, target)
    context = {
        "listing": listing,
        "target": target,
        "target_url": _target_url(target),
        "buy": buy,
        "download_url": _download_url(target) if buy.can_download else "",
        "price": selectors.listing_price_now(listing),
        "balance": selectors.wallet_balance(user=request.user),
        "fee_bps": platform_fee_bps(),
        "form": form,
        "error": error,
    }
    return render(
        request,
        "marketplace/purchase_confirm.html",
        context,
        status=error.status_code if error else 200,
    )


@login_required
@require_POST
def purchase_submit(request: AuthenticatedHttpRequest, listing_id: int) -> HttpResponse:
    listing = _visible_listing(request, listing_id)
    form = PurchaseConfirmForm(request.POST)
    if not form.is_valid():
        err = ApplicationError("The form expired; confirm again.", code="idempotency_key_required")
        return _confirm_page(
            request, listing, PurchaseConfirmForm(initial={"idempotency_key": new_key()}), err
        )
    try:
        purchase_create(
            buyer=request.user,
            listing=listing,
            idempotency_key=form.cleaned_data["idempotency_key"],
        )
    except ApplicationError as err:
        if err.code == "already_owned":
            messages.info(request, "You already own this.")
            return redirect(_target_url(listing.target))
        return _confirm_page(request, listing, form, err)
    messages.success(request, f"You own {listing.target} now.")
    return redirect(_target_url(listing.target))


# --- selling: license and price ----------------------------------------------------------


def _listing_error_text(err: ApplicationError) -> str:
    """The service's message, except royalties in excess, which the API states in basis
    points and this page in percentages of the price."""
    if err.code != "royalties_exceed_price":
        return err.message
    details = err.details
    asked = ", ".join(
        f"{a['ancestor']} {bps_percent(a['royalty_bps'])}" for a in details.get("ancestors", [])
    )
    return (
        f"The lineage of this version asks {bps_percent(details['royalty_bps_total'])} of the "
        f"price in royalties ({asked}). After the {bps_percent(platform_fee_bps())} platform "
        f"fee, royalties may take at most {bps_percent(details['royalty_bps_max'])}, so this "
        "version cannot be sold until its ancestors ask less."
    )


@login_required
@require_http_methods(["GET", "POST"])
def listing_edit(request: AuthenticatedHttpRequest, version_id: int) -> HttpResponse:
    """The owner sets a model version's license and price."""
    version = _version_or_404(request, version_id)
    if version.model.owner_id != request.user.pk:
        raise Http404("No such version.")
    listing = selectors.listing_for(version)
    licenses = selectors.licenses_by_code()
    form = ListingForm(
        request.POST or None,
        licenses=licenses.values(),
        locked=version.published_at is not None,
        initial={"license_code": version.license_code, "price": listing.price if listing else 0},
    )
    if request.method == "POST" and form.is_valid():
        try:
            listing_terms_set(
                seller=request.user,
                version=version,
                license_code=form.cleaned_data["license_code"],
                price=form.cleaned_data["price"],
            )
        except ApplicationError as err:
            form.add_error(LISTING_ERROR_FIELDS.get(err.code), _listing_error_text(err))
        else:
            messages.success(request, "License and price saved.")
            return redirect(_target_url(version))
    context = {
        "form": form,
        "version": version,
        "target_url": _target_url(version),
        "licenses": licenses.values(),
        "fee_bps": platform_fee_bps(),
    }
    return render(
        request, "marketplace/listing_form.html", context, status=400 if form.errors else 200
    )


# --- wallet, statement, payouts -----------------------------------------------------------


def _wallet_page(
    request: AuthenticatedHttpRequest,
    top_up: TopUpForm,
    statement: StatementForm,
    status: int = 200,
) -> HttpResponse:
    user = request.user
    context = {
        "balance": selectors.wallet_balance(user=user),
        **page_context(request, selectors.wallet_entries(user=user), per_page=ENTRIES_PER_PAGE),
        "top_up_form": top_up,
        "statement_form": statement,
    }
    _with_reference_links(context["page"].object_list)
    return render(request, "marketplace/wallet.html", context, status=status)


def _reference_id(reference: str, prefix: str) -> int | None:
    rest = reference.removeprefix(prefix)
    return int(rest) if rest != reference and rest.isdigit() else None


def _with_reference_links(entries: Iterable[LedgerEntry]) -> None:
    """``reference_url`` and ``reference_label`` on each entry: what the credits paid for (the
    version bought, the training job, the payout), or nothing for a top-up or a grant."""
    rows = list(entries)
    purchase_ids = [
        pk for e in rows if (pk := _reference_id(e.transaction.reference, "purchase:")) is not None
    ]
    purchases = selectors.purchases_by_id(purchase_ids)
    for entry in rows:
        reference = entry.transaction.reference
        url, label = "", ""
        if (pk := _reference_id(reference, "purchase:")) is not None and pk in purchases:
            target = purchases[pk].listing.target
            url, label = _target_url(target), str(target)
        elif (pk := _reference_id(reference, "federated-job:")) is not None:
            url, label = reverse("training:job-detail", args=[pk]), f"Training job {pk}"
        elif _reference_id(reference, "payout:") is not None:
            url, label = reverse("marketplace:payouts-page"), "Payout"
        entry.reference_url = url  # type: ignore[attr-defined]  # for the template only
        entry.reference_label = label  # type: ignore[attr-defined]


def _default_statement_form() -> StatementForm:
    today = timezone.localdate()
    return StatementForm(initial={"from_": today.replace(day=1), "to": today})


@login_required
@require_http_methods(["GET", "POST"])
def wallet(request: AuthenticatedHttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _wallet_page(
            request, TopUpForm(initial={"idempotency_key": new_key()}), _default_statement_form()
        )
    form = TopUpForm(request.POST)
    if form.is_valid():
        try:
            top_up = wallet_top_up(
                user=request.user,
                amount=form.cleaned_data["amount"],
                provider=default_provider(),
                idempotency_key=form.cleaned_data["idempotency_key"],
            )
        except ApplicationError as err:
            form.add_error("amount", err.message)
        else:
            messages.success(request, f"Added {top_up.amount} credits.")
            return redirect("marketplace:wallet-page")
    return _wallet_page(request, form, _default_statement_form(), status=400)


@login_required
@require_GET
def wallet_statement(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = StatementForm(request.GET)
    if not form.is_valid():
        return _wallet_page(
            request, TopUpForm(initial={"idempotency_key": new_key()}), form, status=400
        )
    start: datetime.date = form.cleaned_data["from_"]
    end: datetime.date = form.cleaned_data["to"]
    try:
        start, end = selectors.statement_period(start.isoformat(), end.isoformat())
    except ApplicationError as err:
        form.add_error("to", err.message)
        return _wallet_page(
            request, TopUpForm(initial={"idempotency_key": new_key()}), form, status=400
        )
    lines = selectors.wallet_statement(user=request.user, start=start, end=end)
    return statement_response(lines, start, end)


@login_required
@require_http_methods(["GET", "POST"])
def payouts(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = PayoutForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                payout = payout_request(user=request.user, amount=form.cleaned_data["amount"])
            except ApplicationError as err:
                form.add_error("amount", err.message)
            else:
                messages.success(request, f"Payout of {payout.amount} credits requested.")
                return redirect("marketplace:payouts-page")
        status = 400
    context = {
        "form": form,
        "balance": selectors.wallet_balance(user=request.user),
        "withdrawable": selectors.withdrawable_balance(user=request.user),
        "minimum": payout_minimum(),
        "payouts": selectors.payouts_for(user=request.user)[:50],
    }
    return render(request, "marketplace/payouts.html", context, status=status)


# --- library and earnings -------------------------------------------------------------------


@login_required
@require_GET
def library(request: AuthenticatedHttpRequest) -> HttpResponse:
    items = []
    for entitlement in selectors.library_for(user=request.user):
        target = entitlement.model_version or entitlement.dataset_version
        if target is None:  # the table's check constraint says one of them is set
            continue
        items.append(
            {
                "entitlement": entitlement,
                "target": target,
                "url": _target_url(target),
                "download_url": _download_url(target),
            }
        )
    # What the user made (uploads, and LoRAs their federated jobs published) is theirs too.
    mine = own_models(request.user).filter(is_removed=False).order_by("-created_at", "-pk")
    return render(request, "marketplace/library.html", {"items": items, "mine": mine[:100]})


@login_required
@require_GET
def earnings(request: AuthenticatedHttpRequest) -> HttpResponse:
    days = selectors.earnings_by_day(user=request.user)
    context = {
        "days": days,
        "total": sum(d.amount for d in days),
        "chart": earnings_chart_svg(days),
        "sales": selectors.sales_by_listing(user=request.user),
        "fee_bps": platform_fee_bps(),
        "balance": selectors.wallet_balance(user=request.user),
        "withdrawable": selectors.withdrawable_balance(user=request.user),
        "minimum": payout_minimum(),
    }
    return render(request, "marketplace/earnings.html", context)


# --- reviews and reports ------------------------------------------------------------------


def _version_or_404(request: HttpRequest, version_id: int) -> ModelVersion:
    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if version is None or not can_view_version(request.user, version):
        raise Http404("No such version.")
    return version


_REVIEW_FIELDS = {"bad_rating": "rating"}


@login_required
@require_POST
def review_submit(request: AuthenticatedHttpRequest, version_id: int) -> HttpResponse:
    version = _version_or_404(request, version_id)
    form = ReviewForm(request.POST)
    if form.is_valid():
        try:
            review_create(
                user=request.user,
                version=version,
                rating=form.cleaned_data["rating"],
                text=form.cleaned_data["text"],
            )
        except ApplicationError as err:
            form.add_error(_REVIEW_FIELDS.get(err.code), err.message)
        else:
            messages.success(request, "Thanks for your review.")
            return redirect(_target_url(version))
    context = {"form": form, "version": version, "target_url": _target_url(version)}
    return render(request, "marketplace/review_form.html", context, status=400)


def _report(request: AuthenticatedHttpRequest, target: ModelVersion | Dataset) -> HttpResponse:
    form = ReportForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                report_create(
                    reporter=request.user,
                    target=target,
                    reason=form.cleaned_data["reason"],
                    text=form.cleaned_data["text"],
                )
            except ApplicationError as err:
                form.add_error(err.details.get("field"), err.message)
            else:
                messages.success(request, "Thank you. The moderators will look at it.")
                return redirect(_target_url(target))
        status = 400
    context = {"form": form, "target": target, "target_url": _target_url(target)}
    return render(request, "marketplace/report_form.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def report_version(request: AuthenticatedHttpRequest, version_id: int) -> HttpResponse:
    return _report(request, _version_or_404(request, version_id))


@login_required
@require_http_methods(["GET", "POST"])
def report_dataset(request: AuthenticatedHttpRequest, dataset_id: int) -> HttpResponse:
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None or not can_view_dataset(request.user, dataset):
        raise Http404("No such dataset.")
    return _report(request, dataset)
