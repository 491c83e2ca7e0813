"""Admin: read-only ledger with reconciliation, staff credit grants, listings, licenses,
payouts to settle and the moderation queue of reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import Case, QuerySet, Value, When
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from core.auth import AuthenticatedHttpRequest
from core.errors import ApplicationError
from marketplace.models import (
    Account,
    CreditGrant,
    Entitlement,
    EscrowHold,
    LedgerEntry,
    LedgerTransaction,
    License,
    Listing,
    ListingShare,
    Payout,
    Purchase,
    Report,
    ReportStatus,
    TopUp,
)
from marketplace.selectors import accounts_with_entry_sums, ledger_reconcile, ledger_total
from marketplace.services.ledger import credit_grant_create
from marketplace.services.payouts import payout_mark_paid, payout_reject
from marketplace.services.reports import (
    report_dismiss,
    report_remove_target,
    report_unpublish_version,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Ledger rows change only through services: no add, change or delete here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ("code", "kind", "owner", "balance", "entries_sum", "reconciled")
    list_filter = ("kind",)
    search_fields = ("code", "owner__username")
    actions = ["reconcile"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        return accounts_with_entry_sums().select_related("owner")

    @admin.display(description="Sum of entries")
    def entries_sum(self, obj: Account) -> int:
        return obj.entries_sum  # type: ignore[attr-defined]

    @admin.display(boolean=True, description="Balance = entries")
    def reconciled(self, obj: Account) -> bool:
        return obj.balance == obj.entries_sum  # type: ignore[attr-defined]

    @admin.action(description="Reconcile the whole ledger")
    def reconcile(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        mismatches = ledger_reconcile()
        total = ledger_total()
        if not mismatches and total == 0:
            self.message_user(
                request,
                "Ledger reconciles: every balance equals its entries and all entries sum to zero.",
                messages.SUCCESS,
            )
            return
        for m in mismatches:
            self.message_user(
                request,
                f"{m.code}: balance {m.balance} but entries sum to {m.entries_sum}",
                messages.ERROR,
            )
        if total:
            self.message_user(request, f"All entries sum to {total}, not 0.", messages.ERROR)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and bool(request.user.is_staff)  # lets the list run actions


class LedgerEntryInline(admin.TabularInline):
    model = LedgerEntry
    extra = 0
    can_delete = False
    readonly_fields = ("account", "amount", "memo")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ("pk", "kind", "reference", "created_at")
    list_filter = ("kind",)
    search_fields = ("reference", "idempotency_key")
    inlines = [LedgerEntryInline]


@admin.register(CreditGrant)
class CreditGrantAdmin(admin.ModelAdmin):
    """Staff grant credits by adding a grant; the service records it in the ledger."""

    list_display = ("user", "amount", "reason", "granted_by", "created_at")
    fields = ("user", "amount", "reason")
    autocomplete_fields = ()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: CreditGrant, form: Any, change: bool) -> None:
        # The admin lets only signed-in staff in; ModelAdmin types the request as any request.
        grant = credit_grant_create(
            staff=request.user,  # type: ignore[arg-type]
            user=obj.user,
            amount=obj.amount,
            reason=obj.reason,
        )
        obj.pk = grant.pk
        obj.ledger_transaction = grant.ledger_transaction
        obj.granted_by = grant.granted_by


for model in (TopUp, EscrowHold, Purchase, Entitlement):
    admin.site.register(model, ReadOnlyAdmin)


class ListingShareInline(admin.TabularInline):
    model = ListingShare
    extra = 0


@admin.register(Listing)
class ListingAdmin(admin.ModelAdmin):
    list_display = ("pk", "seller", "model_version", "dataset_version", "price", "is_active")
    list_filter = ("is_active",)
    readonly_fields = (
        "seller",
        "model_version",
        "dataset_version",
        "price",
        "early_access_until",
        "royalty_bps",
    )
    inlines = [ListingShareInline]


@admin.register(License)
class LicenseAdmin(admin.ModelAdmin):
    list_display = (
        "code",
        "name",
        "credit_required",
        "commercial_use",
        "derivatives_allowed",
        "different_license_allowed",
    )


def _run_each(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    action: Callable[..., Any],
    done: str,
) -> None:
    """Call a service on each selected row; report successes and refusals separately."""
    ok = 0
    for obj in queryset:
        try:
            action(obj)
        except ApplicationError as err:
            modeladmin.message_user(request, f"{obj}: {err.message}", messages.ERROR)
        else:
            ok += 1
    if ok:
        modeladmin.message_user(request, f"{ok} {done}.", messages.SUCCESS)


@admin.register(Payout)
class PayoutAdmin(admin.ModelAdmin):
    """Staff settle payout requests; the services move the credits in the ledger."""

    list_display = ("pk", "user", "amount", "status", "created_at", "handled_by", "handled_at")
    list_filter = ("status",)
    search_fields = ("user__username",)
    readonly_fields = (
        "user",
        "amount",
        "status",
        "request_transaction",
        "settle_transaction",
        "handled_by",
        "handled_at",
        "note",
        "created_at",
    )
    actions = ["mark_paid", "reject"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Mark the selected payouts paid")
    def mark_paid(self, request: AuthenticatedHttpRequest, queryset: QuerySet[Payout]) -> None:
        _run_each(
            self,
            request,
            queryset,
            lambda p: payout_mark_paid(payout=p, staff=request.user),
            "payout(s) marked paid",
        )

    @admin.action(description="Reject the selected payouts (credits go back)")
    def reject(self, request: AuthenticatedHttpRequest, queryset: QuerySet[Payout]) -> None:
        _run_each(
            self,
            request,
            queryset,
            lambda p: payout_reject(payout=p, staff=request.user),
            "payout(s) rejected",
        )


# The moderation buttons of a report's page: action name, button text, service, what is done.
MODERATION: dict[str, tuple[str, Callable[..., Report], str]] = {
    "unpublish": ("Unpublish the version", report_unpublish_version, "version unpublished"),
    "remove": ("Remove the model (or dataset)", report_remove_target, "removed from the site"),
    "dismiss": ("Dismiss the report", report_dismiss, "report dismissed"),
}


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    """The moderation queue: open reports first; each action records who handled it (on the
    report, and in the admin's history). A report's own page has the same actions as
    buttons, with a link to what was reported."""

    change_form_template = "admin/marketplace/report/change_form.html"
    list_display = (
        "pk",
        "reason",
        "target",
        "reporter",
        "status",
        "created_at",
        "handled_by",
        "handled_at",
    )
    list_filter = ("status", "reason")
    search_fields = ("text", "reporter__username")
    readonly_fields = (
        "reporter",
        "target_link",
        "reason",
        "text",
        "status",
        "handled_by",
        "handled_at",
        "created_at",
    )
    fields = readonly_fields
    actions = ["unpublish_version", "remove_model", "dismiss"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Report]:
        return (
            super()
            .get_queryset(request)
            .select_related("reporter", "handled_by", "model_version__model", "dataset")
        )

    def get_ordering(self, request: HttpRequest) -> list[Any]:
        open_first = Case(When(status=ReportStatus.OPEN, then=Value(0)), default=Value(1))
        return [open_first.asc(), "-created_at"]

    @admin.display(description="Reported")
    def target(self, obj: Report) -> str:
        return obj.target_label

    @admin.display(description="Reported")
    def target_link(self, obj: Report) -> str:
        if obj.model_version is not None:
            model = obj.model_version.model
            url = reverse("registry:model-detail", args=[model.pk, model.slug])
            url += f"?version={obj.model_version.pk}"
        else:
            assert obj.dataset is not None  # a report has exactly one target
            url = reverse("registry:dataset-detail", args=[obj.dataset.pk, obj.dataset.slug])
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">{}</a>', url, obj.target_label
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        moderate = self.admin_site.admin_view(require_POST(self.moderate_view))
        return [
            path(
                "<int:report_id>/moderate/<str:action>/",
                moderate,
                name="marketplace_report_moderate",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        report = self.get_object(request, object_id)
        buttons = []
        if report is not None and report.status == ReportStatus.OPEN:
            buttons = [
                (name, label, reverse("admin:marketplace_report_moderate", args=[report.pk, name]))
                for name, (label, _, _) in MODERATION.items()
                if name != "unpublish" or report.model_version_id
            ]
        context = {**(extra_context or {}), "moderation_buttons": buttons}
        return super().change_view(request, object_id, form_url, extra_context=context)

    def moderate_view(
        self, request: AuthenticatedHttpRequest, report_id: int, action: str
    ) -> HttpResponse:
        """One moderation button: call the service, say what happened, back to the report."""
        report = self.get_queryset(request).filter(pk=report_id).first()
        if report is None or action not in MODERATION:
            raise Http404("No such report or action.")
        if not self.has_change_permission(request, report):
            raise Http404("No such report or action.")
        _, service, done = MODERATION[action]
        try:
            service(report=report, staff=request.user)
        except ApplicationError as err:
            self.message_user(request, f"{report}: {err.message}", messages.ERROR)
        else:
            self.log_change(request, report, f"Moderation: {done}.")
            self.message_user(request, f"Report #{report.pk}: {done}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:marketplace_report_change", args=[report.pk]))

    def _moderate_each(
        self,
        request: AuthenticatedHttpRequest,
        queryset: QuerySet[Report],
        action: str,
        done: str,
    ) -> None:
        service = MODERATION[action][1]

        def act(report: Report) -> None:
            service(report=report, staff=request.user)
            self.log_change(request, report, f"Moderation: {MODERATION[action][2]}.")

        _run_each(self, request, queryset, act, done)

    @admin.action(description="Unpublish the version")
    def unpublish_version(
        self, request: AuthenticatedHttpRequest, queryset: QuerySet[Report]
    ) -> None:
        self._moderate_each(request, queryset, "unpublish", "version(s) unpublished")

    @admin.action(description="Remove the model (or dataset)")
    def remove_model(self, request: AuthenticatedHttpRequest, queryset: QuerySet[Report]) -> None:
        self._moderate_each(request, queryset, "remove", "item(s) removed")

    @admin.action(description="Dismiss")
    def dismiss(self, request: AuthenticatedHttpRequest, queryset: QuerySet[Report]) -> None:
        self._moderate_each(request, queryset, "dismiss", "report(s) dismissed")
