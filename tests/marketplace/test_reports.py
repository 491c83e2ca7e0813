"""Reports: users flag versions or datasets; staff unpublish, remove or dismiss in the admin."""

from __future__ import annotations

import pytest

from core.errors import AccessDeniedError, ApplicationError, ConflictError
from marketplace.models import Report, ReportStatus
from marketplace.services.reports import (
    report_create,
    report_dismiss,
    report_remove_target,
    report_unpublish_version,
)
from registry.models import Model, VersionStatus
from registry.services.catalog import dataset_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(make_user):  # type: ignore[no-untyped-def]
    return make_user("owner")


@pytest.fixture
def reporter(make_user):  # type: ignore[no-untyped-def]
    return make_user("reporter")


@pytest.fixture
def version(owner, make_version):  # type: ignore[no-untyped-def]
    return make_version(owner)


@pytest.fixture
def report(reporter, version) -> Report:  # type: ignore[no-untyped-def]
    return report_create(
        reporter=reporter,
        target=version,
        reason="license",
        text="Merged from a no-derivatives model.",
    )


def test_report_lands_open_in_the_queue(report) -> None:
    assert report.status == ReportStatus.OPEN
    assert report.handled_by is None


def test_report_of_a_dataset(reporter, owner) -> None:
    dataset = dataset_create(owner=owner, name="faces", kind="public")
    report = report_create(
        reporter=reporter, target=dataset, reason="ownership", text="These are my photos."
    )
    assert report.dataset == dataset


def test_report_with_unknown_reason_is_refused(reporter, version) -> None:
    with pytest.raises(ApplicationError) as err:
        report_create(reporter=reporter, target=version, reason="spam", text="x")
    assert err.value.code == "bad_reason"


def test_report_without_text_is_refused(reporter, version) -> None:
    with pytest.raises(ApplicationError) as err:
        report_create(reporter=reporter, target=version, reason="unsafe", text="   ")
    assert err.value.code == "text_required"


def test_unpublish_action_unpublishes_and_records_who(report, staff, version) -> None:
    report_unpublish_version(report=report, staff=staff)
    report.refresh_from_db()
    version.refresh_from_db()
    assert version.status == VersionStatus.UNPUBLISHED
    assert report.status == ReportStatus.UNPUBLISHED
    assert report.handled_by == staff and report.handled_at is not None


def test_remove_action_removes_the_model(report, staff, version) -> None:
    report_remove_target(report=report, staff=staff)
    assert Model.objects.get(pk=version.model_id).is_removed is True
    report.refresh_from_db()
    assert report.status == ReportStatus.REMOVED


def test_dismiss_leaves_the_version_alone(report, staff, version) -> None:
    report_dismiss(report=report, staff=staff)
    version.refresh_from_db()
    report.refresh_from_db()
    assert version.status == VersionStatus.PUBLISHED
    assert (report.status, report.handled_by_id) == (ReportStatus.DISMISSED, staff.pk)


def test_non_staff_cannot_handle_a_report(report, reporter, version) -> None:
    with pytest.raises(AccessDeniedError):
        report_unpublish_version(report=report, staff=reporter)
    version.refresh_from_db()
    assert version.status == VersionStatus.PUBLISHED


def test_a_handled_report_cannot_be_handled_again(report, staff) -> None:
    report_dismiss(report=report, staff=staff)
    with pytest.raises(ConflictError):
        report_remove_target(report=report, staff=staff)


def test_admin_queue_lists_open_reports_and_runs_the_unpublish_action(
    client, report, staff, version
) -> None:
    client.force_login(staff)
    listing = client.get("/admin/marketplace/report/")
    assert listing.status_code == 200
    assert b"License violation" in listing.content
    response = client.post(
        "/admin/marketplace/report/",
        {"action": "unpublish_version", "_selected_action": [report.pk]},
        follow=True,
    )
    assert b"1 version(s) unpublished" in response.content
    version.refresh_from_db()
    assert version.status == VersionStatus.UNPUBLISHED


def test_admin_remove_action_on_a_dataset_report(client, staff, reporter, owner) -> None:
    from registry.models import Dataset

    dataset = dataset_create(owner=owner, name="faces", kind="public")
    report = report_create(reporter=reporter, target=dataset, reason="unsafe", text="bad")
    client.force_login(staff)
    client.post(
        "/admin/marketplace/report/", {"action": "remove_model", "_selected_action": [report.pk]}
    )
    assert Dataset.objects.get(pk=dataset.pk).is_removed is True


def test_api_report_create(api_client, reporter, version) -> None:
    api_client.force_authenticate(reporter)
    response = api_client.post(
        "/api/v1/reports",
        {"model_version_id": version.pk, "reason": "unsafe", "text": "gore"},
        format="json",
    )
    assert response.status_code == 201
    assert Report.objects.get().model_version == version


def test_api_report_with_bad_reason_is_400(api_client, reporter, version) -> None:
    api_client.force_authenticate(reporter)
    response = api_client.post(
        "/api/v1/reports",
        {"model_version_id": version.pk, "reason": "boring", "text": "meh"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("reason")


def test_api_report_anonymous_is_401(api_client, version) -> None:
    response = api_client.post(
        "/api/v1/reports",
        {"model_version_id": version.pk, "reason": "unsafe", "text": "x"},
        format="json",
    )
    assert response.status_code in (401, 403)
    assert Report.objects.count() == 0


def test_report_page_shows_errors_next_to_fields(client, reporter, version) -> None:
    client.force_login(reporter)
    response = client.post(f"/report/version/{version.pk}/", {"reason": "", "text": ""})
    assert response.status_code == 400
    assert b'id="field-reason"' in response.content
    assert b"This field is required." in response.content


def test_report_page_files_the_report(client, reporter, version) -> None:
    client.force_login(reporter)
    page = client.get(f"/report/version/{version.pk}/")
    response = client.post(
        f"/report/version/{version.pk}/", {"reason": "ownership", "text": "I trained this."}
    )
    assert page.status_code == 200
    assert response.status_code == 302
    assert Report.objects.get().reason == "ownership"


def test_dataset_page_links_to_the_report_form(client, reporter, owner) -> None:
    dataset = dataset_create(owner=owner, name="faces", kind="public")
    client.force_login(reporter)
    page = client.get(f"/datasets/{dataset.pk}/{dataset.slug}/")
    form = client.get(f"/report/dataset/{dataset.pk}/")
    assert f'href="/report/dataset/{dataset.pk}/"'.encode() in page.content
    assert form.status_code == 200 and b"Ownership claim" in form.content


def test_model_page_links_to_the_report_form(client, reporter, version) -> None:
    client.force_login(reporter)
    page = client.get(f"/models/{version.model_id}/{version.model.slug}/?version={version.pk}")
    assert f'href="/report/version/{version.pk}/"'.encode() in page.content
