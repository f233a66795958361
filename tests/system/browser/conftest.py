"""
Chromium through Playwright's sync API, and the real C{twistd cluso} in a
child process (so the browser never waits on the reactor of the tests).

Every page saves a screenshot under C{test-artifacts/} when its test ends,
and an uncaught error in a page fails the test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import HARNESS_URL, Server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
HARNESS = Path(__file__).with_name("harness.js")


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """
    Debian's Chromium, headless, for the tests of this package; fails
    (never skips) when it is missing.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the browser tests need Debian's "
            "chromium package (apt-get install chromium; scripts/test installs it)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Python Playwright is not installed; pip install -e '.[test]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, launch: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """
    A fresh page that can import the test harness at C{/__tests__/harness.js}
    from whatever origin it is on. It depends on C{launch} so that its
    screenshot is taken before the test's servers stop.
    """
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route(
        f"**{HARNESS_URL}",
        lambda route: route.fulfill(
            body=HARNESS.read_text(), content_type="text/javascript; charset=utf-8"
        ),
    )
    page.set_default_timeout(10_000)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """
    Start servers rooted at a directory (default: a fresh one); all are
    stopped when the test ends.
    """
    servers: list[Server] = []

    def start(root: Path | None = None, args: list[str] | None = None) -> Server:
        if root is None:
            root = tmp_path / f"root{len(servers)}"
            root.mkdir()
        server = Server(root, list(args or []))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
