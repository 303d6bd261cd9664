"""A real browser: Debian's Chromium, headless, driven by Playwright.

No browser is downloaded: Playwright starts /usr/bin/chromium (the Debian
package that scripts/system-packages.sh installs). Missing, it is an error.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO

SCREENSHOTS = REPO / "docs" / "screenshots"


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("Chromium is missing: apt-get install chromium (make test does it as root)")


@pytest.fixture
def browser(transactional_db, monkeypatch):
    """Chromium for one test. Playwright's sync API keeps an event loop running
    in this thread while it lives; the test's own ORM calls are still plain
    synchronous ones, so Django is told so (as its docs advise) for this test
    only, and the browser stops before the database is flushed."""
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # expect() waits 5 s by default (set_default_timeout below is for actions):
    # too little for a page that a worker and a PACS on a busy machine update.
    expect.set_options(timeout=30_000)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # root cannot use the sandbox
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=args
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser, live_server):
    """Pages in fresh browser contexts (separate cookies), logged in as someone.
    Every page of the test is watched for what the Content-Security-Policy
    blocked (Chromium says so on its console): nothing may be."""
    contexts = []
    blocked: list[str] = []

    def open_as(username: str, password: str):
        context = browser.new_context(
            base_url=live_server.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        context.set_default_timeout(60_000)
        contexts.append(context)
        page = context.new_page()
        page.on(
            "console",
            lambda message: (
                "Content Security Policy" in message.text and blocked.append(message.text)
            ),
        )
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{live_server.url}/")
        return page

    yield open_as
    for context in contexts:
        context.close()
    assert blocked == [], "the Content-Security-Policy blocked something the portal serves"


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
