"""Wallets, the double-entry ledger, licenses, listings, purchases and entitlements.

Every write goes through ``marketplace.services``; the ledger tables are append-only (the
service never updates or deletes a row, and database triggers refuse it too).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from registry.models import DatasetVersion, ModelVersion


class AccountKind(models.TextChoices):
    """A user has two accounts: ``wallet`` holds credits they bought (top-ups, grants,
    refunds): spendable, not withdrawable; ``earnings`` holds credits they earned (sales,
    royalties, collaborator shares, dataset earnings from federated jobs): spendable and the
    only ones a payout can take. Spending takes bought credits first, then earned ones."""

    WALLET = "wallet", "User wallet (bought credits)"
    EARNINGS = "earnings", "User earnings (earned credits, withdrawable)"
    ESCROW = "escrow", "Escrow"
    PLATFORM_REVENUE = "platform_revenue", "Platform revenue"
    PAYOUTS_CLEARING = "payouts_clearing", "Payouts clearing"
    EXTERNAL = "external", "External source (top-ups, grants)"


class Account(models.Model):
    """One ledger account. ``balance`` is the sum of its entries, kept in the same transaction.

    Only external accounts (money coming from outside the platform) may go below zero; the
    database refuses a negative balance anywhere else.
    """

    kind = models.CharField(max_length=20, choices=AccountKind.choices)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="ledger_accounts",
    )
    code = models.CharField(max_length=120, unique=True)
    balance = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("pk",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(balance__gte=0) | models.Q(kind="external"),
                name="account_balance_non_negative",
            ),
            models.UniqueConstraint(
                fields=("owner",),
                condition=models.Q(kind="wallet"),
                name="account_one_wallet_per_user",
            ),
            models.CheckConstraint(
                condition=models.Q(kind="wallet", owner__isnull=False) | ~models.Q(kind="wallet"),
                name="account_wallet_has_owner",
            ),
            models.UniqueConstraint(
                fields=("owner",),
                condition=models.Q(kind="earnings"),
                name="account_one_earnings_per_user",
            ),
            models.CheckConstraint(
                condition=models.Q(kind="earnings", owner__isnull=False)
                | ~models.Q(kind="earnings"),
                name="account_earnings_has_owner",
            ),
        ]

    def __str__(self) -> str:
        return self.code


class LedgerTransaction(models.Model):
    """One movement of credits; its entries sum to zero (checked by a deferred trigger)."""

    kind = models.CharField(max_length=40)
    reference = models.CharField(max_length=200, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-pk",)

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.reference}"


class LedgerEntry(models.Model):
    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="entries"
    )
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries")
    amount = models.BigIntegerField()
    memo = models.CharField(max_length=120, blank=True)

    class Meta:
        ordering = ("pk",)
        constraints = [
            models.CheckConstraint(condition=~models.Q(amount=0), name="entry_amount_nonzero"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.amount:+d}"


class EscrowStatus(models.TextChoices):
    HELD = "held", "Held"
    SETTLED = "settled", "Settled"


class EscrowHold(models.Model):
    """Credits a payer set aside for a job; settled once into payouts, fee and a refund."""

    account = models.OneToOneField(Account, on_delete=models.PROTECT, related_name="escrow")
    payer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="escrow_holds"
    )
    amount = models.BigIntegerField()
    reference = models.CharField(max_length=200, unique=True)
    status = models.CharField(
        max_length=10, choices=EscrowStatus.choices, default=EscrowStatus.HELD
    )
    created_at = models.DateTimeField(auto_now_add=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"escrow {self.reference} ({self.status})"


class TopUp(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="top_ups"
    )
    amount = models.BigIntegerField()
    provider = models.CharField(max_length=40)
    provider_reference = models.CharField(max_length=200, blank=True)
    idempotency_key = models.CharField(max_length=200)
    ledger_transaction = models.OneToOneField(
        LedgerTransaction, on_delete=models.PROTECT, related_name="top_up"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=("user", "idempotency_key"), name="topup_user_key"),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="topup_positive"),
        ]

    def __str__(self) -> str:
        return f"top-up {self.amount} for {self.user_id}"


class CreditGrant(models.Model):
    """Credits staff granted by hand (in the admin); recorded in the ledger like any other."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="credit_grants"
    )
    amount = models.BigIntegerField()
    reason = models.CharField(max_length=300)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    ledger_transaction = models.OneToOneField(
        LedgerTransaction, on_delete=models.PROTECT, related_name="grant"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="grant_positive"),
        ]

    def __str__(self) -> str:
        return f"grant {self.amount} to {self.user_id}"


class CommercialUse(models.TextChoices):
    """Civitai's commercial-use levels, each including the ones before it."""

    NONE = "none", "No commercial use"
    IMAGE = "image", "Sell generated images"
    RENT = "rent", "Run on generation services"
    SELL = "sell", "Sell the model or merges"


COMMERCIAL_LEVELS: tuple[str, ...] = ("none", "image", "rent", "sell")


class License(models.Model):
    code = models.CharField(max_length=64, primary_key=True)
    name = models.CharField(max_length=200)
    url = models.URLField(blank=True)
    credit_required = models.BooleanField(default=False)
    commercial_use = models.CharField(max_length=8, choices=CommercialUse.choices)
    derivatives_allowed = models.BooleanField(default=True)
    different_license_allowed = models.BooleanField(default=True)

    class Meta:
        ordering = ("code",)

    def __str__(self) -> str:
        return self.code


class Listing(models.Model):
    """What a model version or public dataset version costs, and who shares the revenue."""

    seller = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="listings"
    )
    model_version = models.OneToOneField(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="listing"
    )
    dataset_version = models.OneToOneField(
        DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="listing"
    )
    price = models.BigIntegerField(default=0)
    early_access_until = models.DateTimeField(null=True, blank=True)
    royalty_bps = models.IntegerField(default=0)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(model_version__isnull=False, dataset_version__isnull=True)
                    | models.Q(model_version__isnull=True, dataset_version__isnull=False)
                ),
                name="listing_exactly_one_target",
            ),
            models.CheckConstraint(condition=models.Q(price__gte=0), name="listing_price_gte0"),
            models.CheckConstraint(
                condition=models.Q(royalty_bps__gte=0, royalty_bps__lte=10000),
                name="listing_royalty_bps_range",
            ),
        ]

    def __str__(self) -> str:
        return f"listing #{self.pk}"

    @property
    def target(self) -> ModelVersion | DatasetVersion:
        return self.model_version or self.dataset_version  # type: ignore[return-value]


class ListingShare(models.Model):
    listing = models.ForeignKey(Listing, on_delete=models.CASCADE, related_name="shares")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    percent = models.IntegerField()

    class Meta:
        ordering = ("pk",)
        constraints = [
            models.UniqueConstraint(fields=("listing", "user"), name="share_listing_user"),
            models.CheckConstraint(
                condition=models.Q(percent__gte=1, percent__lte=100), name="share_percent_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.percent}%"


class Purchase(models.Model):
    buyer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="purchases"
    )
    listing = models.ForeignKey(Listing, on_delete=models.PROTECT, related_name="purchases")
    price = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=200)
    ledger_transaction = models.OneToOneField(
        LedgerTransaction, null=True, blank=True, on_delete=models.PROTECT, related_name="purchase"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(fields=("buyer", "idempotency_key"), name="purchase_buyer_key"),
            models.CheckConstraint(condition=models.Q(price__gte=0), name="purchase_price_gte0"),
        ]

    def __str__(self) -> str:
        return f"purchase #{self.pk}"


class Entitlement(models.Model):
    """The right of a user to download a version (bought, or claimed while free)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="entitlements"
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    dataset_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    purchase = models.OneToOneField(
        Purchase, null=True, blank=True, on_delete=models.PROTECT, related_name="entitlement"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(
                fields=("user", "model_version"),
                condition=models.Q(model_version__isnull=False),
                name="entitlement_user_model_version",
            ),
            models.UniqueConstraint(
                fields=("user", "dataset_version"),
                condition=models.Q(dataset_version__isnull=False),
                name="entitlement_user_dataset_version",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(model_version__isnull=False, dataset_version__isnull=True)
                    | models.Q(model_version__isnull=True, dataset_version__isnull=False)
                ),
                name="entitlement_exactly_one_target",
            ),
        ]

    def __str__(self) -> str:
        return f"entitlement #{self.pk}"


class Review(models.Model):
    """One review per user per version; ``verified`` when the user holds an entitlement."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviews"
    )
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="reviews"
    )
    rating = models.IntegerField()
    text = models.TextField(blank=True)
    verified = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at", "-pk")
        constraints = [
            models.UniqueConstraint(fields=("user", "model_version"), name="review_once"),
            models.CheckConstraint(
                condition=models.Q(rating__gte=1, rating__lte=5), name="review_rating_range"
            ),
        ]

    def __str__(self) -> str:
        return f"review #{self.pk} ({self.rating}/5)"


class PayoutStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PAID = "paid", "Paid"
    REJECTED = "rejected", "Rejected"


class Payout(models.Model):
    """A request to cash out wallet credits; the credits wait in the payouts clearing account.

    Requesting moves them wallet -> clearing; paid moves them clearing -> external (they left
    the platform); rejected moves them back clearing -> wallet. Changes only through
    ``marketplace.services.payouts``.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payouts"
    )
    amount = models.BigIntegerField()
    status = models.CharField(
        max_length=10, choices=PayoutStatus.choices, default=PayoutStatus.PENDING
    )
    request_transaction = models.OneToOneField(
        LedgerTransaction,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="payout_request",
    )
    settle_transaction = models.OneToOneField(
        LedgerTransaction,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="payout_settle",
    )
    handled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    handled_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at", "-pk")
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="payout_positive"),
        ]

    def __str__(self) -> str:
        return f"payout #{self.pk} {self.amount} ({self.status})"


class ReportReason(models.TextChoices):
    OWNERSHIP = "ownership", "Ownership claim"
    LICENSE = "license", "License violation"
    UNSAFE = "unsafe", "Unsafe content"


class ReportStatus(models.TextChoices):
    OPEN = "open", "Open"
    UNPUBLISHED = "unpublished", "Version unpublished"
    REMOVED = "removed", "Removed"
    DISMISSED = "dismissed", "Dismissed"


class Report(models.Model):
    """A user's report about a model version or dataset, waiting in the moderation queue."""

    reporter = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reports"
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    dataset = models.ForeignKey(
        "registry.Dataset", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    reason = models.CharField(max_length=12, choices=ReportReason.choices)
    text = models.TextField()
    status = models.CharField(
        max_length=12, choices=ReportStatus.choices, default=ReportStatus.OPEN
    )
    handled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    handled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at", "-pk")
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(model_version__isnull=False, dataset__isnull=True)
                    | models.Q(model_version__isnull=True, dataset__isnull=False)
                ),
                name="report_exactly_one_target",
            ),
        ]

    def __str__(self) -> str:
        return f"report #{self.pk} ({self.get_reason_display()}, {self.status})"

    @property
    def target_label(self) -> str:
        if self.model_version_id:
            return f"model version {self.model_version}"
        return f"dataset {self.dataset}"
