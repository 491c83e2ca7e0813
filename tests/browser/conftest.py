"""Browser journeys: headless Chromium (Debian's package) driven by Python Playwright against
``live_server`` (real PostgreSQL, Redis; a real Celery worker where a journey needs tasks).

Fixtures for every journey:

- ``browser_page``: a fresh browser context (own cookies) at desktop width; uncaught
  JavaScript errors and scripts blocked by the Content-Security-Policy fail the test, and a
  failing test leaves a screenshot of each open page.
- ``new_page``: another page in another context, for a second user in the same test.
- ``login(page, user)``: logs in through the login form.
- ``shot(page, name)``: screenshots at desktop (1280 px) and phone (390 px) widths into
  ``test-artifacts/browser/<test name>/`` and fails when the phone layout scrolls sideways.
- ``site``: the live server's base URL.

Playwright's sync API keeps an asyncio event loop running in this thread, so Django's
async-unsafe check would refuse the ORM calls the tests make between browser steps;
``DJANGO_ALLOW_ASYNC_UNSAFE`` is set while the browser runs, in the test process only (the
live server answers from its own thread, where no loop runs).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

CHROMIUM = os.environ.get("ATELIER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
PASSWORD = "a-long-passphrase"  # make_user's default
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
TIMEOUT_MS = 15_000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can tell that the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="package")
def _playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"No Chromium at {CHROMIUM}: apt-get install chromium (as .ci/run does), "
            "or set ATELIER_CHROMIUM to its path."
        )
    old = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    manager = sync_playwright().start()
    try:
        yield manager
    finally:
        manager.stop()
        if old is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = old


@pytest.fixture(scope="package")
def _browser(_playwright: Playwright) -> Iterator[Browser]:
    browser = _playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(autouse=True)
def _license_catalogue(request: pytest.FixtureRequest) -> Iterator[None]:
    """Transactional tests flush the data-migration tables when they end: load the license
    catalogue (idempotent) before each test, as an earlier one may have flushed it."""
    if "transactional_db" not in request.fixturenames and not request.node.get_closest_marker(
        "django_db"
    ):
        yield
        return
    import importlib

    from django.apps import apps

    load = importlib.import_module("marketplace.migrations.0003_license_catalogue").load
    request.getfixturevalue("transactional_db")
    load(apps, None)
    yield


@pytest.fixture
def site(live_server: Any) -> str:
    return str(live_server.url)


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    folder = ARTIFACTS / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def new_page(
    _browser: Browser, site: str, request: pytest.FixtureRequest, artifacts_dir: Path
) -> Iterator[Callable[[], Page]]:
    """``new_page()``: a page in a context of its own (its own cookies: another user).

    Uncaught JavaScript errors and scripts the Content-Security-Policy blocked fail the
    test; when a test fails, each open page is saved as ``failed-N.png``.
    """
    contexts: list[Any] = []
    pages: list[Page] = []
    errors: list[str] = []

    def on_console(page: Page, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            errors.append(f"{page.url}: {message.text}")

    def make() -> Page:
        context = _browser.new_context(viewport=DESKTOP, base_url=site, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        page.on("console", lambda message: on_console(page, message))
        pages.append(page)
        return page

    yield make
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for n, page in enumerate(pages, 1):
            page.screenshot(path=artifacts_dir / f"failed-{n}.png", full_page=True)
    for context in contexts:
        context.close()
    assert not errors, "JavaScript errors: " + "; ".join(errors)


@pytest.fixture
def browser_page(new_page: Callable[[], Page]) -> Page:
    return new_page()


@pytest.fixture
def login(site: str) -> Callable[..., None]:
    def log_in(page: Page, user: Any, password: str = PASSWORD) -> None:
        page.goto(f"{site}/accounts/login/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", password)
        with page.expect_navigation():
            page.click("form.login-form button[type=submit]")
        assert page.locator("a.who").inner_text() == user.username, page.url

    return log_in


def horizontal_overflow(page: Page) -> int:
    """How many pixels the page scrolls sideways (0 when it fits the viewport)."""
    return int(page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth"))


@pytest.fixture
def shot(artifacts_dir: Path) -> Callable[..., None]:
    """``shot(page, name)``: desktop and phone screenshots of the current page; the phone
    one must not scroll sideways (``check_overflow=False`` for pages we do not style)."""
    count = {"n": 0}

    def take(page: Page, name: str, *, check_overflow: bool = True) -> None:
        count["n"] += 1
        stem = artifacts_dir / f"{count['n']:02d}-{name}"
        size = page.viewport_size or DESKTOP
        try:
            page.set_viewport_size(DESKTOP)
            page.screenshot(path=f"{stem}-desktop.png", full_page=True)
            page.set_viewport_size(PHONE)
            page.screenshot(path=f"{stem}-phone.png", full_page=True)
            if check_overflow:
                overflow = horizontal_overflow(page)
                assert overflow <= 0, f"{page.url} scrolls {overflow}px sideways at 390px"
        finally:
            page.set_viewport_size(size)

    return take
