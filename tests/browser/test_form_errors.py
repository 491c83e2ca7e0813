"""Each main form, given bad input in a real browser, says what is wrong next to the field
(signup, login, upload metadata and file, license and price, review, report)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.data import lora_bytes, publish_model

pytestmark = pytest.mark.django_db(transaction=True)


def field_errors(page: Page, name: str) -> Locator:
    """The error list rendered right under the field's input (templates/registry/_field.html)."""
    return page.locator(f"#field-{name} > ul.errorlist")


def test_signup_and_login_say_what_is_wrong_next_to_each_field(
    browser_page: Page,
    shot: Callable[..., None],
    make_user: Callable[..., Any],
    site: str,
) -> None:
    page = browser_page
    make_user("taken")

    # Signup: nothing filled in
    page.goto(site + "/accounts/signup/")
    page.click("form.signup-form button[type=submit]")
    for name in ("username", "email", "password"):
        expect(field_errors(page, name)).to_have_text("This field is required.")
    # bad values
    page.fill("#id_username", "no spaces!")
    page.fill("#id_email", "not-an-address")
    page.fill("#id_password", "short")
    page.click("form.signup-form button[type=submit]")
    expect(field_errors(page, "username")).to_have_text("3 to 40 letters, digits, _ or -.")
    expect(field_errors(page, "email")).to_have_text("Enter a valid email address.")
    expect(field_errors(page, "password")).to_contain_text("at least 8 characters")
    expect(page.locator("#field-username")).to_have_class("field has-error")
    shot(page, "signup-errors")
    # a username someone has (the service refuses it; the page puts it on the field)
    page.fill("#id_username", "taken")
    page.fill("#id_email", "taken2@example.test")
    page.fill("#id_password", "a-long-passphrase")
    page.click("form.signup-form button[type=submit]")
    expect(field_errors(page, "username")).to_contain_text("taken")
    expect(field_errors(page, "password")).to_have_count(1)
    expect(field_errors(page, "password")).to_be_empty()

    # Login: empty fields, then a wrong password (said once, above the fields)
    page.goto(site + "/accounts/login/")
    page.click("form.login-form button[type=submit]")
    expect(field_errors(page, "username")).to_have_text("This field is required.")
    expect(field_errors(page, "password")).to_have_text("This field is required.")
    page.fill("#id_username", "taken")
    page.fill("#id_password", "not-the-password")
    page.click("form.login-form button[type=submit]")
    expect(page.locator("form.login-form > ul.errorlist[role=alert]")).to_contain_text(
        "Please enter a correct username and password"
    )
    shot(page, "login-error")


def test_upload_and_price_forms_say_what_is_wrong_next_to_each_field(
    browser_page: Page,
    login: Callable[..., None],
    shot: Callable[..., None],
    make_user: Callable[..., Any],
    site: str,
) -> None:
    from core.errors import ConflictError
    from marketplace.services.listings import listing_terms_set
    from registry.models import Model, Upload

    creator = make_user("inkmaker")
    page = browser_page
    login(page, creator)
    uploads: list[str] = []
    page.on(
        "request",
        lambda r: (
            uploads.append(r.url)
            if r.method == "POST" and r.url.endswith("/api/v1/uploads")
            else None
        ),
    )

    # A file that is not a model: refused once its bytes are checked, next to the file field
    page.goto(site + "/upload/")
    expect(page.locator("#upload-progress-wrap")).to_be_hidden()
    page.fill("#id_name", "Broken")
    page.set_input_files(
        "#id_file",
        files=[
            {
                "name": "broken.safetensors",
                "mimeType": "application/octet-stream",
                "buffer": b"this is not a safetensors file " * 64,
            }
        ],
    )
    page.click("#upload-submit")
    expect(field_errors(page, "file")).not_to_be_empty()
    expect(page.locator("#field-file")).to_have_class("field has-error")
    shot(page, "upload-bad-file")
    assert not Model.objects.exists()

    # A good file but no name: the file is kept on the server, the name is asked for
    page.goto(site + "/upload/")
    page.set_input_files(
        "#id_file",
        files=[
            {
                "name": "ink.safetensors",
                "mimeType": "application/octet-stream",
                "buffer": lora_bytes(seed=3),
            }
        ],
    )
    page.fill("#id_tags", ", ".join(f"t{i}" for i in range(21)))
    page.click("#upload-submit")
    expect(field_errors(page, "name")).to_have_text("This field is required.")
    expect(field_errors(page, "tags")).to_have_text("At most 20 tags (21 given).")
    expect(page.locator("#kept-upload")).to_be_visible()
    shot(page, "upload-missing-name")
    page.fill("#id_name", "Ink")
    page.fill("#id_tags", "ink")
    with page.expect_navigation(url="**/models/**"):
        page.click("#upload-submit")
    assert len(uploads) == 2  # the broken file, then the LoRA once (not again on resubmit)
    assert Upload.objects.filter(filename="ink.safetensors").count() == 1

    # License and price: a negative price, then a license its parent's terms forbid
    parent = publish_model(make_user("strict"), "Strict Base", seed=4, license_code="custom")
    child = publish_model(
        creator, "Derived", seed=5, license_code="", parents=[parent], publish=False
    )
    page.goto(f"{site}/versions/{child.pk}/listing/")
    page.fill("#id_price", "-5")
    page.click("form.listing-form button[type=submit]")
    expect(field_errors(page, "price")).to_have_text(
        "Ensure this value is greater than or equal to 0."
    )
    page.select_option("#id_license_code", "mit")
    page.fill("#id_price", "10")
    page.click("form.listing-form button[type=submit]")
    expect(field_errors(page, "license_code")).to_contain_text("forbids derivatives")
    expect(field_errors(page, "price")).to_be_empty()
    shot(page, "listing-errors")
    child.refresh_from_db()
    assert child.license_code == ""  # nothing half-saved

    # A published version keeps its license: the field is locked, the price still changes
    published = publish_model(creator, "Published", seed=12, license_code="mit")
    page.goto(f"{site}/versions/{published.pk}/listing/")
    expect(page.locator("#id_license_code")).to_be_disabled()
    expect(page.locator("#field-license_code")).to_contain_text(
        "A published version keeps its license."
    )
    page.fill("#id_price", "20")
    with page.expect_navigation(url="**/models/**"):
        page.click("form.listing-form button[type=submit]")
    expect(page.locator(".your-listing")).to_contain_text("Your listing: 20 credits")
    with pytest.raises(ConflictError) as refused:
        listing_terms_set(seller=creator, version=published, license_code="cc-by-4.0", price=20)
    assert refused.value.code == "license_locked"
    # and nobody but the owner opens the page
    response = page.goto(f"{site}/versions/{parent.pk}/listing/")
    assert response is not None and response.status == 404


def test_review_and_report_forms_say_what_is_wrong_next_to_each_field(
    browser_page: Page,
    login: Callable[..., None],
    shot: Callable[..., None],
    make_user: Callable[..., Any],
    site: str,
) -> None:
    version = publish_model(make_user("inkmaker"), "Free Ink", seed=6)
    page = browser_page
    login(page, make_user("critic"))
    page.goto(f"{site}/models/{version.model_id}/")

    # Review without choosing a rating
    page.fill("#id_text", "No stars given.")
    page.click("form.review-form button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Review Free Ink v1")
    expect(field_errors(page, "rating")).to_have_text("This field is required.")
    expect(page.locator("#id_text")).to_have_value("No stars given.")
    shot(page, "review-errors")

    # Report with no reason and no text
    page.goto(f"{site}/report/version/{version.pk}/")
    page.click("form.report-form button[type=submit]")
    expect(field_errors(page, "reason")).to_have_text("This field is required.")
    expect(field_errors(page, "text")).to_have_text("This field is required.")
    shot(page, "report-errors")
