"""Every dashboard page fits the screens people use, 1280x800 and 1024x768, with data as long as real
data gets (tests/dashboard_data.py): nothing scrolls sideways, no column or text is cut off or spills
over its neighbour, no money figure or email wraps where it should not, filter bars line up. The checks
run in the page (tests/dashboard_fit.js) in Debian's Chromium, against one seeded `bastion serve` on the
embedded stack, reused for every page and both sizes.

BASTION_FIT_SCREENSHOTS=DIR captures every page at both sizes, to look at: DIR/SIZE/PAGE.png (the
window) and "PAGE (whole page).png".
Without Chromium the module skips, unless BASTION_REQUIRE_BROWSER=1 (CI), where it fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from browser import CHROMIUM_ARGS, browser_required, chromium_path, off_loop, with_management
from dashboard_data import CREATED_IN_THE_BROWSER, Seeded, models_file, seed
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from stacks import Stack, drop_stack, make_stack

if chromium_path() is None and not browser_required():
    pytest.skip(
        "no Chromium: install Debian's (apt-get install chromium), or set BASTION_REQUIRE_BROWSER=1 to fail",
        allow_module_level=True,
    )

SIZES = {"1280x800": {"width": 1280, "height": 800}, "1024x768": {"width": 1024, "height": 768}}
CHECKS = (Path(__file__).parent / "dashboard_fit.js").read_text()


@dataclass
class Site:
    stack: Stack
    data: Seeded
    operator: BrowserContext
    visitor: BrowserContext  # not signed in


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    path = chromium_path()
    if path is None:
        pytest.fail("BASTION_REQUIRE_BROWSER is set but there is no Chromium (apt-get install chromium)")
    workdir = tmp_path_factory.mktemp("fit")
    config = workdir / "bastion.yaml"
    config.write_text(yaml.safe_dump(models_file(), sort_keys=False))
    stack = off_loop(make_stack, "embedded", config, workdir)
    try:
        data = with_management(stack, seed)
        stack.start()
        with sync_playwright() as playwright:
            browser: Browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
            operator = new_context(browser, stack)
            operator.add_cookies(
                [
                    {
                        "name": "bastion_session",
                        "value": data.operator_session,
                        "domain": "127.0.0.1",
                        "path": "/dashboard",
                        "httpOnly": True,
                        "sameSite": "Lax",
                    }
                ]
            )
            yield Site(stack, data, operator, new_context(browser, stack))
            browser.close()
    finally:
        off_loop(drop_stack, stack)


def new_context(browser: Browser, stack: Stack) -> BrowserContext:
    context = browser.new_context(base_url=stack.gateway.root)
    context.set_default_timeout(15_000)
    return context


def opened(page: Page, path: str, status: int = 200) -> None:
    answer = page.goto(path)
    assert answer is not None and answer.status == status, (path, answer and answer.status)


def create_key(page: Page, site: Site) -> None:
    """The page that shows a key once, after the keys page's form created it (a 40-character name)."""
    name = CREATED_IN_THE_BROWSER[list(SIZES).index(size_of(page))]
    opened(page, f"/dashboard/a/{site.data.account_id}/keys")
    page.locator("details.disclosure summary").click()
    page.fill("#k-name", name)
    page.fill("#k-budget", "2500.5")
    page.fill("#k-parallel", "16")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Create key").click()
    assert navigation.value is not None and navigation.value.status == 201
    assert page.locator("[data-created-key]").count() == 1


def request_page(unit: str, operator: bool = False) -> Callable[[Page, Site], None]:
    def go(page: Page, site: Site) -> None:
        request_id = site.data.request_ids[unit]
        base = "/dashboard/usage" if operator else f"/dashboard/a/{site.data.account_id}/usage"
        opened(page, f"{base}/{request_id}")

    return go


def account(path: str) -> Callable[[Page, Site], None]:
    return lambda page, site: opened(page, f"/dashboard/a/{site.data.account_id}/{path}")


def key_page(suffix: str) -> Callable[[Page, Site], None]:
    def go(page: Page, site: Site) -> None:
        opened(page, f"/dashboard/a/{site.data.account_id}/keys/{site.data.key_ids[1]}{suffix}")

    return go


def operator(path: str) -> Callable[[Page, Site], None]:
    return lambda page, site: opened(page, f"/dashboard/{path}")


def filtered_usage(page: Page, site: Site) -> None:
    key = site.data.key_ids[0]
    opened(
        page, f"/dashboard/a/{site.data.account_id}/usage?key={key}&status=ok&from=2020-01-01&to=2099-12-31"
    )


def invite_member(page: Page, site: Site) -> None:
    """The members page showing the one-time link of a member just invited."""
    opened(page, f"/dashboard/a/{site.data.account_id}/members")
    page.fill("#m-email", f"new.member-{size_of(page)}@research.northwind.example")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Invite").click()
    assert navigation.value is not None and navigation.value.status == 201


# The order matters once: the keys created here make the account's twelve before the keys page is seen.
PAGES: dict[str, Callable[[Page, Site], None]] = {
    "key created": create_key,
    "overview": account(""),
    "overview 90 days": account("?days=90"),
    "usage": account("usage"),
    "usage filtered": filtered_usage,
    "usage failed": account("usage?status=error"),
    "usage refused": account("usage?status=refused"),
    "request (tokens)": request_page("tokens"),
    "request (audio)": request_page("audio_ms"),
    "keys": account("keys"),
    "key edit": key_page(""),
    "key revoke": key_page("/revoke"),
    "models and rates": account("models"),
    "credit": account("credit"),
    "members": account("members"),
    "member invited": invite_member,
    "audit log": account("audit"),
    "operator accounts": operator("accounts"),
    "operator all usage": operator("usage"),
    "operator refused": operator("usage?status=refused"),
    "operator request": request_page("image", operator=True),
    "operator users": operator("users"),
    "operator audit log": operator("audit"),
    "operator gateway": operator("gateway"),
    "not found": lambda page, site: opened(page, "/dashboard/a/acct_nothing/", 404),
}
SIGNED_OUT: dict[str, Callable[[Page, Site], None]] = {
    "sign-in": lambda page, site: opened(page, "/dashboard/signin"),
    "set password": lambda page, site: opened(page, f"/dashboard/invite/{site.data.member_link}"),
}


def size_of(page: Page) -> str:
    viewport = page.viewport_size
    assert viewport is not None
    return f"{viewport['width']}x{viewport['height']}"


def fit_problems(page: Page, name: str, size: str) -> list[str]:
    """What does not fit (tests/dashboard_fit.js), with every disclosure opened (forms included)."""
    page.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
    where = os.environ.get("BASTION_FIT_SCREENSHOTS")
    if where:
        (Path(where) / size).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / size / f"{name}.png"))
        page.screenshot(path=str(Path(where) / size / f"{name} (whole page).png"), full_page=True)
    problems: list[str] = page.evaluate(CHECKS)
    return problems


@pytest.mark.parametrize(("name", "size"), [(name, size) for name in [*PAGES, *SIGNED_OUT] for size in SIZES])
def test_the_page_fits_the_screen(site: Site, name: str, size: str) -> None:
    page = (site.operator if name in PAGES else site.visitor).new_page()
    page.set_viewport_size(SIZES[size])
    try:
        (PAGES | SIGNED_OUT)[name](page, site)
        problems = fit_problems(page, name, size)
        assert not problems, f"{name} at {size}:\n  " + "\n  ".join(problems[:25])
    finally:
        page.close()
