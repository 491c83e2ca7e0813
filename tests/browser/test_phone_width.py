"""The main pages fit a 390 px wide phone: nothing scrolls sideways
(``document.scrollingElement.scrollWidth <= innerWidth``), with real content in them."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PHONE, horizontal_overflow
from tests.browser.data import publish_model

pytestmark = pytest.mark.django_db(transaction=True)


def test_main_pages_do_not_scroll_sideways_at_phone_width(
    new_page: Callable[[], Page],
    login: Callable[..., None],
    shot: Callable[..., None],
    make_user: Callable[..., Any],
    site: str,
    artifacts_dir: Path,
) -> None:
    from marketplace.payments import DemoProvider
    from marketplace.services.ledger import wallet_top_up
    from marketplace.services.purchases import purchase_create

    # Given a creator with long names and tags, and a buyer who bought one of the models
    creator = make_user("a_creator_with_a_rather_long_username")
    owned = publish_model(
        creator,
        "An Unusually Long Model Name For A Small Phone Screen",
        seed=1,
        tags=["watercolor-landscapes", "ink", "portrait"],
        price=40,
    )
    other = publish_model(creator, "Second", seed=2, price=25)
    draft = publish_model(creator, "Draft", seed=3, publish=False)
    buyer = make_user("buyer")
    wallet_top_up(user=buyer, amount=100, provider=DemoProvider(), idempotency_key="phone-1")
    purchase_create(buyer=buyer, listing=owned.listing, idempotency_key="phone-2")

    pages = {
        None: [
            "/",
            "/welcome/",
            "/?kind=lora&q=long",
            "/datasets/",
            "/accounts/login/",
            "/accounts/signup/",
            f"/models/{owned.model_id}/",
        ],
        buyer: [
            "/wallet/",
            "/library/",
            f"/models/{owned.model_id}/",
            f"/report/version/{owned.pk}/",
            f"/u/{creator.username}/",
        ],
        creator: [
            "/upload/",
            "/earnings/",
            "/wallet/payouts/",
            "/accounts/tokens/",
            f"/models/{draft.model_id}/",
            f"/versions/{draft.pk}/listing/",
            "/studio/",
            "/studio/gallery/",
            "/train/",
            "/train/new/",
            "/nodes/",
        ],
    }
    too_wide: dict[str, int] = {}
    for n, (user, paths) in enumerate(pages.items()):
        page = new_page()
        if user is not None:
            login(page, user)
        page.set_viewport_size(PHONE)
        for path in paths:
            response = page.goto(site + path)
            assert response is not None and response.status == 200, path
            overflow = horizontal_overflow(page)
            if overflow > 0:
                too_wide[path] = overflow
            name = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "home"
            page.screenshot(path=artifacts_dir / f"{n}-{name}-phone.png", full_page=True)
        if user is buyer:  # the confirmation page is reached by a POST
            page.goto(f"{site}/models/{other.model_id}/")
            page.click("button.buy")
            shot(page, "purchase-confirm")  # fails if it scrolls sideways at 390 px
    assert too_wide == {}, f"pages wider than 390 px (overflow in px): {too_wide}"


def test_the_menu_button_opens_the_navigation_and_tables_fit_at_phone_width(
    browser_page: Page,
    login: Callable[..., None],
    shot: Callable[..., None],
    make_user: Callable[..., Any],
    site: str,
) -> None:
    from marketplace.payments import DemoProvider
    from marketplace.services.ledger import wallet_top_up
    from marketplace.services.purchases import purchase_create

    # Given a buyer who owns a model with a long name and has wallet entries
    creator = make_user("creator")
    owned = publish_model(
        creator, "A Model Name Long Enough To Push The Download Button Off", seed=4, price=30
    )
    buyer = make_user("buyer")
    wallet_top_up(user=buyer, amount=100, provider=DemoProvider(), idempotency_key="menu-1")
    purchase_create(buyer=buyer, listing=owned.listing, idempotency_key="menu-2")
    page = browser_page
    login(page, buyer)
    page.set_viewport_size(PHONE)

    # When the buyer opens the library on a phone, the navigation is folded behind Menu
    page.goto(site + "/library/")
    toggle = page.locator("button.menu-toggle")
    expect(toggle).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(page.locator("#site-nav")).to_be_hidden()
    expect(page.locator(".balance-chip")).to_have_text("70 credits")  # still in the header
    # Then the Menu button opens it, grouped, with no Nodes for a buyer
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    nav = page.locator("#site-nav")
    expect(nav).to_be_visible()
    expect(nav.get_by_role("link", name="Wallet")).to_be_visible()
    expect(nav.locator(".nav-label", has_text="Buy")).to_be_visible()
    assert nav.get_by_role("link", name="Nodes").count() == 0
    assert horizontal_overflow(page) <= 0
    shot(page, "menu-open")
    # and Escape folds it again
    page.keyboard.press("Escape")
    expect(nav).to_be_hidden()

    # The library's Download button is whole on screen, and nothing scrolls sideways
    download = page.locator("a.download-link").first
    box = download.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert int(page.evaluate("document.documentElement.scrollWidth")) <= PHONE["width"]
    shot(page, "library")
    page.goto(site + "/wallet/")
    assert int(page.evaluate("document.documentElement.scrollWidth")) <= PHONE["width"]
    shot(page, "wallet")

    # The browse filters start folded on a phone, the search box stays
    page.goto(site + "/")
    expect(page.locator("details.filter-fold")).not_to_have_attribute("open", "")
    expect(page.locator("#id_q")).to_be_visible()
    page.locator("details.filter-fold > summary").click()
    expect(page.locator("details.filter-fold select").first).to_be_visible()
    shot(page, "browse-filters")


def test_a_visitor_lands_on_the_welcome_page_at_both_widths(
    browser_page: Page, shot: Callable[..., None], make_user: Callable[..., Any], site: str
) -> None:
    publish_model(make_user("creator"), "Sprite Sheet LoRA", seed=7)
    browser_page.goto(site + "/")
    browser_page.click("a.brand")
    expect(browser_page.locator("h1")).to_have_text(
        "Publish, buy and train Stable Diffusion models"
    )
    expect(browser_page.locator('li[data-fact="models"] strong')).to_have_text("1")
    shot(browser_page, "landing")
