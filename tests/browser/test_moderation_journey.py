"""Journey 6: a user reports a model; staff unpublish it from the moderation queue in the
admin; the model leaves browse and its file can no longer be downloaded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.data import publish_model

pytestmark = pytest.mark.django_db(transaction=True)


def test_staff_unpublish_a_reported_model_from_the_moderation_queue(
    browser_page: Page,
    new_page: Callable[[], Page],
    login: Callable[..., None],
    shot: Callable[..., None],
    make_user: Callable[..., Any],
    site: str,
) -> None:
    from marketplace.models import Report, ReportStatus

    # Given a published model and a user looking at it
    creator = make_user("copycat")
    version = publish_model(creator, "Stolen Style", seed=11, tags=["style"])
    reporter = make_user("watchful")
    page = browser_page
    login(page, reporter)
    page.goto(site + "/?q=stolen")
    page.locator("article.model-card a.card-link").click()
    expect(page.locator("h1")).to_have_text("Stolen Style")
    model_url = page.url

    # When they report it
    page.click("a.report-link")
    expect(page.locator("h1")).to_contain_text("Report")
    page.check("input[name=reason][value=ownership]")
    page.fill("#id_text", "This is my style pack, re-uploaded: https://example.test/original")
    shot(page, "report-form")
    with page.expect_navigation(url="**/models/**"):
        page.click("form.report-form button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("The moderators will look at it.")
    report = Report.objects.get(model_version=version)
    assert report.status == ReportStatus.OPEN and report.reporter_id == reporter.pk

    # Then staff find it first in the moderation queue and unpublish the version
    staff = new_page()
    login(staff, make_user("moderator", is_staff=True, is_superuser=True))
    staff.goto(site + "/admin/marketplace/report/")
    first_row = staff.locator("#result_list tbody tr").first
    expect(first_row).to_contain_text("Stolen Style")
    expect(first_row).to_contain_text("Open")
    shot(staff, "moderation-queue", check_overflow=False)
    first_row.locator("input.action-select").check()
    staff.select_option("select[name=action]", "unpublish_version")
    with staff.expect_navigation():
        staff.click("button[name=index]")
    expect(staff.locator(".messagelist")).to_contain_text("1 version(s) unpublished.")
    expect(staff.locator("#result_list tbody tr").first).to_contain_text("Version unpublished")
    shot(staff, "handled", check_overflow=False)
    report.refresh_from_db()
    assert report.status == ReportStatus.UNPUBLISHED and report.handled_by is not None

    # and the model is gone from browse and search, its page and its file with it
    page.goto(site + "/?q=stolen")
    expect(page.locator("article.model-card")).to_have_count(0)
    expect(page.locator(".result-count")).to_contain_text("0 models")
    shot(page, "gone-from-browse")
    page.goto(model_url)
    expect(page.locator(".empty")).to_have_text("No published version yet.")
    response = page.goto(f"{site}/api/download/models/{version.pk}")
    assert response is not None and response.status == 404
