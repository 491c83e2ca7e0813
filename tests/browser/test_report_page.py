"""Staff act on a report from its own admin page: the header says how many reports are open,
the report's page links to what was reported and has the moderation buttons."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.data import publish_model

pytestmark = pytest.mark.django_db(transaction=True)


def test_staff_remove_a_reported_model_from_the_reports_own_page(
    browser_page: Page,
    login: Callable[..., None],
    shot: Callable[..., None],
    make_user: Callable[..., Any],
    site: str,
) -> None:
    from marketplace.models import ReportStatus
    from marketplace.services.reports import report_create
    from registry.models import Model

    # Given an open report about a published model
    version = publish_model(make_user("copycat"), "Unsafe Pack", seed=12)
    report = report_create(
        reporter=make_user("watchful"), target=version, reason="unsafe", text="Not safe."
    )
    page = browser_page
    login(page, make_user("moderator", is_staff=True, is_superuser=True))
    # When staff follow the header's count of open reports to the report's page
    page.click("a.pending-chip")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    page.locator("#result_list tbody tr th a").first.click()
    expect(page.get_by_role("link", name="model version Unsafe Pack v1")).to_be_visible()
    shot(page, "report-page", check_overflow=False)
    # and press "Remove the model"
    with page.expect_navigation():
        page.click("input.moderation-remove")
    # Then the model is removed, the report closed, and the page says so without buttons
    expect(page.locator(".messagelist")).to_contain_text("removed from the site")
    expect(page.locator(".submit-row.moderation")).to_have_count(0)
    shot(page, "report-handled", check_overflow=False)
    report.refresh_from_db()
    assert report.status == ReportStatus.REMOVED
    assert Model.objects.get(pk=version.model_id).is_removed
