"""/docs and /redoc in real Chromium with no internet: every request to a host other than this machine
is aborted, and the pages still list the operations, under their Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from browser import CHROMIUM_ARGS, browser_required, chromium_path, screenshots_dir
from conftest import Gateway, start_gateway, stop_gateway
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

if chromium_path() is None and not browser_required():
    pytest.skip(
        "no Chromium: install Debian's (apt-get install chromium), or set BASTION_REQUIRE_BROWSER=1 to fail",
        allow_module_level=True,
    )

LOOPBACK = {"127.0.0.1", "localhost"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        pytest.fail("BASTION_REQUIRE_BROWSER is set but there is no Chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("docs")
    gateway = start_gateway(workdir / "unused.yaml", workdir / "demo.log", {"BASTION_DEMO": "1"}, cwd=workdir)
    yield gateway
    stop_gateway(gateway)


class Offline:
    """A page whose requests outside this machine are aborted (and recorded), and its console errors
    (a CSP violation is one)."""

    def __init__(self, browser: Browser, width: int) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page: Page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on(
            "response", lambda r: self.errors.append(f"{r.status} {r.url}") if r.status >= 400 else None
        )

    def _route(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort("internetdisconnected")

    def screenshot(self, name: str) -> None:
        where = screenshots_dir()
        if where:
            self.page.screenshot(path=str(Path(where) / name), full_page=False)


@pytest.mark.parametrize("width", [1024, 1280])
def test_docs_lists_the_operations_offline(browser: Browser, demo: Gateway, width: int) -> None:
    offline = Offline(browser, width)
    try:
        answer = offline.page.goto(demo.root + "/docs")
        assert answer is not None and answer.status == 200
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe" not in csp
        chat = offline.page.locator(".opblock-summary", has_text="/v1/chat/completions")
        expect(chat.first).to_be_visible(timeout=15_000)
        expect(offline.page.get_by_text("Create a chat completion").first).to_be_visible()
        expect(offline.page.locator(".opblock-summary", has_text="/readyz").first).to_be_visible()
        chat.first.click()  # an operation opens: its request body's schema is there
        expect(offline.page.get_by_text("Try it out").first).to_be_visible()
        offline.screenshot(f"docs-{width}.png")
        assert offline.outside == [] and offline.errors == []
    finally:
        offline.context.close()


def test_redoc_lists_the_operations_offline(browser: Browser, demo: Gateway) -> None:
    offline = Offline(browser, 1280)
    try:
        answer = offline.page.goto(demo.root + "/redoc")
        assert answer is not None and answer.status == 200
        chat = offline.page.get_by_role("heading", name="Create a chat completion")
        expect(chat.first).to_be_visible(timeout=15_000)
        offline.screenshot("redoc-1280.png")
        assert offline.outside == [] and offline.errors == []
    finally:
        offline.context.close()


def test_the_files_the_pages_load_are_bastions(demo: Gateway) -> None:
    page = httpx.get(demo.root + "/docs").text
    for path, kind in [
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/swagger-ui.css", "text/css"),
        ("/docs/init.js", "text/javascript"),
        ("/docs/favicon.svg", "image/svg+xml"),
        ("/redoc/redoc.standalone.js", "text/javascript"),
    ]:
        answer = httpx.get(demo.root + path)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind), path
        assert len(answer.content) > 100
    assert "https://" not in page and "http://" not in page
    assert "https://" not in httpx.get(demo.root + "/redoc").text
