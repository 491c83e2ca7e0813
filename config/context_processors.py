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
from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import SimpleLazyObject

from federated.models import Node
from federated.selectors import approval_inbox
from marketplace.models import Payout, PayoutStatus, Report, ReportStatus
from marketplace.selectors import wallet_balance
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
    """The header of ``user`` (anonymous: nothing)."""
    if not isinstance(user, User):
        return SiteHeader()
    is_data_owner = (
        Node.objects.filter(owner_id=user.pk).exists()
        or Dataset.objects.filter(owner_id=user.pk, kind=DatasetKind.PRIVATE).exists()
    )
    pending: list[Pending] = []
    if is_data_owner:
        approvals = approval_inbox(owner=user).count()
        if approvals:
            label = "training request" if approvals == 1 else "training requests"
            pending.append(Pending(approvals, label, reverse("training:dashboard") + "#inbox-h"))
    if user.is_staff:
        reports = Report.objects.filter(status=ReportStatus.OPEN).count()
        if reports:
            url = reverse("admin:marketplace_report_changelist") + "?status__exact=open"
            pending.append(Pending(reports, "open report" if reports == 1 else "open reports", url))
        payouts = Payout.objects.filter(status=PayoutStatus.PENDING).count()
        if payouts:
            url = reverse("admin:marketplace_payout_changelist") + "?status__exact=pending"
            pending.append(
                Pending(payouts, "payout request" if payouts == 1 else "payout requests", url)
            )
    return SiteHeader(
        balance=wallet_balance(user=user),
        is_creator=Model.objects.filter(owner_id=user.pk).exists(),
        is_data_owner=is_data_owner,
        pending=pending,
    )


def site_header(request: HttpRequest) -> dict[str, object]:
    return {"site_header": SimpleLazyObject(lambda: site_header_for(request.user))}
