"""Reports: users flag a model version or dataset; staff unpublish, remove or dismiss."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from core.errors import AccessDeniedError, ApplicationError, ConflictError, NotFoundError
from marketplace.models import Report, ReportReason, ReportStatus
from registry.access import can_view_dataset, can_view_version
from registry.models import Dataset, ModelVersion
from registry.services.catalog import version_unpublish
from registry.services.moderation import dataset_set_removed, model_set_removed

MAX_REPORT_TEXT = 5000


def report_create(
    *, reporter: User, target: ModelVersion | Dataset, reason: str, text: str
) -> Report:
    """File a report about a version or dataset the reporter can see."""
    if not getattr(reporter, "is_authenticated", False):
        raise AccessDeniedError("Log in to report.", code="login_required")
    if reason not in ReportReason.values:
        raise ApplicationError(
            f"reason must be one of: {', '.join(ReportReason.values)}.",
            code="bad_reason",
            details={"field": "reason"},
        )
    text = (text or "").strip()
    if not text:
        raise ApplicationError(
            "Tell the moderators what is wrong.", code="text_required", details={"field": "text"}
        )
    if len(text) > MAX_REPORT_TEXT:
        raise ApplicationError(
            f"Keep the text under {MAX_REPORT_TEXT} characters.",
            code="text_too_long",
            details={"field": "text"},
        )
    if isinstance(target, ModelVersion):
        if not can_view_version(reporter, target):
            raise NotFoundError("No such version.")
        return Report.objects.create(
            reporter_id=reporter.pk, model_version=target, reason=reason, text=text
        )
    if not can_view_dataset(reporter, target):
        raise NotFoundError("No such dataset.")
    return Report.objects.create(reporter_id=reporter.pk, dataset=target, reason=reason, text=text)


def _lock_open(report: Report, staff: User) -> Report:
    if not getattr(staff, "is_staff", False):
        raise AccessDeniedError("Only staff can handle reports.", code="staff_only")
    locked = (
        Report.objects.select_for_update(of=("self",))
        .select_related("model_version__model", "dataset")
        .get(pk=report.pk)
    )
    if locked.status != ReportStatus.OPEN:
        raise ConflictError(
            f"This report was already handled ({locked.status}).", code="report_handled"
        )
    return locked


def _close(report: Report, staff: User, status: str) -> Report:
    report.status = status
    report.handled_by_id = staff.pk
    report.handled_at = timezone.now()
    report.save(update_fields=["status", "handled_by", "handled_at"])
    return report


@transaction.atomic
def report_unpublish_version(*, report: Report, staff: User) -> Report:
    """Unpublish the reported version (through the registry, as staff). Locks the report."""
    locked = _lock_open(report, staff)
    if locked.model_version is None:
        raise ApplicationError(
            "Only a model version can be unpublished; remove the dataset.", code="not_a_version"
        )
    version_unpublish(version=locked.model_version, user=staff)
    return _close(locked, staff, ReportStatus.UNPUBLISHED)


@transaction.atomic
def report_remove_target(*, report: Report, staff: User) -> Report:
    """Remove the reported version's model (or the dataset) from the site. Locks the report."""
    locked = _lock_open(report, staff)
    if locked.model_version is not None:
        model_set_removed(model=locked.model_version.model, user=staff, removed=True)
    else:
        assert locked.dataset is not None  # a report has exactly one target
        dataset_set_removed(dataset=locked.dataset, user=staff, removed=True)
    return _close(locked, staff, ReportStatus.REMOVED)


@transaction.atomic
def report_dismiss(*, report: Report, staff: User) -> Report:
    return _close(_lock_open(report, staff), staff, ReportStatus.DISMISSED)
