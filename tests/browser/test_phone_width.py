"""The main pages fit a 390 px wide phone: nothing scrolls sideways
(``document.scrollingElement.scrollWidth <= innerWidth``), with real content in them."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

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
