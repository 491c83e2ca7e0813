"""The landing page tells visitors what each kind of user gets, with the site's own numbers
and images (read from the database, so an empty site says 0, not a made-up figure)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from registry.models import SampleRole
from registry.services.samples import RenderedSample, _store
from tests.registry.factories import make_model, png_bytes

pytestmark = pytest.mark.django_db


def fact(html: str, name: str) -> str:
    match = re.search(rf'<li data-fact="{name}"><strong>(\d+)</strong>', html)
    assert match, name
    return match.group(1)


def test_an_empty_site_says_zero_and_shows_no_images(client: Client) -> None:
    html = client.get("/welcome/").content.decode()
    assert fact(html, "models") == "0" and fact(html, "purchases") == "0"
    assert "<img" not in html and 'id="pair-h"' not in html


def test_a_visitor_sees_the_counts_the_covers_and_a_loras_before_and_after(
    client: Client, make_user: Callable[..., Any]
) -> None:
    # Given two creators' published models, a draft, and a LoRA with a rendered pair
    alice, bob = make_user("alice"), make_user("bob")
    lora = make_model(owner=alice, name="Ink LoRA")
    make_model(owner=bob, name="Plain VAE", kind="vae")
    make_model(owner=bob, name="Draft", publish=False)
    pair = [
        RenderedSample(png_bytes(color="gray"), "a red circle", role=SampleRole.BASE, pair=0),
        RenderedSample(png_bytes(color="red"), "a red circle", role=SampleRole.ADAPTED, pair=0),
    ]
    base_half, adapted_half = _store(lora, pair)
    # When a visitor opens the landing page
    response = client.get("/welcome/")
    html = response.content.decode()
    # Then it counts what is published, shows the LoRA's cover and its before/after pair
    assert response.status_code == 200
    assert fact(html, "models") == "2" and fact(html, "creators") == "2"
    assert "Draft" not in html
    assert f'<img src="{adapted_half.image.url}" alt="Ink LoRA"' in html  # the cover
    assert re.search(rf'<img src="{base_half.image.url}" alt="The base model alone">', html)
    assert "<q>a red circle</q>" in html
    # and the ways in are sign-up and browse
    assert 'href="/accounts/signup/"' in html and "Sign up free" in html


def test_a_signed_in_user_gets_next_steps_instead_of_sign_up(make_user: Callable[..., Any]) -> None:
    client = Client()
    client.force_login(make_user("carol"))
    html = client.get("/welcome/").content.decode()
    assert "Sign up free" not in html and 'href="/accounts/signup/"' not in html
    assert 'href="/upload/">Upload a model</a>' in html


def test_visitors_find_the_landing_page_from_the_header(client: Client) -> None:
    html = client.get("/models/").content.decode()
    assert '<a class="brand" href="/">' in html
    assert '<a href="/welcome/">How it works</a>' in html


def test_a_visitor_at_home_gets_the_landing_page_and_a_user_gets_browse(
    client: Client, make_user: Callable[..., Any]
) -> None:
    # Given a published model
    make_model(owner=make_user("alice"), name="Ink LoRA")
    # When a visitor opens "/", they get the landing page with the site's numbers
    html = client.get("/").content.decode()
    assert fact(html, "models") == "1" and "Sign up free" in html
    assert 'class="filters form"' not in html
    # and its way to the catalogue is the browse page at /models/, which lists the model
    assert 'href="/models/">Browse models</a>' in html
    assert "Ink LoRA</h3>" in client.get("/models/").content.decode()
    # and a search link to "/" still searches, for visitors too
    assert 'class="filters form"' in client.get("/", {"q": "ink"}).content.decode()
    # When a signed-in user opens "/", they get browse, as before, with one search box
    client.force_login(make_user("bob"))
    html = client.get("/").content.decode()
    assert 'class="filters form"' in html and "Ink LoRA</h3>" in html
    assert "Sign up free" not in html and 'class="site-search"' not in html


def test_home_answers_only_get(client: Client) -> None:
    assert client.post("/").status_code == 405
    assert client.get("/", {"price": "bogus"}).status_code == 200  # dropped, as on browse


def test_the_landing_page_answers_only_get(client: Client) -> None:
    assert client.post("/welcome/").status_code == 405
