"""Helpers of the dashboard's browser tests: Debian's Chromium driven by Playwright's sync API, dashboard
users with a session in a browser context, and the stacks' store calls run off Playwright's loop.

Playwright's sync API keeps an event loop running on the test's thread while a browser is open, so
`asyncio.run` (which every `Stack` store call uses) cannot run there: `off_loop` runs it on another thread.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from argon2 import PasswordHasher
from dashboard_client import PASSWORD
from playwright.sync_api import BrowserContext, Page, Response
from stacks import Stack

from bastion.db.audit import Actor
from bastion.db.store import Store
from bastion.management import Management

T = TypeVar("T")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}  # the README's screenshots: a common laptop
TESTS = Actor("tests", None, None)


def chromium_path() -> str | None:
    """Debian's chromium (never a browser Playwright downloads)."""
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def browser_required() -> bool:
    """CI sets BASTION_REQUIRE_BROWSER=1: there a missing Chromium fails the tests rather than skip them."""
    return os.environ.get("BASTION_REQUIRE_BROWSER", "") not in ("", "0")


def off_loop(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` on a thread of its own, where `asyncio.run` may run."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


def with_management(stack: Stack, operation: Callable[[Management], Any]) -> Any:
    """A management operation on the stack's database, as the CLI runs it (off Playwright's loop)."""

    async def go(store: Store) -> Any:
        return await operation(Management(store))

    return off_loop(stack.with_store, go)


def key_ids(stack: Stack, account_id: str) -> set[str]:
    async def read(management: Management) -> set[str]:
        return {key.id for key in await management.list_keys(account_id)}

    return set(with_management(stack, read))


def cli(stack: Stack, *args: str) -> Any:
    """`bastion ARGS --json` with the stack's settings and the gateway's public URL; its JSON answer."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env = inherited | stack.env() | {"BASTION_PUBLIC_URL": stack.gateway.root}
    done = subprocess.run(
        [sys.executable, "-m", "bastion", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@dataclass
class Person:
    """A dashboard user signed in in a browser context of their own."""

    user_id: str
    email: str
    context: BrowserContext
    page: Page
    account_id: str | None

    @property
    def home(self) -> str:
        return f"/dashboard/a/{self.account_id}/" if self.account_id else "/dashboard/accounts"

    def session_cookie(self) -> str:
        found = [c for c in self.context.cookies() if c["name"] == "bastion_session"]
        assert len(found) == 1, found
        return found[0]["value"]


def new_email(role: str | None) -> str:
    return f"{role or 'operator'}-{secrets.token_hex(4)}@example.com"


def set_password(page: Page, link: str, password: str = PASSWORD) -> Response | None:
    """Open a one-time link, set the password; the page is then wherever the dashboard sent it."""
    opened = page.goto(link)
    assert opened is not None and opened.status == 200, (link, opened and opened.status)
    page.fill("#password", password)
    page.fill("#confirm", password)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Save and sign in").click()
    return navigation.value


@functools.cache
def password_hash() -> str:
    """PASSWORD hashed once, with Bastion's parameters (argon2-cffi's defaults): hashing costs ~0.2 s."""
    return PasswordHasher().hash(PASSWORD)


def join(stack: Stack, context: BrowserContext, account_id: str | None, role: str | None = None) -> Person:
    """A new user (an operator when `account_id` is None) with the password PASSWORD, signed in in
    `context` and on their home page.

    The invite, the one-time link and the session are the store's own operations, the ones the pages
    call (the browser's way through the link is test_an_invite_link_..., the sign-in form's the throttle
    and sign-out tests): a sign-up through the pages costs a second, and most tests need several users.
    """
    email = new_email(role)

    async def sign_up(management: Management) -> tuple[str, str]:
        people = management.store.people
        _, link = await management.invite_user(email, account_id is None, account_id, role, TESTS)
        user = await people.set_password(link, password_hash(), "127.0.0.1")
        return user.id, await people.start_session(user, "127.0.0.1", "tests")

    user_id, session = with_management(stack, sign_up)
    context.add_cookies(
        [
            {
                "name": "bastion_session",
                "value": session,
                "domain": "127.0.0.1",
                "path": "/dashboard",
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )
    page = context.new_page()
    person = Person(user_id, email, context, page, account_id)
    page.goto(person.home)
    assert page.url == stack.gateway.root + person.home
    return person


def sign_in(page: Page, email: str, password: str) -> Response:
    """Send the sign-in form (the page must show it); the answer to the POST."""
    page.fill("#email", email)
    page.fill("#password", password)
    posted = page.expect_response(
        lambda r: r.url.split("?")[0].endswith("/dashboard/signin") and r.request.method == "POST"
    )
    with posted as answer, page.expect_navigation():  # to the page it answers or redirects to
        page.get_by_role("button", name="Sign in").click()
    return answer.value


def screenshots_dir() -> Path | None:
    where = os.environ.get("BASTION_SCREENSHOTS")
    if not where:
        return None
    path = Path(where)
    path.mkdir(parents=True, exist_ok=True)
    return path
