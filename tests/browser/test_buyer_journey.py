"""Journey 2: a buyer sees prices on the cards, filters (kind, Free/Paid), sorts by price and
searches, is offered Buy (not Download) and a free preview on a paid LoRA, tops up with the
demo payment provider, buys it, is not asked to pay again, downloads it (the same bytes),
follows the wallet's reference to it, reviews it; a user who did not buy it sees Buy and no
Download, and the file route still refuses them. Screenshots at 1280 and 390 px."""

from __future__ import annotations

import hashlib
import re
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
    from marketplace.models import Listing
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

    # When the buyer browses: each card says its price or Free, its kind and base model
    page.goto(site + "/")
    expect(page.locator("article.model-card")).to_have_count(3)
    ink_card = page.locator("article.model-card", has_text="Ink Sketch")
    expect(ink_card.locator(".chip.price")).to_have_text("150 credits")
    expect(ink_card.locator(".badge.kind")).to_have_text("LoRA")
    expect(ink_card.locator(".badge.base")).to_have_text("SD 1.x")
    expect(page.locator("article.model-card .chip.free")).to_have_count(2)
    shot(page, "browse-prices")
    # and asks for paid models only, then for all of them by price, dearest first
    page.select_option("#id_price", "paid")
    page.click("form.filters button[type=submit]")
    expect(page.locator("article.model-card")).to_have_count(1)
    expect(page.locator("article.model-card")).to_contain_text("Ink Sketch")
    page.select_option("#id_price", "")
    page.select_option("#id_sort", "price_high")
    page.click("form.filters button[type=submit]")
    expect(page.locator("article.model-card").first).to_contain_text("Ink Sketch")
    shot(page, "sorted-by-price")
    page.select_option("#id_sort", "relevance")

    # When the buyer filters by kind, then searches
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

    # and opens it: Buy with the price is the main button, no Download; Try it offers the
    # free preview instead of the studio
    cards.first.locator("a.card-link").click()
    expect(page.locator(".buy-box .price")).to_have_text("150 credits")
    expect(page.locator("button.buy")).to_have_text("Buy — 150 credits")
    expect(page.locator("a.button.download")).to_have_count(0)
    expect(page.locator("#try-it.try-offer")).to_contain_text("free preview")
    expect(page.locator("a[href*='studio'][href*='version=']")).to_have_count(0)
    model_url = page.url
    shot(page, "model-page")

    # and tries to buy it with an empty wallet
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
    expect(page.locator("button.buy")).to_have_count(0)
    expect(page.locator("#try-it")).to_have_attribute("href", re.compile(r"version="))
    shot(page, "owned")
    assert wallet_balance(user=buyer) == 350

    # and the purchase page, opened again, does not offer to pay for it
    listing = Listing.objects.get(model_version__model__name="Ink Sketch")
    page.goto(f"{site}/buy/{listing.pk}/")
    expect(page.locator(".owned-note")).to_contain_text("You own this")
    expect(page.locator("button.confirm-buy")).to_have_count(0)
    expect(page.locator("a.button.download")).to_be_visible()
    shot(page, "already-owned")
    # and the browse card says Owned
    page.goto(site + "/?price=paid")
    expect(page.locator("article.model-card .chip.owned")).to_have_text("Owned")
    # and the wallet's purchase row links to what it paid for
    page.goto(site + "/wallet/")
    reference = page.locator("table.transactions a.reference-link", has_text="Ink Sketch")
    expect(reference).to_have_count(1)
    shot(page, "wallet-references")
    reference.click()
    expect(page.locator("h1")).to_have_text("Ink Sketch")

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
    expect(other.locator("button.buy")).to_have_text("Buy — 150 credits")
    expect(other.locator("a.button.download")).to_have_count(0)
    shot(other, "not-bought")
    response = other.goto(f"{site}/api/download/models/{listing.model_version_id}")
    assert response is not None and response.status == 403
    assert response.json()["code"] == "purchase_required"

    assert ledger_total() == 0 and ledger_reconcile() == []
