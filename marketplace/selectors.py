"""Reads beyond a plain get: balances, reconciliation, lineage, permissions, library."""

from __future__ import annotations

import datetime
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import (
    BigIntegerField,
    BooleanField,
    Count,
    Exists,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from core.errors import AccessDeniedError, ApplicationError, ConflictError, NotFoundError
from marketplace.models import (
    COMMERCIAL_LEVELS,
    Account,
    AccountKind,
    Entitlement,
    LedgerEntry,
    LedgerTransaction,
    License,
    Listing,
    ListingShare,
    Payout,
    Purchase,
    Review,
)
from registry.access import can_view_version
from registry.models import DatasetVersion, Lineage, Model, ModelVersion
from registry.selectors.versions import lineage_links_upstream

# --- ledger ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    account_id: int
    code: str
    balance: int
    entries_sum: int


def accounts_with_entry_sums() -> QuerySet[Account]:
    return Account.objects.annotate(entries_sum=Coalesce(Sum("entries__amount"), 0))


def ledger_reconcile() -> list[Mismatch]:
    """Accounts whose stored balance differs from the sum of their entries (empty: healthy)."""
    return [
        Mismatch(a.pk, a.code, a.balance, a.entries_sum)  # type: ignore[attr-defined]
        for a in accounts_with_entry_sums().order_by("pk")
        if a.balance != a.entries_sum  # type: ignore[attr-defined]
    ]


def ledger_total() -> int:
    """The sum of every entry ever written: always 0 in a healthy ledger."""
    return int(LedgerEntry.objects.aggregate(t=Coalesce(Sum("amount"), 0))["t"])


def unbalanced_transactions() -> list[int]:
    return list(
        LedgerTransaction.objects.annotate(t=Sum("entries__amount"))
        .filter(~Q(t=0) | Q(t__isnull=True))
        .values_list("pk", flat=True)
    )


def platform_revenue_total() -> int:
    """The platform's revenue: the sum of its (sharded) revenue accounts."""
    return int(
        Account.objects.filter(kind=AccountKind.PLATFORM_REVENUE).aggregate(
            t=Coalesce(Sum("balance"), 0)
        )["t"]
    )


# A user's credits: bought (wallet) and earned (earnings); see marketplace.services.ledger.
USER_ACCOUNT_KINDS = (AccountKind.WALLET, AccountKind.EARNINGS)


def wallet_balance(*, user: User) -> int:
    """Every credit the user can spend: bought and earned together."""
    return int(
        Account.objects.filter(kind__in=USER_ACCOUNT_KINDS, owner_id=user.pk).aggregate(
            t=Coalesce(Sum("balance"), 0)
        )["t"]
    )


def withdrawable_balance(*, user: User) -> int:
    """The credits a payout may take: the earned ones."""
    account = Account.objects.filter(kind=AccountKind.EARNINGS, owner_id=user.pk).first()
    return account.balance if account else 0


def _user_entries(user: User) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(
        account__kind__in=USER_ACCOUNT_KINDS, account__owner_id=user.pk
    )


def wallet_entries(*, user: User) -> QuerySet[LedgerEntry]:
    return _user_entries(user).select_related("transaction").order_by("-pk")


def purchases_by_id(purchase_ids: Iterable[int]) -> dict[int, Purchase]:
    """The purchases a page of ledger entries refers to, with what each bought (one query)."""
    rows = Purchase.objects.filter(pk__in=set(purchase_ids)).select_related(
        "listing__model_version__model", "listing__dataset_version__dataset"
    )
    return {row.pk: row for row in rows}


# --- listings, entitlements ----------------------------------------------------------------


def listing_for(target: ModelVersion | DatasetVersion) -> Listing | None:
    if isinstance(target, ModelVersion):
        return Listing.objects.filter(model_version_id=target.pk, is_active=True).first()
    return Listing.objects.filter(dataset_version_id=target.pk, is_active=True).first()


def listing_price_now(listing: Listing) -> int:
    """What the listing costs right now: free once its early-access date has passed."""
    if listing.early_access_until is not None and listing.early_access_until <= timezone.now():
        return 0
    return listing.price


def listing_price_now_q(prefix: str = "") -> Q:
    """The SQL side of :func:`listing_price_now`: listings that still cost their price."""
    until = f"{prefix}early_access_until"
    return Q(**{f"{until}__isnull": True}) | Q(**{f"{until}__gt": timezone.now()})


def models_with_price(qs: QuerySet[Model], user: User | AnonymousUser) -> QuerySet[Model]:
    """The registry's price hook (``registry.selectors.models.set_price_annotator``): on
    models annotated with ``shown_version_id``, ``price_now`` (what that version's active
    listing costs now; 0 when it has none or its early access is over) and ``owned`` (the
    user holds an entitlement to it or shares its listing's revenue)."""
    price = (
        Listing.objects.filter(model_version_id=OuterRef("shown_version_id"), is_active=True)
        .filter(listing_price_now_q())
        .values("price")[:1]
    )
    qs = qs.annotate(price_now=Coalesce(Subquery(price), 0, output_field=BigIntegerField()))
    if not user.is_authenticated:
        return qs.annotate(owned=Value(False, output_field=BooleanField()))
    entitled = Entitlement.objects.filter(
        user_id=user.pk, model_version_id=OuterRef("shown_version_id")
    )
    sharing = ListingShare.objects.filter(
        user_id=user.pk, listing__model_version_id=OuterRef("shown_version_id")
    )
    return qs.annotate(owned=Exists(entitled) | Exists(sharing))


def is_entitled(user: User, target: ModelVersion | DatasetVersion) -> bool:
    if isinstance(target, ModelVersion):
        return Entitlement.objects.filter(user_id=user.pk, model_version_id=target.pk).exists()
    return Entitlement.objects.filter(user_id=user.pk, dataset_version_id=target.pk).exists()


BUY_STATES = ("free", "owner", "owned", "buy", "login")
CAN_DOWNLOAD = ("free", "owner", "owned")


@dataclass(frozen=True)
class BuyState:
    """What a viewer may do with a model or dataset version that may be for sale.

    ``state``: "owner" (their own), "free" (no listing, price 0 or early access over),
    "owned" (bought, or sharing its revenue), "buy" (signed in, not bought) or "login".
    """

    listing: Listing | None
    price_now: int
    state: str

    @property
    def can_download(self) -> bool:
        return self.state in CAN_DOWNLOAD


def buy_state(user: User | AnonymousUser | None, target: ModelVersion | DatasetVersion) -> BuyState:
    """The viewer's :class:`BuyState` for ``target`` (the same rules as the download policy
    in :mod:`marketplace.access`, but for the page: it says what to offer, not 403)."""
    member = user if isinstance(user, User) and user.is_authenticated else None
    listing = listing_for(target)
    price_now = listing_price_now(listing) if listing is not None else 0
    owner_id = (
        target.model.owner_id if isinstance(target, ModelVersion) else target.dataset.owner_id
    )
    if member is not None and owner_id == member.pk:
        state = "owner"
    elif listing is None or price_now == 0:
        state = "free"
    elif member is not None and (
        is_entitled(member, target) or listing.shares.filter(user_id=member.pk).exists()
    ):
        state = "owned"
    elif member is not None:
        state = "buy"
    else:
        state = "login"
    return BuyState(listing=listing, price_now=price_now, state=state)


def library_for(*, user: User) -> QuerySet[Entitlement]:
    return Entitlement.objects.filter(user_id=user.pk).select_related(
        "model_version__model", "dataset_version__dataset", "purchase"
    )


def listings_browse() -> QuerySet[Listing]:
    return (
        Listing.objects.filter(is_active=True)
        .select_related("seller", "model_version__model", "dataset_version__dataset")
        .prefetch_related("shares")
        .order_by("-created_at", "-pk")
    )


# --- lineage and licenses ----------------------------------------------------------------


@dataclass(frozen=True)
class Ancestor:
    """A model version or dataset version upstream of a version, nearest first."""

    model_version: ModelVersion | None = None
    dataset_version: DatasetVersion | None = None

    @property
    def target(self) -> ModelVersion | DatasetVersion:
        return self.model_version or self.dataset_version  # type: ignore[return-value]

    @property
    def label(self) -> str:
        if self.model_version is not None:
            return f"model version {self.model_version.pk} ({self.model_version})"
        dataset_version = self.dataset_version
        assert dataset_version is not None  # an ancestor is one or the other
        return f"dataset version {dataset_version.pk} ({dataset_version})"

    @property
    def owner_id(self) -> int:
        if self.model_version is not None:
            return self.model_version.model.owner_id
        assert self.dataset_version is not None
        return self.dataset_version.dataset.owner_id


def version_ancestors(version: ModelVersion) -> list[Ancestor]:
    """Every ancestor, however deep (one recursive query), each once, nearest first (breadth
    first); a cycle in the lineage table is walked once, not followed round."""
    by_child: dict[int, list[Lineage]] = defaultdict(list)
    for link in lineage_links_upstream(version.pk):
        by_child[link.child_id].append(link)
    seen_versions: set[int] = {version.pk}
    seen_datasets: set[int] = set()
    out: list[Ancestor] = []
    queue: deque[int] = deque([version.pk])
    while queue:
        for link in by_child.get(queue.popleft(), ()):
            if link.parent_version is not None and link.parent_version_id not in seen_versions:
                seen_versions.add(link.parent_version.pk)
                out.append(Ancestor(model_version=link.parent_version))
                queue.append(link.parent_version.pk)
            elif link.parent_dataset is not None and link.parent_dataset_id not in seen_datasets:
                seen_datasets.add(link.parent_dataset.pk)
                out.append(Ancestor(dataset_version=link.parent_dataset))
    return out


def upstream_royalties(version: ModelVersion | DatasetVersion) -> list[tuple[int, int, str]]:
    """``(owner_id, bps, label)`` for each ancestor whose listing asks a royalty, nearest
    first (one query for the listings, however long the lineage)."""
    if not isinstance(version, ModelVersion):
        return []
    ancestors = version_ancestors(version)
    asking = list(
        Listing.objects.filter(is_active=True, royalty_bps__gt=0).filter(
            Q(model_version_id__in=[a.model_version.pk for a in ancestors if a.model_version])
            | Q(
                dataset_version_id__in=[
                    a.dataset_version.pk for a in ancestors if a.dataset_version
                ]
            )
        )
    )
    by_version = {
        row.model_version_id: row.royalty_bps for row in asking if row.model_version_id is not None
    }
    by_dataset = {
        row.dataset_version_id: row.royalty_bps
        for row in asking
        if row.dataset_version_id is not None
    }
    out = []
    for ancestor in ancestors:
        bps = (
            by_version.get(ancestor.model_version.pk)
            if ancestor.model_version
            else by_dataset.get(ancestor.target.pk)
        )
        if bps:
            out.append((ancestor.owner_id, bps, ancestor.label))
    return out


@dataclass
class Permission:
    value: bool | str
    sources: list[str] = field(default_factory=list)


@dataclass
class EffectivePermissions:
    """What a version may be used for, and which license (own or ancestor's) says so."""

    license_code: str
    credit_required: Permission
    commercial_use: Permission
    derivatives_allowed: Permission
    different_license_allowed: Permission


def licenses_by_code() -> dict[str, License]:
    return {lic.code: lic for lic in License.objects.all()}


def effective_permissions(version: ModelVersion) -> EffectivePermissions:
    """The most restrictive combination of the version's license and its ancestors'."""
    catalogue = licenses_by_code()
    chain: list[tuple[str, License]] = []
    own = catalogue.get(version.license_code)
    if own is not None:
        chain.append((f"own license {own.code}", own))
    for ancestor in version_ancestors(version):
        lic = catalogue.get(ancestor.target.license_code)
        if lic is not None:
            chain.append((f"{ancestor.label} license {lic.code}", lic))
    credit = Permission(False)
    commercial = Permission("sell")
    derivatives = Permission(True)
    different = Permission(True)
    for source, lic in chain:
        if lic.credit_required:
            credit.value = True
            credit.sources.append(source)
        level = COMMERCIAL_LEVELS.index(lic.commercial_use)
        if level < COMMERCIAL_LEVELS.index(str(commercial.value)):
            commercial.value = lic.commercial_use
            commercial.sources = [source]
        elif lic.commercial_use == commercial.value and level < len(COMMERCIAL_LEVELS) - 1:
            commercial.sources.append(source)
        if not lic.derivatives_allowed:
            derivatives.value = False
            derivatives.sources.append(source)
        if not lic.different_license_allowed:
            different.value = False
            different.sources.append(source)
    return EffectivePermissions(version.license_code, credit, commercial, derivatives, different)


# --- statements, earnings, payouts -------------------------------------------------------


@dataclass(frozen=True)
class StatementLine:
    date: datetime.datetime
    kind: str
    reference: str
    memo: str
    amount: int
    balance_after: int


def statement_period(raw_from: str, raw_to: str) -> tuple[datetime.date, datetime.date]:
    """Parse ``from``/``to`` (YYYY-MM-DD, both included); 400 with a message when wrong."""
    from core.errors import ApplicationError

    parsed: list[datetime.date] = []
    for name, raw in (("from", raw_from), ("to", raw_to)):
        try:
            parsed.append(datetime.date.fromisoformat((raw or "").strip()))
        except ValueError:
            raise ApplicationError(
                f"'{name}' must be a date written YYYY-MM-DD (got {raw!r}).",
                code="bad_period",
                details={"field": name},
            ) from None
    start, end = parsed
    if start > end:
        raise ApplicationError(
            "'from' must be on or before 'to'.",
            code="bad_period",
            details={"from": start.isoformat(), "to": end.isoformat()},
        )
    if (end - start).days > 3660:
        raise ApplicationError("A statement covers at most ten years.", code="bad_period")
    return start, end


def _day_start(day: datetime.date) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))


def wallet_statement(
    *, user: User, start: datetime.date, end: datetime.date
) -> list[StatementLine]:
    """The user's wallet entries from ``start`` to ``end`` (both days included, local time),
    oldest first, each with the wallet balance right after it."""
    entries = _user_entries(user)
    lo, hi = _day_start(start), _day_start(end + datetime.timedelta(days=1))
    balance = int(
        entries.filter(transaction__created_at__lt=lo).aggregate(t=Coalesce(Sum("amount"), 0))["t"]
    )
    lines: list[StatementLine] = []
    period = (
        entries.filter(transaction__created_at__gte=lo, transaction__created_at__lt=hi)
        .select_related("transaction")
        .order_by("transaction__created_at", "pk")
    )
    for entry in period:
        balance += entry.amount
        txn = entry.transaction
        lines.append(
            StatementLine(
                txn.created_at, txn.kind, txn.reference, entry.memo, entry.amount, balance
            )
        )
    return lines


EARNING_MEMOS = ("seller", "share", "royalty")


def earning_entries(*, user: User) -> QuerySet[LedgerEntry]:
    """Credits the user earned: their part of purchases and escrow payouts (data owners)."""
    return (
        _user_entries(user)
        .filter(amount__gt=0)
        .filter(
            Q(transaction__kind="purchase", memo__in=EARNING_MEMOS)
            | Q(transaction__kind="escrow_settle", memo="payout")
        )
    )


@dataclass(frozen=True)
class DayEarning:
    day: datetime.date
    amount: int


def earnings_by_day(*, user: User) -> list[DayEarning]:
    """One row per (local) day with earnings, oldest first."""
    rows = (
        earning_entries(user=user)
        .annotate(day=TruncDate("transaction__created_at"))
        .values("day")
        .annotate(total=Sum("amount"))
        .order_by("day")
    )
    return [DayEarning(r["day"], int(r["total"])) for r in rows]


@dataclass(frozen=True)
class ListingSales:
    """One listing's sales for one earner: ``sales`` counts purchases (not ledger entries: a
    seller who also holds a share earns two entries from one sale), and ``min_price`` /
    ``max_price`` are the prices those purchases were made at, as each purchase recorded it."""

    listing: Listing
    sales: int
    earned: int
    min_price: int = 0
    max_price: int = 0


def sales_by_listing(*, user: User) -> list[ListingSales]:
    """For each listing the user earned from (as seller, collaborator or upstream owner)."""
    rows = list(
        earning_entries(user=user)
        .filter(transaction__kind="purchase")
        .values("transaction__purchase__listing")
        .annotate(
            sales=Count("transaction__purchase", distinct=True),
            earned=Sum("amount"),
            min_price=Min("transaction__purchase__price"),
            max_price=Max("transaction__purchase__price"),
        )
        .order_by("-earned", "transaction__purchase__listing")
    )
    listings = Listing.objects.select_related(
        "model_version__model", "dataset_version__dataset"
    ).in_bulk([r["transaction__purchase__listing"] for r in rows])
    return [
        ListingSales(
            listings[r["transaction__purchase__listing"]],
            r["sales"],
            int(r["earned"]),
            int(r["min_price"] or 0),
            int(r["max_price"] or 0),
        )
        for r in rows
        if r["transaction__purchase__listing"] in listings
    ]


def payouts_for(*, user: User) -> QuerySet[Payout]:
    return Payout.objects.filter(user_id=user.pk).order_by("-created_at", "-pk")


def reviews_for_version(version: ModelVersion) -> QuerySet[Review]:
    return Review.objects.filter(model_version=version).select_related("user")


def review_refusal(*, user: User | AnonymousUser, version: ModelVersion) -> ApplicationError | None:
    """Why ``user`` may not review ``version``, or ``None`` when they may.

    The one rule for reviews, used by ``review_create`` (API and form) and the page's form:
    a logged-in user who can see the version, does not own it, has not reviewed it yet, and,
    when it is on sale for a price right now, has bought it.
    """
    if not user.is_authenticated:
        return AccessDeniedError("Log in to review.", code="authentication_required", status=401)
    if not can_view_version(user, version):
        return NotFoundError("No such version.")
    if version.model.owner_id == user.pk:
        return ApplicationError("You cannot review your own model.", code="own_model")
    listing = listing_for(version)
    if listing is not None and listing_price_now(listing) > 0 and not is_entitled(user, version):
        return AccessDeniedError(
            f"Only buyers can review this model: it costs {listing.price} credits; "
            "buy it to review it.",
            code="purchase_required",
            details={"listing_id": listing.pk},
        )
    if Review.objects.filter(user_id=user.pk, model_version_id=version.pk).exists():
        return ConflictError("You already reviewed this version.", code="already_reviewed")
    return None


def review_allowed(*, user: User | AnonymousUser, version: ModelVersion) -> bool:
    return review_refusal(user=user, version=version) is None
