"""The dashboard in a real Chromium against a real `bastion serve`, on both stacks: invites, keys created
and revoked in the browser and used with the openai SDK, the overview and the CSV export against the
ledger, roles and CSRF, escaping, sign-in throttling, sessions ended by sign-out and by removal, and every
page rendered (captured as PNGs when BASTION_SCREENSHOTS names a directory).

Chromium is Debian's (/usr/bin/chromium or `chromium` on PATH), driven by Playwright's sync API; without it
the module skips, unless BASTION_REQUIRE_BROWSER=1 (CI), where it fails. Test prices (tests/conftest.py):
$1 / $2 per 1M tokens in / out; the mock upstream reports 11 prompt and 3 completion tokens, so a chat
completion costs 17,000 nano-USD.
"""

from __future__ import annotations

import csv
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest
from browser import (
    CHROMIUM_ARGS,
    PASSWORD,
    VIEWPORT,
    browser_required,
    chromium_path,
    cli,
    join,
    key_ids,
    new_email,
    off_loop,
    screenshots_dir,
    set_password,
    sign_in,
    with_management,
)
from conftest import stop_gateway
from dashboard_client import dollars
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from stacks import Stack, poll, running_stack
from upstream import MockUpstream

from bastion.api.asgi import new_request_id
from bastion.db.store import UsageRow
from bastion.management import Management

if chromium_path() is None and not browser_required():
    pytest.skip(
        "no Chromium: install Debian's (apt-get install chromium), or set BASTION_REQUIRE_BROWSER=1 to fail",
        allow_module_level=True,
    )

USD = 10**9
ONE_CHAT = 17_000
HELLO = [{"role": "user", "content": "hi"}]
XSS = "<script>alert(1)</script>"

Contexts = Callable[..., BrowserContext]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module; each test opens fresh contexts in it."""
    path = chromium_path()
    if path is None:
        pytest.fail("BASTION_REQUIRE_BROWSER is set but there is no Chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module", params=["embedded", "shared"])
def stack(
    browser: Browser,
    request: pytest.FixtureRequest,
    upstream: MockUpstream,
    blackhole_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """conftest's stack, built and dropped off Playwright's event loop (its store calls use asyncio.run)."""
    steps = running_stack(request.param, upstream, blackhole_port, tmp_path_factory.mktemp(request.param))
    yield off_loop(next, steps)
    off_loop(next, steps, None)


@pytest.fixture
def contexts(browser: Browser, stack: Stack) -> Iterator[Contexts]:
    """Fresh browser contexts on the stack's gateway (or another's: base_url=...), closed after the test."""
    made: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        context = browser.new_context(**({"base_url": stack.gateway.root, "viewport": VIEWPORT} | options))
        context.set_default_timeout(10_000)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


# ------------------------------------------------------------------------------------------- helpers
def new_account(stack: Stack, usd_nano: int = USD) -> tuple[str, str, str]:
    """(account id, key id, key): a fresh account with this credit and one key."""
    return off_loop(stack.account, usd_nano)


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


def create_key(page: Page, account_id: str, name: str) -> tuple[str, str]:
    """Create a key through the keys page's form; (key id, the key as shown once)."""
    page.goto(f"/dashboard/a/{account_id}/keys")
    page.get_by_text("+ Create a key").click()
    page.fill("#k-name", name)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Create key").click()
    assert navigation.value is not None and navigation.value.status == 201
    created = page.locator("[data-created-key]")
    expect(created).to_be_visible()
    key_id = created.get_attribute("data-created-key")
    assert key_id
    plaintext = page.locator("code#new-key").inner_text().strip()
    assert plaintext.startswith("qbt_")
    return key_id, plaintext


def chat(client: openai.OpenAI, model: str = "m-echo") -> Any:
    return client.chat.completions.with_raw_response.create(model=model, messages=HELLO, max_tokens=10)


def nano(usd: str) -> int:
    """'0.000017' -> 17000, exactly."""
    amount = Decimal(usd) * USD
    assert amount == amount.to_integral_value(), usd
    return int(amount)


def figure(page: Page, name: str) -> str:
    """A card's value; a money figure's exact amount (its title: the text shown may be rounded)."""
    value = page.locator(f'[data-figure="{name}"] .value')
    money = value.locator(".money")
    return (money.get_attribute("title") or "") if money.count() else value.inner_text().strip()


def visit(page: Page, path: str) -> None:
    answer = page.goto(path)
    assert answer is not None and answer.status == 200, (path, answer and answer.status)


def shoot(page: Page, name: str) -> None:
    """The page fits the viewport's width (wide tables scroll inside their panel); captured as NAME.png
    when BASTION_SCREENSHOTS names a directory."""
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"], name
    where = screenshots_dir()
    if where is not None:
        page.screenshot(path=str(where / f"{name}.png"), full_page=True)


def test_dollars_is_the_dashboards_format() -> None:
    assert dollars(17_000) == "$0.000017"
    assert dollars(1_234_500_000_000) == "$1,234.50"
    assert dollars(0) == "$0.00" and dollars(-5 * 10**8) == "-$0.50"


# ------------------------------------------------------------------------------------------- 1 invite
def test_an_invite_link_sets_a_password_and_lands_on_the_users_home(stack: Stack, contexts: Contexts) -> None:
    account_id, _, _ = new_account(stack)
    owner_email, operator_email = new_email("owner"), new_email(None)
    invited = cli(stack, "users", "invite", owner_email, "--account", account_id, "--role", "owner")
    link = invited["link"]
    assert re.fullmatch(re.escape(stack.gateway.root) + r"/dashboard/invite/[\w-]{40,}", link), link
    assert (invited["status"], invited["role"], invited["account_id"]) == ("invited", "owner", account_id)

    page = contexts().new_page()
    page.goto(link)
    expect(page.locator("h1")).to_have_text("Set your password")
    expect(page.locator(".lead")).to_have_text(f"{owner_email} · owner")
    arrived = set_password(page, link)
    assert arrived is not None and arrived.status == 200
    assert page.url == f"{stack.gateway.root}/dashboard/a/{account_id}/"
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator(".sidebar .who")).to_contain_text(owner_email)
    session = next(c for c in page.context.cookies() if c["name"] == "bastion_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax" and session["path"] == "/dashboard"
    # The link is spent.
    again = page.goto(link)
    assert again is not None and again.status == 404
    expect(page.locator("h1")).to_have_text("Link expired")

    invited = cli(stack, "users", "invite", operator_email, "--operator")
    operator = contexts().new_page()
    set_password(operator, invited["link"])
    assert operator.url == f"{stack.gateway.root}/dashboard/accounts"
    expect(operator.locator("h1")).to_have_text("Accounts")
    expect(operator.locator(f'tr[data-account-id="{account_id}"]')).to_have_count(1)

    users = {u.email: u for u in with_management(stack, lambda management: management.list_users())}
    assert (users[owner_email].status, users[owner_email].role) == ("active", "owner")
    assert (users[operator_email].status, users[operator_email].operator) == ("active", True)


# --------------------------------------------------------------------------------- 2 create, 3 revoke
def test_a_key_created_in_the_browser_works_at_once_with_the_openai_sdk(
    stack: Stack, contexts: Contexts
) -> None:
    account_id, _, _ = new_account(stack)
    owner = join(stack, contexts(permissions=["clipboard-read", "clipboard-write"]), account_id, "owner")
    page = owner.page
    key_id, plaintext = create_key(page, account_id, "production")
    expect(page.locator("[data-created-key] h2")).to_have_text("Key “production” created")
    copy = page.locator('[data-created-key] button[data-copy="new-key"]')
    expect(copy).to_have_text("Copy")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == plaintext

    answer = chat(stack.client(plaintext))
    assert answer.http_response.status_code == 200
    assert answer.parse().choices[0].message.content
    (record,) = off_loop(stack.wait_records, account_id, 1)
    assert (record.key_id, record.status, record.cost_nano) == (key_id, 200, ONE_CHAT)
    assert answer.headers["x-bastion-cost-usd"] == "0.000017"

    # Listed by its prefix; the key itself is never shown again.
    page.goto(f"/dashboard/a/{account_id}/keys")
    row = page.locator(f'tr[data-key-id="{key_id}"]')
    expect(row.locator(".key-name")).to_have_text("production")
    shown = row.locator(".key-prefix").inner_text().strip().rstrip("…")
    assert len(shown) >= 8 and plaintext.startswith(shown)
    assert plaintext not in page.content()
    expect(row).to_contain_text("active")

    async def stored(management: Management) -> Any:
        return next(k for k in await management.list_keys(account_id) if k.id == key_id)

    key = with_management(stack, stored)
    assert (key.name, key.created_by, key.revoked_at) == ("production", owner.email, None)


def test_a_key_revoked_in_the_browser_is_refused_at_its_next_request(
    stack: Stack, contexts: Contexts
) -> None:
    account_id, other_key_id, other_key = new_account(stack)
    page = join(stack, contexts(), account_id, "developer").page
    key_id, plaintext = create_key(page, account_id, "to-revoke")
    client = stack.client(plaintext)
    assert chat(client).http_response.status_code == 200

    page.goto(f"/dashboard/a/{account_id}/keys")
    page.locator(f'tr[data-key-id="{key_id}"]').get_by_role("link", name="Revoke").click()
    assert path_of(page) == f"/dashboard/a/{account_id}/keys/{key_id}/revoke"
    expect(page.locator("h1")).to_have_text("Revoke key to-revoke?")
    assert key_id not in revoked_keys(stack, account_id)  # asking is not revoking
    page.get_by_role("button", name="Revoke the key").click()
    page.wait_for_url(f"**/dashboard/a/{account_id}/keys?revoked={key_id}")
    expect(page.get_by_role("status")).to_have_text("The key was revoked.")
    row = page.locator(f'tr[data-key-id="{key_id}"]')
    expect(row.locator(".badge")).to_have_text("revoked")
    expect(row.get_by_role("link")).to_have_count(0)  # no Edit / Revoke for a revoked key
    assert key_id in revoked_keys(stack, account_id)

    with pytest.raises(openai.AuthenticationError) as refused:
        chat(client)
    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key"
    # The account's other key still works; the ledger (written in order) has no record of the refusal.
    assert chat(stack.client(other_key)).http_response.status_code == 200
    records = off_loop(stack.wait_records, account_id, 2)
    assert sorted((r.key_id, r.status) for r in records) == sorted([(key_id, 200), (other_key_id, 200)])


def revoked_keys(stack: Stack, account_id: str) -> set[str]:
    async def read(management: Management) -> set[str]:
        return {k.id for k in await management.list_keys(account_id) if k.revoked_at is not None}

    return set(with_management(stack, read))


# -------------------------------------------------------------------------------------- 4 overview
def test_the_overview_shows_exactly_the_usage_the_ledger_recorded(stack: Stack, contexts: Contexts) -> None:
    account_id, key_id, key = new_account(stack)
    client = stack.client(key)
    costs: list[int] = []
    for model in ["m-echo", "m-echo", "m-echo", "mock-model", "mock-model", "m-reasoning"]:
        answer = chat(client, model)
        assert answer.http_response.status_code == 200
        costs.append(nano(answer.headers["x-bastion-cost-usd"]))
    with pytest.raises(openai.InternalServerError):
        chat(client, "m-error500")
    rows = off_loop(stack.wait_records, account_id, 7)
    total = sum(r.cost_nano for r in rows)
    assert total == sum(costs) and costs[:3] == [ONE_CHAT] * 3
    assert [r.status >= 400 for r in rows].count(True) == 1
    by_model: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        by_model[row.model][0] += row.cost_nano
        by_model[row.model][1] += 1
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in rows)
    today = datetime.now(UTC).date().isoformat()

    page = join(stack, contexts(), account_id, "viewer").page
    expect(page.locator('[data-figure="spend-today"] .money')).to_have_attribute("title", dollars(total))
    assert figure(page, "spend-7d") == figure(page, "spend-30d") == dollars(total)
    assert figure(page, "requests") == "7"
    expect(page.locator('[data-figure="requests"] .sub')).to_have_text("1 failed")
    expect(page.locator('[data-figure="spend-today"] .sub')).to_have_text("7 requests")
    assert figure(page, "tokens") == f"{tokens:,}"
    assert figure(page, "balance") == figure(page, "available") == dollars(USD - total)
    assert figure(page, "reserved") == "$0.00"

    segments = page.locator("svg[data-chart] rect.seg")
    charted: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for n in range(segments.count()):
        segment = segments.nth(n)
        assert segment.get_attribute("data-day") == today
        model = segment.get_attribute("data-model") or ""
        charted[model][0] += int(segment.get_attribute("data-cost-nano") or "x")
        charted[model][1] += int(segment.get_attribute("data-requests") or "x")
    assert dict(charted) == dict(by_model)

    top_models = page.locator('table[data-table="top-models"] tbody tr')
    listed = {
        top_models.nth(n).locator("td").first.inner_text(): int(
            top_models.nth(n).locator("[data-cost-nano]").get_attribute("data-cost-nano") or "x"
        )
        for n in range(top_models.count())
    }
    assert listed == {model: figures[0] for model, figures in by_model.items()}
    top_key = page.locator('table[data-table="top-keys"] tbody tr')
    expect(top_key).to_have_count(1)
    assert top_key.locator("[data-cost-nano]").get_attribute("data-cost-nano") == str(total)
    expect(top_key.locator("a")).to_have_attribute("href", f"/dashboard/a/{account_id}/usage?key={key_id}")


# ------------------------------------------------------------------------------------------ 5 CSV
def test_the_csv_export_is_the_ledger(stack: Stack, contexts: Contexts) -> None:
    account_id, _, key = new_account(stack)
    client = stack.client(key)
    for model in ["m-echo", "m-no-usage", "mock-model"]:
        assert chat(client, model).http_response.status_code == 200
    with pytest.raises(openai.BadRequestError):
        chat(client, "m-bad400")
    ledger = {r.request_id: r for r in off_loop(stack.wait_records, account_id, 4)}
    assert any(r.estimated for r in ledger.values()) and any(r.status == 400 for r in ledger.values())

    page = join(stack, contexts(), account_id, "viewer").page
    page.goto(f"/dashboard/a/{account_id}/usage")
    rows = page.locator('table[data-table="usage"] tbody tr[data-request-id]')
    expect(rows).to_have_count(4)
    shown = {
        rows.nth(n).get_attribute("data-request-id"): int(
            rows.nth(n).locator("[data-cost-nano]").get_attribute("data-cost-nano") or "x"
        )
        for n in range(4)
    }
    assert shown == {rid: r.cost_nano for rid, r in ledger.items()}

    with page.expect_download() as started:
        page.get_by_role("link", name="Export CSV").click()
    download = started.value
    assert re.fullmatch(rf"usage-{account_id}-\d{{8}}T\d{{6}}Z\.csv", download.suggested_filename)
    with Path(download.path()).open(newline="", encoding="utf-8") as file:
        exported = list(csv.DictReader(file))
    assert len(exported) == len(ledger) == 4
    times = [row["created_at"] for row in exported]
    assert times == sorted(times, reverse=True)  # newest first, as the log
    for line in exported:
        record = ledger[line["request_id"]]
        assert line["account_id"] == account_id and line["key_id"] == record.key_id
        assert (line["model"], line["endpoint"], int(line["status"])) == (
            record.model,
            record.endpoint,
            record.status,
        )
        assert int(line["cost_nano"]) == record.cost_nano
        assert nano(line["cost_usd"]) == record.cost_nano
        assert (int(line["prompt_tokens"]), int(line["completion_tokens"])) == (
            record.prompt_tokens,
            record.completion_tokens,
        )
        assert line["estimated"] == ("true" if record.estimated else "false")
        assert line["created_at"] == record.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------ 6 roles and CSRF
def test_a_viewer_cannot_create_a_key_and_a_post_without_the_token_changes_nothing(
    stack: Stack, contexts: Contexts
) -> None:
    account_id, existing_key, _ = new_account(stack)
    keys_url = f"/dashboard/a/{account_id}/keys"
    before = key_ids(stack, account_id)
    assert before == {existing_key}

    viewer = join(stack, contexts(), account_id, "viewer").page
    viewer.goto(keys_url)
    expect(viewer.locator(f'tr[data-key-id="{existing_key}"]')).to_have_count(1)  # a viewer reads
    expect(viewer.get_by_text("Create a key")).to_have_count(0)
    expect(viewer.locator('form[action$="/keys"]')).to_have_count(0)
    expect(viewer.get_by_role("link", name="Revoke")).to_have_count(0)
    token = viewer.locator('input[name="csrf_token"]').first.input_value()  # the sign-out form's
    assert len(token) > 20

    for form in ({"csrf_token": token, "name": "forged"}, {"name": "forged"}):
        refused = viewer.request.post(keys_url, form=form, headers={"accept": "text/html"})
        assert refused.status == 403, form
        assert "Nothing was changed" in refused.text()
    fetched = viewer.evaluate(
        """async ([url, token]) => {
            const answer = await fetch(url, {method: "POST", body: new URLSearchParams({csrf_token: token,
                name: "forged"})});
            return answer.status;
        }""",
        [keys_url, token],
    )
    assert fetched == 403
    revoke = viewer.request.post(f"{keys_url}/{existing_key}/revoke", form={"csrf_token": token})
    assert revoke.status == 403
    assert key_ids(stack, account_id) == before and revoked_keys(stack, account_id) == set()

    owner = join(stack, contexts(), account_id, "owner").page
    owner.goto(keys_url)
    owner_token = owner.locator('form[action$="/keys"] input[name="csrf_token"]').input_value()
    for form, headers in [
        ({"name": "forged"}, {}),  # no token
        ({"csrf_token": token, "name": "forged"}, {}),  # another session's token
        ({"csrf_token": owner_token, "name": "forged"}, {"origin": "http://attacker.example"}),
    ]:
        refused = owner.request.post(keys_url, form=form, headers=headers)
        assert refused.status == 403, (form, headers)
        assert "Nothing was changed" in refused.text()
    revoke = owner.request.post(f"{keys_url}/{existing_key}/revoke", form={})
    assert revoke.status == 403
    assert key_ids(stack, account_id) == before and revoked_keys(stack, account_id) == set()

    # The same POST with the owner's token does create a key: the refusals above were the token's doing.
    made = owner.request.post(keys_url, form={"csrf_token": owner_token, "name": "real"})
    assert made.status == 201
    assert len(key_ids(stack, account_id) - before) == 1


# ---------------------------------------------------------------------------------------- 7 escaping
def test_a_key_named_like_a_script_is_shown_as_text(stack: Stack, contexts: Contexts) -> None:
    account_id, _, _ = new_account(stack)
    page = join(stack, contexts(), account_id, "owner").page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    key_id, plaintext = create_key(page, account_id, XSS)
    assert chat(stack.client(plaintext)).http_response.status_code == 200
    off_loop(stack.wait_records, account_id, 1)

    def shows_text_only(where: str, name: str) -> None:
        """The key's name is the text of `name` (no element in it); the only script is the dashboard's."""
        shown = page.locator(name).first
        expect(shown).to_have_text(XSS)
        assert shown.evaluate("node => node.childElementCount") == 0, where
        scripts = page.eval_on_selector_all("script", "nodes => nodes.map(n => n.getAttribute('src'))")
        assert len(scripts) == 1 and "/dashboard/static/dashboard.js?v=" in scripts[0], (where, scripts)
        assert page.locator("body script").count() == 0, where
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.content(), where

    expect(page.locator("[data-created-key] h2")).to_have_text(f"Key “{XSS}” created")
    shows_text_only("created", f'tr[data-key-id="{key_id}"] .key-name')
    page.goto(f"/dashboard/a/{account_id}/keys")
    shows_text_only("keys", f'table[data-table="keys"] tr[data-key-id="{key_id}"] .key-name')
    page.goto(f"/dashboard/a/{account_id}/")
    shows_text_only("overview", 'table[data-table="top-keys"] .key-name')
    page.goto(f"/dashboard/a/{account_id}/keys/{key_id}")
    expect(page.locator("#k-name")).to_have_value(XSS)
    assert page.title() == f"Edit {XSS} · Bastion"
    shows_text_only("edit", "h1 .key-name")
    page.goto(f"/dashboard/a/{account_id}/keys/{key_id}/revoke")
    assert page.title() == f"Revoke {XSS} · Bastion"
    shows_text_only("revoke", "h1 .key-name")
    page.goto(f"/dashboard/a/{account_id}/usage")
    expect(page.locator('table[data-table="usage"] td.key')).to_contain_text(XSS)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.content()
    assert page.locator("body script").count() == 0
    assert dialogs == []


# -------------------------------------------------------------------------------------- 8 throttling
def test_sign_in_is_throttled_after_the_limit_of_wrong_passwords(stack: Stack, contexts: Contexts) -> None:
    throttled = stack.start({"BASTION_SIGNIN_FAILURES_PER_EMAIL": "3"})
    try:
        account_id, _, _ = new_account(stack)
        owner = join(stack, contexts(), account_id, "owner")
        other = join(stack, contexts(), account_id, "developer")
        page = contexts(base_url=throttled.root).new_page()
        page.goto("/dashboard/signin")
        for attempt in range(3):
            answer = sign_in(page, owner.email, f"wrong password {attempt}")
            assert answer.status == 401
            expect(page.get_by_role("alert")).to_have_text("Incorrect email or password.")
        answer = sign_in(page, owner.email, PASSWORD)  # the right password, too late
        assert answer.status == 429
        assert 1 <= int(answer.headers["retry-after"]) <= 900
        expect(page.get_by_role("alert")).to_contain_text(
            "Too many failed sign-ins. Try again in 15 minutes."
        )
        assert path_of(page) == "/dashboard/signin"
        assert [c for c in page.context.cookies() if c["name"] == "bastion_session"] == []
        page.goto(f"/dashboard/a/{account_id}/")
        assert path_of(page) == "/dashboard/signin"

        # Per email: another user signs in from the same address.
        answer = sign_in(page, other.email, PASSWORD)
        assert answer.status == 303
        assert path_of(page) == f"/dashboard/a/{account_id}/"

        async def failures(management: Management) -> list[str]:
            entries = await management.audit(account_id)
            return [e.target or "" for e in entries if e.action == "signin.failed"]

        assert with_management(stack, failures) == [owner.email] * 3
    finally:
        stack.gateways.remove(throttled)
        stop_gateway(throttled)


# ----------------------------------------------------------------------------------------- 9 sessions
def test_signing_out_ends_the_session(stack: Stack, contexts: Contexts) -> None:
    account_id, _, _ = new_account(stack)
    owner = join(stack, contexts(), account_id, "owner")
    page, old = owner.page, owner.session_cookie()
    overview = f"{stack.gateway.root}/dashboard/a/{account_id}/"
    html = {"accept": "text/html"}
    live = httpx.get(overview, cookies={"bastion_session": old}, headers=html, follow_redirects=False)
    assert live.status_code == 200 and "Overview" in live.text  # the cookie alone is the session

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/dashboard/signin")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.go_back()  # the overview again, from the gateway (pages are no-store): signed out
    assert path_of(page) == "/dashboard/signin"
    assert [c for c in page.context.cookies() if c["name"] == "bastion_session"] == []
    page.goto(overview)
    assert path_of(page) == "/dashboard/signin"
    assert parse_qs(urlsplit(page.url).query) == {"next": [f"/dashboard/a/{account_id}/"]}

    ended = httpx.get(overview, cookies={"bastion_session": old}, headers=html, follow_redirects=False)
    assert ended.status_code == 303
    assert ended.headers["location"].startswith("/dashboard/signin")

    # Signing in again goes back where the user was going.
    answer = sign_in(page, owner.email, PASSWORD)
    assert answer.status == 303 and page.url == overview


def test_removing_a_user_ends_their_sessions(stack: Stack, contexts: Contexts) -> None:
    account_id, _, _ = new_account(stack)
    owner = join(stack, contexts(), account_id, "owner")
    developer = join(stack, contexts(), account_id, "developer")
    viewer = join(stack, contexts(), account_id, "viewer")
    members = f"/dashboard/a/{account_id}/members"
    page = owner.page
    page.goto(members)
    row = page.locator('table[data-table="members"] tr', has_text=developer.email)
    asked: list[str] = []

    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    row.get_by_role("button", name="Remove").click()
    assert asked == [f"Remove {developer.email}? Their sessions end at once."]
    assert path_of(page) == members  # dismissed: nothing was sent
    developer.page.reload()
    assert path_of(developer.page) == f"/dashboard/a/{account_id}/"

    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    row.get_by_role("button", name="Remove").click()
    page.wait_for_url(f"**{members}?removed=1")
    expect(page.get_by_role("status")).to_have_text("The member was removed; their sessions are ended.")
    expect(page.locator('table[data-table="members"] tr', has_text=developer.email)).to_have_count(0)
    developer.page.reload()
    assert path_of(developer.page) == "/dashboard/signin"

    old = viewer.session_cookie()
    removed = cli(stack, "users", "remove", viewer.email)
    assert removed["email"] == viewer.email
    viewer.page.goto(f"/dashboard/a/{account_id}/usage")
    assert path_of(viewer.page) == "/dashboard/signin"
    ended = httpx.get(
        f"{stack.gateway.root}/dashboard/a/{account_id}/",
        cookies={"bastion_session": old},
        headers={"accept": "text/html"},
        follow_redirects=False,
    )
    assert ended.status_code == 303
    page.reload()
    assert path_of(page) == members  # the owner is still signed in
    members_left = with_management(stack, lambda management: management.list_users(account_id))
    assert [u.email for u in members_left] == [owner.email]


# -------------------------------------------------------------------------- 10 every page, screenshots
def seed_history(stack: Stack, account_id: str, keys: list[str]) -> tuple[int, int]:
    """Two weeks of earlier usage, written as the ledger writer writes it (records, charge, rollups), so
    the overview's chart has days to show; (how many records, their total cost)."""
    chooser = random.Random(7)
    today = datetime.combine(datetime.now(UTC).date(), time(0), UTC)
    rows = []
    for days_ago in range(13, 0, -1):
        for _ in range(chooser.randint(6, 24)):
            model = chooser.choice(["m-echo", "m-echo", "m-reasoning", "mock-model", "m-think"])
            prompt, completion = chooser.randint(200, 3000), chooser.randint(20, 900)
            status = chooser.choice([200] * 15 + [429, 502])
            if status != 200:
                prompt = completion = 0
            rows.append(
                UsageRow(
                    request_id=new_request_id(),
                    account_id=account_id,
                    key_id=chooser.choice(keys),
                    model=model,
                    endpoint="chat",
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    cost_nano=prompt * 1000 + completion * 2000,
                    status=status,
                    latency_ms=chooser.randint(180, 2400),
                    estimated=False,
                    created_at=today
                    - timedelta(days=days_ago)
                    + timedelta(seconds=chooser.randint(8 * 3600, 20 * 3600)),
                )
            )

    async def write(management: Management) -> int:
        return await management.store.record_usage(rows)

    assert with_management(stack, write) == len(rows)
    return len(rows), sum(r.cost_nano for r in rows)


def test_every_page_renders_for_an_operator(stack: Stack, contexts: Contexts) -> None:
    async def open_account(management: Management) -> tuple[str, list[tuple[str, str]]]:
        account = await management.create_account("Acme Research", 0, "tests")
        keys = []
        limits: dict[str, dict[str, Any]] = {  # what the keys page's screenshot shows
            "production": {
                "rpm": 600,
                "budget_nano": 50 * USD,
                "budget_period": "monthly",
                "max_parallel": 8,
            },
            "staging": {"tpm": 200_000, "budget_nano": 5 * USD, "budget_period": "daily"},
            "notebook": {"expires_at": datetime.now(UTC) + timedelta(days=30)},
        }
        for name, settings in limits.items():
            key, plaintext = await management.create_key(account.id, name, actor="tests", **settings)
            keys.append((key.id, plaintext))
        return account.id, keys

    account_id, keys = with_management(stack, open_account)
    # The history is written before the account's first credit: the gateway loads its credit state (from
    # the rollups) at that credit or at its first request, both after the history.
    earlier, seeded = seed_history(stack, account_id, [k for k, _ in keys])
    with_management(stack, lambda management: management.add_credits(account_id, 250 * USD, "PO 7", "tests"))
    traffic = Counter[str]()
    for n, model in enumerate(["m-echo"] * 6 + ["m-reasoning"] * 3 + ["mock-model"] * 4 + ["m-think"] * 2):
        assert chat(stack.client(keys[n % 3][1]), model).http_response.status_code == 200
        traffic[model] += 1
    for model, error in [("m-error500", openai.InternalServerError), ("m-bad400", openai.BadRequestError)]:
        with pytest.raises(error):
            chat(stack.client(keys[0][1]), model)
    # Refused before admission: a model that does not exist, a body that is not a chat (no usage record).
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            chat(stack.client(keys[1][1]), "gpt-5")
    with pytest.raises(openai.BadRequestError):
        stack.client(keys[2][1]).chat.completions.create(model="m-echo", messages="hi")  # type: ignore[arg-type]
    records = off_loop(stack.wait_records, account_id, earlier + sum(traffic.values()) + 2)
    today = datetime.now(UTC).date()

    def refusals_written() -> bool:
        counted = stack.with_store(lambda store: store.refusals.summary(account_id, today, today))
        return bool(counted == {"model_not_found": 3, "invalid_request": 1})

    assert off_loop(poll, refusals_written, 10), "the refusals did not reach the database"
    spent_today = sum(r.cost_nano for r in records if r.created_at.date() == datetime.now(UTC).date())

    signin = contexts().new_page()
    visit(signin, "/dashboard/signin")
    expect(signin.locator("h1")).to_have_text("Sign in")
    shoot(signin, "signin")

    operator = join(stack, contexts(), None)
    page = operator.page
    a = f"/dashboard/a/{account_id}"

    visit(page, f"{a}/")
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator('[data-figure="spend-today"] .money')).to_have_attribute(
        "title", dollars(spent_today)
    )
    days = set(page.eval_on_selector_all("rect.seg", "nodes => nodes.map(n => n.dataset.day)"))
    assert len(days) == 14 and page.locator("svg[data-chart] .empty-label").count() == 0
    assert figure(page, "balance") == dollars(250 * USD - seeded - spent_today)
    expect(page.locator('[data-refused-code="model_not_found"]')).to_have_attribute("data-count", "3")
    expect(page.locator('[data-refused-code="invalid_request"]')).to_have_attribute("data-count", "1")
    shoot(page, "overview")

    visit(page, f"{a}/usage")
    expect(page.locator("h1")).to_have_text("Usage")
    expect(page.locator('table[data-table="usage"] tr[data-request-id]')).to_have_count(50)
    expect(page.get_by_role("link", name="Older →")).to_have_count(1)
    shoot(page, "usage")
    succeeded = page.locator('table[data-table="usage"] tr[data-request-id]', has=page.locator(".badge.ok"))
    request_id = succeeded.first.get_attribute("data-request-id") or "x"
    cost = succeeded.first.locator("[data-cost-nano]").get_attribute("data-cost-nano") or "x"
    succeeded.first.get_by_role("link").click()
    assert path_of(page) == f"{a}/usage/{request_id}"
    expect(page.locator("dl[data-request]")).to_have_attribute("data-request", request_id)
    expect(page.locator("dl[data-request] [data-cost-nano]")).to_have_attribute("data-cost-nano", cost)
    assert int(cost) == next(r.cost_nano for r in records if r.request_id == request_id) > 0
    shoot(page, "request")

    create_key(page, account_id, "ci-pipeline")
    shoot(page, "keys")

    visit(page, f"{a}/models")
    expect(page.locator("h1")).to_have_text("Models and rates")
    expect(page.locator('tr[data-model="m-echo"] [data-cost-nano]')).to_have_text("$0.002")
    shoot(page, "models")

    visit(page, f"{a}/credit")
    before = figure(page, "balance")
    page.select_option("#c-kind", "topup")
    page.fill("#c-usd", "25")
    page.fill("#c-note", "invoice 1042")
    page.get_by_role("button", name="Record").click()
    page.wait_for_url(f"**{a}/credit?added=1")
    expect(page.locator('[data-figure="balance"] .money')).to_have_attribute(
        "title", dollars(250 * USD - seeded - spent_today + 25 * USD)
    )
    assert before == dollars(250 * USD - seeded - spent_today)
    expect(page.locator('table[data-table="credit"] tbody tr').first).to_contain_text("invoice 1042")
    shoot(page, "credit")

    visit(page, f"{a}/members")
    page.fill("#m-email", "dana@acme.example")
    page.select_option("#m-role", "developer")
    page.get_by_role("button", name="Invite").click()
    link = page.locator("code#invite-link").inner_text().strip()
    assert re.fullmatch(re.escape(stack.gateway.root) + r"/dashboard/invite/[\w-]{40,}", link), link
    expect(page.locator('table[data-table="members"]')).to_contain_text("dana@acme.example")
    shoot(page, "members")

    visit(page, "/dashboard/accounts")
    expect(page.locator(f'tr[data-account-id="{account_id}"]')).to_contain_text("Acme Research")
    shoot(page, "accounts")

    visit(page, "/dashboard/users")
    expect(page.locator('table[data-table="users"]')).to_contain_text(operator.email)
    shoot(page, "users")

    visit(page, "/dashboard/gateway")
    expect(page.locator('tr[data-model="m-echo"] [data-breaker]')).to_have_text("closed")
    shoot(page, "gateway")

    visit(page, "/dashboard/audit")
    for action in ("key.create", "credit.topup", "user.invite", "signin"):
        assert page.locator(f'tr[data-action="{action}"]').count() >= 1, action
    shoot(page, "audit")
