"""Screenshots for the guides, taken from a running `make demo` after its job has finished.

    .venv/bin/python scripts/guide_screenshots.py [--site http://127.0.0.1:8000]
        [--summary var/demo/last-job.json] [--out docs/img]

Logs in as the demo's users (demo_seed's password) in headless Chromium (Debian's
/usr/bin/chromium, never a downloaded browser) and saves, at desktop width (1280 px) and, for the
pages people open on phones, at 390 px: the landing page, the demo's trained LoRA (sample images:
the base alone and base + LoRA), the job page (each round's sample grid, loss and epsilon), the
browse page, a private dataset's public page and the data owner's dashboard. Exits non-zero
with a message when the demo is not running or its job has not published a LoRA.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

PASSWORD = "atelier-demo-pass"  # demo_seed's DEMO_PASSWORD
DESKTOP, PHONE = 1280, 390


def login(page: Page, site: str, username: str) -> None:
    page.goto(f"{site}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit], form input[type=submit]")
    page.wait_for_load_state("networkidle")


def shoot(page: Page, url: str, out: Path, name: str, *, phone: bool = False) -> None:
    for width, suffix in [(DESKTOP, "")] + ([(PHONE, "-phone")] if phone else []):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(url)
        page.wait_for_load_state("networkidle")
        path = out / f"{name}{suffix}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"  {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default="http://127.0.0.1:8000")
    parser.add_argument("--summary", type=Path, default=Path("var/demo/last-job.json"))
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args(argv)
    try:
        summary = json.loads(args.summary.read_text())
    except (OSError, ValueError) as err:
        print(f"error: no finished demo job ({args.summary}: {err}); run `make demo` first")
        return 2
    if not summary.get("model_url"):
        print(f"error: the demo's job {summary.get('job_url')} published no LoRA")
        return 2
    site = args.site.rstrip("/")
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
        try:
            visitor = browser.new_page()
            try:
                shoot(visitor, f"{site}/", args.out, "landing", phone=True)
            except Exception as err:  # the site is not up: say so, not a traceback
                print(f"error: {site} did not answer ({err.__class__.__name__}); is the demo up?")
                return 2
            shoot(visitor, f"{site}/models/", args.out, "browse")
            trainer = browser.new_page()
            login(trainer, site, "trainer")
            shoot(trainer, summary["model_url"], args.out, "lora-page", phone=True)
            shoot(trainer, summary["job_url"], args.out, "job-page", phone=True)
            owner = browser.new_page()
            login(owner, site, "owner1")
            shoot(owner, f"{site}/nodes/", args.out, "owner-dashboard")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
