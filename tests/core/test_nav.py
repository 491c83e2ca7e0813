"""The header: navigation grouped by role, the wallet balance, and what waits on the user."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def header(client: Client, path: str = "/") -> str:
    html = client.get(path).content.decode()
    match = re.search(r'<header class="topbar">.*?</header>', html, re.S)
    assert match, html[:500]
    return match.group(0)


def groups(html: str) -> dict[str, list[str]]:
    """Each nav group's link texts, in order."""
    found = re.findall(r'<div class="nav-group" data-group="(\w+)">(.*?)</div>', html, re.S)
    return {
        name: [re.sub(r"<[^>]+>", "", t).strip() for t in re.findall(r"<a [^>]*>.*?</a>", body)]
        for name, body in found
    }


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_visitor_sees_browse_how_it_works_and_sign_up_but_no_wallet(client: Client) -> None:
    html = header(client)
    nav = groups(html)
    assert nav["browse"] == ["Models", "Datasets", "API", "How it works"]
    assert nav["account"] == ["Log in", "Sign up"]
    assert "balance-chip" not in html and "Nodes" not in html


def test_a_buyer_sees_buy_create_and_train_but_not_nodes_earnings_or_staff(
    make_user: Callable[..., Any], fund: Callable[..., Any]
) -> None:
    # Given a buyer with 120 credits and nothing of their own
    buyer = make_user("buyer")
    fund(buyer, 120)
    html = header(logged_in(buyer))
    nav = groups(html)
    # Then: their groups, no Nodes (not a data owner), no Earnings, no staff links
    assert nav["buy"] == ["Library", "Wallet"]
    assert nav["create"] == ["Upload", "Studio"]
    assert nav["train"] == ["Train"]
    assert "staff" not in nav
    assert nav["account"][:2] == ["buyer", "Tokens"]
    # and the balance in the header, linking to the wallet
    assert re.search(r'<a class="chip balance-chip" href="/wallet/"[^>]*>120 credits</a>', html)
    assert "pending-chip" not in html


def test_a_creator_sees_earnings(make_user: Callable[..., Any], make_version: Any) -> None:
    creator = make_user("creator")
    make_version(creator)
    assert groups(header(logged_in(creator)))["create"] == ["Upload", "Studio", "Earnings"]


def test_a_data_owner_sees_nodes_and_the_training_requests_waiting_on_them(fed: Any) -> None:
    # Given an owner whose manually approved dataset a trainer asked to train on
    owner = fed.user("owner")
    manual = fed.dataset(owner, approval="manual")
    trainer = fed.user("trainer", credits=10_000)
    fed.launch(trainer, fed.spec(fed.base_version(fed.user("creator")), [manual]))
    # Then the owner's header has Nodes and the request, linking to the approval inbox
    html = header(logged_in(owner))
    assert groups(html)["train"] == ["Train", "Nodes"]
    chip = re.search(r'<a class="chip pending-chip" href="([^"]+)"[^>]*>([^<]+)</a>', html)
    assert chip is not None and chip.groups() == ("/nodes/#inbox-h", "1 training request")
    # and the trainer, who waits on the owner, has nothing to act on and no Nodes
    trainer_html = header(logged_in(trainer))
    assert "pending-chip" not in trainer_html and "Nodes" not in trainer_html


def test_staff_see_moderation_and_the_open_reports_count(
    make_user: Callable[..., Any], make_version: Any
) -> None:
    from marketplace.services.reports import report_create

    version = make_version(make_user("creator"))
    for name in ("r1", "r2"):
        report_create(reporter=make_user(name), target=version, reason="unsafe", text="Bad.")
    staff = make_user("mod", is_staff=True)
    html = header(logged_in(staff))
    assert groups(html)["staff"] == ["Reports", "Payouts", "Admin"]
    chip = re.search(
        r'<a class="chip pending-chip" href="([^"]+)" data-count="(\d+)">([^<]+)</a>', html
    )
    assert chip is not None
    assert chip.groups() == (
        "/admin/marketplace/report/?status__exact=open",
        "2",
        "2 open reports",
    )
    # a user who is not staff sees no count of reports
    assert "open report" not in header(logged_in(make_user("nobody")))


def test_the_header_search_goes_to_the_browse_page_which_has_its_own(client: Client) -> None:
    html = header(client, "/datasets/")
    assert re.search(r'<form class="site-search" method="get" action="/models/"', html)
    assert 'name="q" placeholder="Search, hash, trigger word"' in html
    assert "site-search" not in header(client, "/models/?q=abc")  # one search box on browse
    assert "site-search" not in header(client, "/?q=abc")  # a search link to "/" is browse
