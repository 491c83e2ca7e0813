"""Admin: read-only ledger with reconciliation, staff credit grants, listings, licenses."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

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
    Purchase,
    TopUp,
)
from marketplace.selectors import accounts_with_entry_sums, ledger_reconcile, ledger_total
from marketplace.services.ledger import credit_grant_create


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
            self.message_user(request, "Ledger reconciles: every balance equals its entries "
                              "and all entries sum to zero.", messages.SUCCESS)
            return
        for m in mismatches:
            self.message_user(request, f"{m.code}: balance {m.balance} but entries sum to "
                              f"{m.entries_sum}", messages.ERROR)
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
        grant = credit_grant_create(staff=request.user, user=obj.user,  # type: ignore[arg-type]
                                    amount=obj.amount, reason=obj.reason)
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
    readonly_fields = ("seller", "model_version", "dataset_version", "price",
                       "early_access_until", "royalty_bps")
    inlines = [ListingShareInline]


@admin.register(License)
class LicenseAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "credit_required", "commercial_use", "derivatives_allowed",
                    "different_license_allowed")
