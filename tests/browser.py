"""Headless Chromium for the tests that look at a page as a reader would (playwright, Debian's chromium).

    from browser import browser_page, require_browser, screenshot

    require_browser()                      # skips, or fails under PHI3V_REQUIRE_BROWSER=1, without chromium
    with browser_page() as page:           # a playwright Page in a fresh profile
        page.goto(url)
        screenshot(page, ARTIFACTS, "front-page")   # ARTIFACTS/front-page.png

Chromium is the system's (`apt-get install chromium`); playwright never downloads a browser of its
own here. Each `browser_page` starts one browser with a throw-away profile and closes it on exit.
`blocked_requests` on the page lists the requests it made to hosts other than 127.0.0.1/localhost,
which are refused: a page under test gets nothing from the network.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

REQUIRE_BROWSER = "PHI3V_REQUIRE_BROWSER"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def chromium_path() -> str | None:
    """The system's Chromium, or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def require_browser() -> str:
    """Chromium's path; without it the calling test skips, or fails where PHI3V_REQUIRE_BROWSER is set (CI)."""
    path = chromium_path()
    if path is None:
        reason = "no chromium on this machine (apt-get install chromium; CI installs it and sets PHI3V_REQUIRE_BROWSER=1)"
        if os.environ.get(REQUIRE_BROWSER):
            pytest.fail(f"{REQUIRE_BROWSER} is set but there is {reason}")
        pytest.skip(reason)
    return path


@contextmanager
def browser_page(width: int = 1280, height: int = 800) -> Iterator["Page"]:
    """A playwright Page of a fresh headless Chromium that may reach only this machine."""
    from playwright.sync_api import sync_playwright

    executable = require_browser()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )
        blocked = []

        def only_local(route):
            if urlsplit(route.request.url).hostname in LOCAL_HOSTS or route.request.url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", only_local)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.blocked_requests = blocked
            yield page
        finally:
            context.close()


def screenshot(page, folder: str | Path, name: str, full_page: bool = False) -> Path:
    """Save what the page shows as `folder/name.png` (the folder is made) and return the path."""
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    return path
