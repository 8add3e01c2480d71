"""/docs and /redoc in a real browser with no network (issue 16): headless Chromium (Debian's
package, driven by Playwright) renders them from a live `idp serve`, with every request that
leaves the server refused, and the page's CSP reporting no violation."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import PASSWORD
from tests.live import LiveServer, live_server

pytestmark = pytest.mark.slow

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (scripts/test installs it with apt-get as root)")


@pytest.fixture
def server(e2e_database: str, tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(e2e_database, tmp_path) as server:
        created = server.idp(
            "users", "create", "docs-user", "--email", "docs@example.com", stdin=PASSWORD + "\n"
        )
        assert created.returncode == 0, created.stderr
        yield server


# ReDoc's footer names an image on redocly's CDN: the page's CSP blocks it, as it should.
REDOC_LOGO = "Loading the image 'https://cdn.redoc.ly/"


@pytest.mark.parametrize(
    ("page_path", "ready_selector", "blocked_by_policy"),
    [("/docs", "button.authorize", ()), ("/redoc", ".api-info h1", (REDOC_LOGO,))],
)
def test_docs_render_offline(
    server: LiveServer, page_path: str, ready_selector: str, blocked_by_policy: tuple[str, ...]
) -> None:
    executable = chromium_path()
    from playwright.sync_api import ConsoleMessage, Route, sync_playwright

    outside: list[str] = []
    problems: list[str] = []

    def note(message: ConsoleMessage) -> None:
        text = message.text
        if text.startswith(blocked_by_policy):
            return
        if "Content Security Policy" in text or message.type == "error":
            problems.append(text)

    def only_this_server(route: Route) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            # Root in a container has no user namespaces for Chromium's sandbox; every host
            # name but the server's resolves to nothing.
            args=["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )
        try:
            page = browser.new_page()
            page.route("**/*", only_this_server)
            page.on("console", note)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(server.url + page_path, wait_until="load")
            page.wait_for_selector(ready_selector, timeout=20_000)
            if page_path == "/docs":
                # The password flow works under the page's CSP: log in through the dialog.
                page.click("button.authorize")
                page.fill("input#oauth_username", "docs-user")
                page.fill("input#oauth_password", PASSWORD)
                with page.expect_response(
                    lambda r: r.url.split("?")[0] == server.url + "/token"
                ) as token_response:
                    page.click(".auth-btn-wrapper button.authorize")
                assert token_response.value.status == 200
                page.wait_for_selector(".modal-ux button:has-text('Logout')", timeout=10_000)
        finally:
            browser.close()

    assert outside == []
    assert problems == []
