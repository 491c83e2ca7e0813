"""Journey 1: a creator signs up, uploads a LoRA through the chunked upload page, sets its
license and price, publishes it, and finds it listed with its hashes and base model."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.data import lora_bytes

pytestmark = pytest.mark.django_db(transaction=True)

CHUNK = 8 * 1024  # the ~28 KB file goes up in four PATCH requests


def test_creator_signs_up_uploads_prices_and_publishes_a_lora(
    browser_page: Page,
    new_page: Callable[[], Page],
    shot: Callable[..., None],
    site: str,
    settings: Any,
) -> None:
    settings.ATELIER_UPLOAD_CHUNK_BYTES = CHUNK
    data = lora_bytes(seed=7)
    sha256 = hashlib.sha256(data).hexdigest()
    page = browser_page

    # Given a visitor on the home page, when they sign up
    page.goto(site + "/")
    page.click("text=Sign up")
    page.fill("#id_username", "inkmaker")
    page.fill("#id_email", "inkmaker@example.test")
    page.fill("#id_password", "a-long-passphrase")
    shot(page, "signup")
    with page.expect_navigation():
        page.click("form.signup-form button[type=submit]")
    # then they are logged in
    expect(page.locator("a.who")).to_have_text("inkmaker")

    # When they upload a LoRA through the upload page (the file goes up in chunks)
    page.click("nav >> text=Upload")
    expect(page.locator("h1")).to_have_text("Upload a model")
    patches: list[str] = []
    page.on(
        "request",
        lambda r: (
            patches.append(r.url) if r.method == "PATCH" and "/api/v1/uploads/" in r.url else None
        ),
    )
    page.fill("#id_name", "Ink Sketch")
    page.select_option("#id_kind", "lora")
    page.fill("#id_description", "Loose **ink** lines on paper.")
    page.fill("#id_tags", "ink, sketch")
    page.fill("#id_trigger_words", "inksketch")
    page.set_input_files(
        "#id_file",
        files=[
            {
                "name": "ink-sketch.safetensors",
                "mimeType": "application/octet-stream",
                "buffer": data,
            }
        ],
    )
    shot(page, "upload-filled")
    with page.expect_navigation(url="**/models/**"):
        page.click("#upload-submit")

    # then the draft's page shows the detection and every hash of the file
    assert len(patches) == -(-len(data) // CHUNK) == 4
    expect(page.locator(".messages")).to_contain_text("Ink Sketch v1 is saved as a draft.")
    expect(page.locator(".detected-kind")).to_have_text("lora")
    expect(page.locator(".architecture")).to_have_text("SD 1.x")
    expect(page.locator(".lora-rank")).to_have_text("4")
    expect(page.locator("dd.base-model")).to_have_text("SD 1.x")
    hashes = page.locator("dl.hashes dd.hash")
    expect(hashes.nth(0)).to_have_text(sha256)  # SHA-256
    expect(hashes.nth(2)).to_have_text(sha256[:10])  # AutoV2, the short hash A1111 shows
    expect(page.locator(".trigger-list code")).to_have_text("inksketch")
    shot(page, "draft")

    # When they set a license and a price
    page.click(".draft-notice a.listing-edit")
    expect(page.locator("h1")).to_have_text("License and price")
    page.select_option("#id_license_code", "creativeml-openrail-m")
    page.fill("#id_price", "150")
    shot(page, "license-and-price")
    with page.expect_navigation(url="**/models/**"):
        page.click("form.listing-form button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("License and price saved.")
    expect(page.locator(".your-listing")).to_contain_text("Your listing: 150 credits")
    expect(page.locator(".license-code")).to_have_text("creativeml-openrail-m")

    # and publish it
    with page.expect_navigation():
        page.click("button.publish")
    expect(page.locator(".messages")).to_contain_text("Version v1 is published.")
    shot(page, "published")

    # then anyone browsing LoRAs finds it, and its page shows the price and the hashes
    visitor = new_page()
    visitor.goto(site + "/?kind=lora")
    card = visitor.locator("article.model-card", has_text="Ink Sketch")
    expect(card).to_have_count(1)
    expect(card.locator(".badge.base")).to_have_text("SD 1.x")  # one label (issue #19)
    shot(visitor, "browse-listed")
    card.locator("a.card-link").click()
    expect(visitor.locator("h1")).to_have_text("Ink Sketch")
    expect(visitor.locator(".buy-box .price")).to_have_text("150 credits")
    expect(visitor.locator("a.buy-login")).to_contain_text("Log in to buy for 150 credits")
    expect(visitor.locator("dl.hashes dd.hash").first).to_have_text(sha256)
    expect(visitor.locator("dd.base-model")).to_have_text("SD 1.x")
    shot(visitor, "model-page-visitor")
