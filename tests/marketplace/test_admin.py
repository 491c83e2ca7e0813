"""Admin: staff grant credits through the ledger; reconciliation is visible."""

from __future__ import annotations

import pytest

from marketplace.models import CreditGrant
from marketplace.selectors import wallet_balance

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, make_user):  # type: ignore[no-untyped-def]
    staff = make_user("boss", is_staff=True, is_superuser=True)
    client.force_login(staff)
    return client


def test_staff_grant_in_the_admin_credits_the_wallet_through_the_ledger(
    staff_client, make_user
) -> None:
    alice = make_user("alice")
    response = staff_client.post(
        "/admin/marketplace/creditgrant/add/",
        {"user": alice.pk, "amount": 70, "reason": "contest prize"},
    )
    assert response.status_code == 302
    grant = CreditGrant.objects.get()
    assert wallet_balance(user=alice) == 70
    assert grant.ledger_transaction.entries.count() == 2


def test_account_list_shows_reconciliation(staff_client, make_user, fund) -> None:
    fund(make_user("alice"), 5)
    response = staff_client.get("/admin/marketplace/account/")
    assert response.status_code == 200
    assert b"Balance = entries" in response.content


def test_reconcile_action_reports_a_healthy_ledger(staff_client, make_user, fund) -> None:
    fund(make_user("alice"), 5)
    from marketplace.models import Account

    response = staff_client.post(
        "/admin/marketplace/account/",
        {"action": "reconcile", "_selected_action": [Account.objects.first().pk]},
        follow=True,
    )
    assert b"Ledger reconciles" in response.content


# --- the report's own page: moderation buttons ------------------------------------------------


@pytest.fixture
def open_report(make_user, make_version):  # type: ignore[no-untyped-def]
    from marketplace.services.reports import report_create

    version = make_version(make_user("creator"))
    return report_create(
        reporter=make_user("reporter"), target=version, reason="unsafe", text="Not safe."
    )


def test_an_open_reports_page_has_the_moderation_buttons_and_a_link_to_the_target(
    staff_client, open_report
) -> None:
    page = staff_client.get(f"/admin/marketplace/report/{open_report.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'name="_save"' not in html  # nothing to save: every field is read-only
    for action in ("unpublish", "remove", "dismiss"):
        url = f"/admin/marketplace/report/{open_report.pk}/moderate/{action}/"
        assert f'formaction="{url}"' in html
    model = open_report.model_version.model
    assert f'href="/models/{model.pk}/{model.slug}/?version={open_report.model_version.pk}"' in html


def test_the_unpublish_button_unpublishes_records_who_and_logs_it(
    staff_client, open_report
) -> None:
    from django.contrib.admin.models import LogEntry

    from marketplace.models import Report, ReportStatus
    from registry.models import VersionStatus

    # When staff press "Unpublish the version" on the report's page
    response = staff_client.post(
        f"/admin/marketplace/report/{open_report.pk}/moderate/unpublish/", follow=True
    )
    # Then the version is unpublished, the report closed with who and when, and it is logged
    report = Report.objects.select_related("model_version", "handled_by").get()
    assert report.status == ReportStatus.UNPUBLISHED
    assert report.model_version.status == VersionStatus.UNPUBLISHED
    assert report.handled_by.username == "boss" and report.handled_at is not None
    log = LogEntry.objects.get(object_id=str(report.pk))
    assert log.user.username == "boss" and "version unpublished" in log.get_change_message()
    # and the page it comes back to says so, with no buttons left
    html = response.content.decode()
    assert response.redirect_chain[-1][0] == f"/admin/marketplace/report/{report.pk}/change/"
    assert "version unpublished" in html and "/moderate/" not in html


def test_a_second_press_on_a_handled_report_changes_nothing_and_says_why(
    staff_client, open_report
) -> None:
    from marketplace.models import Report, ReportStatus

    staff_client.post(f"/admin/marketplace/report/{open_report.pk}/moderate/dismiss/")
    response = staff_client.post(
        f"/admin/marketplace/report/{open_report.pk}/moderate/remove/", follow=True
    )
    assert Report.objects.get().status == ReportStatus.DISMISSED
    assert open_report.model_version.model.__class__.objects.get().is_removed is False
    assert "already handled" in response.content.decode()


def test_moderation_refuses_gets_unknown_actions_and_non_staff(
    client, staff_client, open_report, make_user
) -> None:
    url = f"/admin/marketplace/report/{open_report.pk}/moderate/"
    assert staff_client.get(url + "dismiss/").status_code == 405
    assert staff_client.post(url + "explode/").status_code == 404
    assert (
        staff_client.post("/admin/marketplace/report/999999/moderate/dismiss/").status_code == 404
    )
    from django.test import Client

    outsider = Client()
    outsider.force_login(make_user("mallory"))
    response = outsider.post(url + "dismiss/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    from marketplace.models import Report, ReportStatus

    assert Report.objects.get().status == ReportStatus.OPEN
