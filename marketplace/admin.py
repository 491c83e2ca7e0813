"""Admin: read-only ledger with reconciliation, staff credit grants, listings, licenses,
payouts to settle and the moderation queue of reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import Case, QuerySet, Value, When
from django.http import HttpRequest

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


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    """The moderation queue: open reports first; each action records who handled it."""

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
        "model_version",
        "dataset",
        "reason",
        "text",
        "status",
        "handled_by",
        "handled_at",
        "created_at",
    )
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Unpublish the version")
    def unpublish_version(
        self, request: AuthenticatedHttpRequest, queryset: QuerySet[Report]
    ) -> None:
        _run_each(
            self,
            request,
            queryset,
            lambda r: report_unpublish_version(report=r, staff=request.user),
            "version(s) unpublished",
        )

    @admin.action(description="Remove the model (or dataset)")
    def remove_model(self, request: AuthenticatedHttpRequest, queryset: QuerySet[Report]) -> None:
        _run_each(
            self,
            request,
            queryset,
            lambda r: report_remove_target(report=r, staff=request.user),
            "item(s) removed",
        )

    @admin.action(description="Dismiss")
    def dismiss(self, request: AuthenticatedHttpRequest, queryset: QuerySet[Report]) -> None:
        _run_each(
            self,
            request,
            queryset,
            lambda r: report_dismiss(report=r, staff=request.user),
            "report(s) dismissed",
        )
