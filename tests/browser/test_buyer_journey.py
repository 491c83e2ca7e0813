"""Journey 2: a buyer filters and searches, tops up with the demo payment provider, buys a
LoRA, downloads it (the same bytes), reviews it; a user who did not buy it cannot download."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.data import lora_bytes, publish_model

pytestmark = pytest.mark.django_db(transaction=True)


def test_buyer_finds_buys_downloads_and_reviews_a_lora(
    browser_page: Page,
    new_page: Callable[[], Page],
    login: Callable[..., None],
    shot: Callable[..., None],
    make_user: Callable[..., Any],
    site: str,
    tmp_path: Path,
) -> None:
    from marketplace.selectors import ledger_reconcile, ledger_total, wallet_balance

    # Given a creator's paid LoRA, a free LoRA and a checkpoint on the site
    creator = make_user("inkmaker")
    publish_model(creator, "Ink Sketch", seed=7, tags=["ink", "sketch"], price=150)
    publish_model(creator, "Watercolor Wash", seed=8, tags=["watercolor"])
    publish_model(creator, "Paper Base", seed=9, kind="checkpoint", tags=["paper"])
    expected_sha = hashlib.sha256(lora_bytes(seed=7)).hexdigest()
    buyer = make_user("collector")
    page = browser_page
    login(page, buyer)

    # When the buyer filters by kind, then searches
    page.goto(site + "/")
    expect(page.locator("article.model-card")).to_have_count(3)
    page.select_option("#id_kind", "lora")
    page.click("form.filters button[type=submit]")
    expect(page.locator("article.model-card")).to_have_count(2)
    expect(page.locator("article.model-card", has_text="Paper Base")).to_have_count(0)
    shot(page, "filtered-loras")
    page.fill("#id_q", "ink")
    page.click("form.filters button[type=submit]")
    cards = page.locator("article.model-card")
    expect(cards).to_have_count(1)
    expect(cards).to_contain_text("Ink Sketch")
    expect(page.locator(".result-count")).to_contain_text("1 model for “ink”")
    shot(page, "searched")

    # and tries to buy it with an empty wallet
    cards.first.locator("a.card-link").click()
    expect(page.locator(".buy-box .price")).to_have_text("150 credits")
    model_url = page.url
    shot(page, "model-page")
    page.click("button.buy")
    expect(page.locator("h1")).to_have_text("Confirm your purchase")
    page.click("button.confirm-buy")
    expect(page.locator(".purchase-error")).to_contain_text("Not enough credits")
    assert wallet_balance(user=buyer) == 0  # nothing moved
    shot(page, "insufficient-funds")

    # then they top up with the demo provider and buy it
    page.click("text=Top up your wallet")
    page.fill("#id_amount", "500")
    page.click("form.top-up-form button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("Added 500 credits.")
    expect(page.locator("p.balance")).to_have_text("500 credits")
    shot(page, "wallet-topped-up")
    page.goto(model_url)
    page.click("button.buy")
    expect(page.locator(".balance-now")).to_have_text("500 credits")
    with page.expect_navigation(url="**/models/**"):
        page.click("button.confirm-buy")
    expect(page.locator(".messages")).to_contain_text("You own")
    expect(page.locator(".buy-box .owned")).to_have_text("Owned")
    shot(page, "owned")
    assert wallet_balance(user=buyer) == 350

    # When they download it: the bytes are the creator's file
    with page.expect_download() as info:
        page.click("a.button.download")
    saved = tmp_path / "download.safetensors"
    info.value.save_as(saved)
    assert info.value.suggested_filename == "ink-sketch.safetensors"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == expected_sha

    # and review it, the review shows as a verified purchase
    page.select_option("#id_rating", "5")
    page.fill("#id_text", "Crisp lines, works at weight 0.7.")
    with page.expect_navigation(url="**/models/**"):
        page.click("form.review-form button[type=submit]")
    review = page.locator("article.review")
    expect(review).to_contain_text("collector")
    expect(review).to_contain_text("Crisp lines, works at weight 0.7.")
    expect(review.locator(".verified")).to_have_text("Verified purchase")
    expect(page.locator(".model-head")).to_contain_text("★ 5.0 (1)")
    shot(page, "reviewed")

    # and the library lists it
    page.goto(site + "/library/")
    expect(page.locator("table.library")).to_contain_text("Ink Sketch")
    shot(page, "library")

    # Then another user, who did not buy it, is offered the purchase and refused the file
    other = new_page()
    login(other, make_user("lurker"))
    other.goto(model_url)
    expect(other.locator("button.buy")).to_have_text("Buy for 150 credits")
    href = other.locator("a.button.download").get_attribute("href")
    response = other.goto(site + str(href))
    assert response is not None and response.status == 403
    assert response.json()["code"] == "purchase_required"

    assert ledger_total() == 0 and ledger_reconcile() == []
