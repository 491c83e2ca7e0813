"""What the site's header shows on every page: the navigation a user's roles call for, the
wallet balance, and what waits on the user (requests to train on their datasets; for staff,
open reports and payout requests).

It reads every app, so it sits on the top floor (``config``), beside the urls that join them.
The numbers are read only when a template asks for them (lazily), so pages that do not show
the header (the JSON API, files) pay nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Exists, F, Func, IntegerField, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import SimpleLazyObject

from federated.models import Node
from federated.selectors import approval_inbox
from marketplace.models import Account, Payout, PayoutStatus, Report, ReportStatus
from marketplace.selectors import USER_ACCOUNT_KINDS
from registry.models import Dataset, DatasetKind, Model


@dataclass(frozen=True)
class Pending:
    """Something waiting on the user: how many, what, and where to act on it."""

    count: int
    label: str
    url: str


@dataclass(frozen=True)
class SiteHeader:
    balance: int = 0
    is_creator: bool = False  # owns a model: earnings
    is_data_owner: bool = False  # has a node or a private dataset: nodes and approvals
    pending: list[Pending] = field(default_factory=list)

    @property
    def pending_total(self) -> int:
        return sum(p.count for p in self.pending)


def site_header_for(user: User | AnonymousUser) -> SiteHeader:
    """The header of ``user`` (anonymous: nothing): one query for the balance (the rule of
    ``marketplace.selectors.wallet_balance``: bought and earned credits), the roles and the
    training requests waiting on a data owner; staff pay one more per kind of pending item."""
    if not isinstance(user, User):
        return SiteHeader()
    credits = (
        Account.objects.filter(owner_id=OuterRef("pk"), kind__in=USER_ACCOUNT_KINDS)
        .values("owner_id")
        .annotate(total=Sum("balance"))
        .values("total")
    )
    inbox = approval_inbox(owner=user).select_related(None).order_by()
    inbox_count = inbox.annotate(n=Func(F("pk"), function="COUNT")).values("n")
    row = (
        User.objects.filter(pk=user.pk)
        .annotate(
            credits=Coalesce(Subquery(credits), 0),
            approvals=Subquery(inbox_count, output_field=IntegerField()),
            creator=Exists(Model.objects.filter(owner_id=OuterRef("pk"))),
            node=Exists(Node.objects.filter(owner_id=OuterRef("pk"))),
            private=Exists(
                Dataset.objects.filter(owner_id=OuterRef("pk"), kind=DatasetKind.PRIVATE)
            ),
        )
        .values("credits", "approvals", "creator", "node", "private")
        .get()
    )
    is_data_owner = bool(row["node"] or row["private"])
    pending: list[Pending] = []
    if is_data_owner:
        approvals = int(row["approvals"] or 0)
        if approvals:
            label = "training request" if approvals == 1 else "training requests"
            pending.append(Pending(approvals, label, reverse("training:dashboard") + "#inbox-h"))
    if user.is_staff:
        reports = Report.objects.filter(status=ReportStatus.OPEN).count()
        if reports:
            url = reverse("admin:marketplace_report_changelist") + "?status__exact=open"
            label = "open report" if reports == 1 else "open reports"
            pending.append(Pending(reports, label, url))
        payouts = Payout.objects.filter(status=PayoutStatus.PENDING).count()
        if payouts:
            url = reverse("admin:marketplace_payout_changelist") + "?status__exact=pending"
            label = "payout request" if payouts == 1 else "payout requests"
            pending.append(Pending(payouts, label, url))
    return SiteHeader(
        balance=int(row["credits"]),
        is_creator=bool(row["creator"]),
        is_data_owner=is_data_owner,
        pending=pending,
    )


def site_header(request: HttpRequest) -> dict[str, object]:
    return {"site_header": SimpleLazyObject(lambda: site_header_for(request.user))}
