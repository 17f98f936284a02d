"""The dashboard over HTTP, on both stacks: what every answer carries, sign-in and its throttle, sessions,
CSRF and roles, the one-time links, the audit log, the request log's pages, and the switch that turns it
all off. (tests/test_dashboard_browser.py drives the same pages in a real Chromium.)"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import secrets
from datetime import timedelta

import httpx
import openai
import pytest
from conftest import Gateway, stop_gateway
from dashboard_client import PASSWORD, Person, accept, dollars, form_token, invite, person, sign_in
from sqlalchemy import text
from stacks import Stack, poll
from upstream import MockUpstream

from bastion.dashboard import formats
from bastion.dashboard.usage import csv_line
from bastion.db.models import utcnow
from bastion.db.views import UsageRow
from bastion.money import decimal_usd

USD = 10**9
HELLO = [{"role": "user", "content": "hi"}]
EXACT = r'<span class="money" title="([^"]+)">'  # a money figure: its exact amount (the text is compact)


def _ids(stack: Stack) -> tuple[str, str, str]:
    return stack.account(USD, rpm=1_000_000, tpm=100_000_000)


def _keys(stack: Stack, account_id: str) -> list[str]:
    async def read(store: object) -> list[str]:
        return [k.name for k in await store.list_keys(account_id)]  # type: ignore[attr-defined]

    return list(stack.with_store(read))


def _stop(stack: Stack, gateway: Gateway) -> None:
    """A gateway a test started beside the stack's own."""
    stack.gateways.remove(gateway)
    stop_gateway(gateway)


def _sql(stack: Stack, statement: str, **params: object) -> None:
    async def run(store: object) -> None:
        async with store.engine.begin() as connection:  # type: ignore[attr-defined]
            await connection.execute(text(statement), params)

    stack.with_store(run)


# ----------------------------------------------------------------------------- headers


def test_every_dashboard_answer_carries_the_security_headers(stack: Stack) -> None:
    account_id, _, _ = _ids(stack)
    owner = person(stack, "--account", account_id, "--role", "owner")
    try:
        answers = [
            httpx.get(stack.gateway.root + "/dashboard/signin"),
            owner.page(f"/dashboard/a/{account_id}/"),
            owner.page(f"/dashboard/a/{account_id}/keys"),
            owner.page("/dashboard/no-such-page"),
            owner.page("/dashboard/accounts"),  # an owner is not an operator: 404
            owner.http.get("/dashboard/static/dashboard.css"),
            owner.post(f"/dashboard/a/{account_id}/keys", {"name": "x"}, csrf=False),  # refused
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 404, 404, 200, 403]
        for answer in answers:
            csp = answer.headers["content-security-policy"]
            assert (
                "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
            )
            assert "style-src 'self'" in csp and "default-src 'none'" in csp
            assert answer.headers["referrer-policy"] == "same-origin"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["x-frame-options"] == "DENY"
        assert [a.headers["cache-control"] for a in answers[:2]] == ["no-store", "no-store"]
        assert answers[5].headers["cache-control"].startswith("public")
        # No inline script anywhere: every <script> names a file of Bastion's own.
        for answer in answers[:4]:
            assert not re.search(r"<script(?![^>]*\bsrc=\"/dashboard/static/)", answer.text)
            assert " style=" not in answer.text and " on" + "click=" not in answer.text
    finally:
        owner.close()


def test_cookies_are_httponly_lax_and_secure_behind_an_https_public_url(stack: Stack) -> None:
    plain = httpx.get(stack.gateway.root + "/dashboard/signin").headers["set-cookie"]
    assert "HttpOnly" in plain and "SameSite=Strict" in plain and "Secure" not in plain
    account_id, _, _ = _ids(stack)
    gateway = stack.start({"BASTION_PUBLIC_URL": "https://bastion.example.com"})
    try:
        email = "secure-owner@example.com"
        _, token = invite(stack, email, "--account", account_id, "--role", "owner")
        with httpx.Client(base_url=gateway.root) as http:
            # The form's cookie is Secure now, so a client on plain http does not send it back by itself.
            page = http.get(f"/dashboard/invite/{token}")
            assert "Secure" in page.headers["set-cookie"]
            sent = re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            signed = http.post(
                f"/dashboard/invite/{token}",
                data={"form_token": sent, "password": PASSWORD, "confirm": PASSWORD},
                headers={"Cookie": f"bastion_form={sent}"},
            )
            assert signed.status_code == 303, signed.text
            cookies = signed.headers.get_list("set-cookie")
            session = next(c for c in cookies if c.startswith("bastion_session="))
            assert "HttpOnly" in session and "SameSite=Lax" in session and "Secure" in session
            assert "Path=/dashboard" in session and "Max-Age" not in session
            assert signed.headers["strict-transport-security"].startswith("max-age=")
    finally:
        _stop(stack, gateway)


def test_the_root_leads_to_the_dashboard_and_api_clients_get_envelopes(stack: Stack) -> None:
    root = httpx.get(stack.gateway.root + "/")
    assert root.status_code == 307 and root.headers["location"] == "/dashboard/"
    home = httpx.get(stack.gateway.root + "/dashboard/")
    assert home.status_code == 303 and home.headers["location"] == "/dashboard/signin"
    protected = httpx.get(stack.gateway.root + "/dashboard/accounts?x=1")
    assert protected.status_code == 303
    assert protected.headers["location"] == "/dashboard/signin?next=/dashboard/accounts%3Fx%3D1"
    wrong = httpx.post(stack.gateway.root + "/")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "GET"
    # A client that does not ask for HTML gets OpenAI's envelope for a missing page, as everywhere else.
    missing = httpx.get(stack.gateway.root + "/dashboard/nope", headers={"Accept": "application/json"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_the_dashboard_can_be_turned_off(stack: Stack) -> None:
    gateway = stack.start({"BASTION_DASHBOARD": "false"})
    try:
        for path in ("/", "/dashboard/", "/dashboard/signin", "/dashboard/static/dashboard.css"):
            answer = httpx.get(gateway.root + path)
            assert answer.status_code == 404, path
            assert answer.json()["error"]["code"] == "not_found"
        _, _, key = _ids(stack)
        assert stack.client(key, gateway).chat.completions.create(model="m-echo", messages=HELLO).choices
    finally:
        _stop(stack, gateway)


# ----------------------------------------------------------------------------- sign-in


def test_sign_in_answers_the_same_for_an_unknown_email_and_a_wrong_password(stack: Stack) -> None:
    account_id, _, _ = _ids(stack)
    owner = person(stack, "--account", account_id, "--role", "viewer")
    owner.close()
    answers = []
    for email in (owner.email, f"nobody-{owner.email}"):
        with httpx.Client(base_url=stack.gateway.root) as http:
            answers.append(sign_in(http, email, "not the password at all"))
    assert [a.status_code for a in answers] == [401, 401]
    scrub = [re.sub(r'value="[^"]*"', "", a.text) for a in answers]
    assert scrub[0] == scrub[1] and "Incorrect email or password." in scrub[0]
    assert all("bastion_session" not in a.headers.get("set-cookie", "") for a in answers)
    with httpx.Client(base_url=stack.gateway.root) as http:
        good = sign_in(http, owner.email.upper())  # emails are case-insensitive
        assert good.status_code == 303 and good.headers["location"] == f"/dashboard/a/{account_id}/"


def test_failed_sign_ins_are_throttled_per_email_and_per_address(stack: Stack) -> None:
    # Behind a trusted proxy (loopback here), X-Forwarded-For names the client: each test its own
    # address, so the counts of other tests (shared through Redis on that stack) do not mix in.
    gateway = stack.start(
        {
            "BASTION_SIGNIN_FAILURES_PER_EMAIL": "3",
            "BASTION_SIGNIN_FAILURES_PER_ADDRESS": "5",
            "BASTION_TRUSTED_PROXIES": "127.0.0.0/8",
        }
    )
    try:
        account_id, _, _ = _ids(stack)
        target = person(stack, "--account", account_id, "--role", "viewer", root=gateway.root)
        target.close()
        address = f"203.0.113.{secrets.randbelow(250) + 1}"
        emails = [f"{n}-{secrets.token_hex(3)}@example.com" for n in range(3)]
        forwarded = {"X-Forwarded-For": f"{address}, 127.0.0.1"}
        with httpx.Client(base_url=gateway.root, headers=forwarded) as http:
            statuses = [sign_in(http, target.email, f"wrong-{n}").status_code for n in range(3)]
            assert statuses == [401, 401, 401]
            blocked = sign_in(http, target.email)  # the right password, too late
            assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.text
            assert 800 < int(blocked.headers["retry-after"]) <= 900
            assert "bastion_session" not in http.cookies
            # Per address: two more failures on other emails reach this address's 5.
            assert [sign_in(http, email, "x").status_code for email in emails] == [401, 401, 429]
        with httpx.Client(base_url=gateway.root, headers={"X-Forwarded-For": "198.51.100.7"}) as http:
            assert sign_in(http, emails[2], "x").status_code == 401  # another address, another count
        # The audit log kept each failure with the client's address, not the proxy's.
        entries = json.loads(stack.bastion("audit", "--json", "--limit", "200").stdout)
        failed = [e for e in entries if e["action"] == "signin.failed" and e["address"] == address]
        assert len(failed) == 5 and {e["target"] for e in failed} == {target.email, *emails[:2]}
    finally:
        _stop(stack, gateway)


def test_a_successful_sign_in_forgets_the_emails_failures(stack: Stack) -> None:
    gateway = stack.start({"BASTION_SIGNIN_FAILURES_PER_EMAIL": "2"})
    try:
        account_id, _, _ = _ids(stack)
        target = person(stack, "--account", account_id, "--role", "viewer", root=gateway.root)
        target.close()
        for _ in range(2):
            with httpx.Client(base_url=gateway.root) as http:
                assert sign_in(http, target.email, "wrong").status_code == 401
                assert sign_in(http, target.email).status_code == 303
    finally:
        _stop(stack, gateway)


def test_sign_in_only_follows_a_dashboard_path(stack: Stack) -> None:
    account_id, _, _ = _ids(stack)
    viewer = person(stack, "--account", account_id, "--role", "viewer")
    viewer.close()
    for target, expected in (
        (f"/dashboard/a/{account_id}/usage", f"/dashboard/a/{account_id}/usage"),
        ("https://evil.example/", f"/dashboard/a/{account_id}/"),
        ("//evil.example/dashboard/", f"/dashboard/a/{account_id}/"),
        ("/dashboard//evil.example", f"/dashboard/a/{account_id}/"),
    ):
        with httpx.Client(base_url=stack.gateway.root) as http:
            token = form_token(http, "/dashboard/signin")
            answer = http.post(
                "/dashboard/signin",
                data={"form_token": token, "email": viewer.email, "password": PASSWORD, "next": target},
            )
            assert answer.status_code == 303 and answer.headers["location"] == expected


def test_a_sign_in_form_without_its_token_is_refused(stack: Stack) -> None:
    account_id, _, _ = _ids(stack)
    viewer = person(stack, "--account", account_id, "--role", "viewer")
    viewer.close()
    with httpx.Client(base_url=stack.gateway.root) as http:
        form_token(http, "/dashboard/signin")
        forged = http.post(
            "/dashboard/signin", data={"form_token": "guess", "email": viewer.email, "password": PASSWORD}
        )
        assert forged.status_code == 403 and "bastion_session" not in http.cookies


# ----------------------------------------------------------------------------- links and sessions


def test_one_time_links_expire_are_spent_once_and_need_a_real_password(stack: Stack) -> None:
    account_id, _, _ = _ids(stack)
    email = "link-user@example.com"
    user_id, token = invite(stack, email, "--account", account_id, "--role", "developer")
    with httpx.Client(base_url=stack.gateway.root) as http:
        short = accept(http, token, "short")
        assert short.status_code == 400 and "at least 12 characters" in short.text
        path = f"/dashboard/invite/{token}"
        differ = http.post(
            path,
            data={"form_token": form_token(http, path), "password": PASSWORD, "confirm": "other password x"},
        )
        assert differ.status_code == 400 and "differ" in differ.text
        assert accept(http, token).status_code == 303
    with httpx.Client(base_url=stack.gateway.root) as http:
        again = http.get(f"/dashboard/invite/{token}", headers={"Accept": "text/html"})
        assert again.status_code == 404 and "expired or was already used" in again.text
    # A reset gives a new link; one past its 72 hours is refused.
    reset = stack.bastion("users", "reset", email, "--json")
    assert reset.returncode == 0, reset.stderr
    fresh = reset.stdout.split('"link": "')[1].split('"')[0].rsplit("/", 1)[1]
    _sql(
        stack,
        "UPDATE dashboard_users SET link_expires_at = :t WHERE id = :u",
        t=utcnow() - timedelta(seconds=1),
        u=user_id,
    )
    with httpx.Client(base_url=stack.gateway.root) as http:
        assert http.get(f"/dashboard/invite/{fresh}").status_code == 404
        assert sign_in(http, email).status_code == 401  # the reset cleared the old password


def test_sessions_end_on_sign_out_reset_removal_and_idleness(stack: Stack) -> None:
    account_id, _, _ = _ids(stack)
    overview = f"/dashboard/a/{account_id}/"

    def ended(who: Person) -> bool:
        answer = who.page(overview)
        return answer.status_code == 303 and answer.headers["location"].startswith("/dashboard/signin")

    signed_out = person(stack, "--account", account_id, "--role", "viewer")
    stolen = dict(signed_out.http.cookies)
    assert signed_out.page(overview).status_code == 200
    out = signed_out.post("/dashboard/signout", {})
    assert out.status_code == 303 and out.headers["location"] == "/dashboard/signin"
    with httpx.Client(base_url=stack.gateway.root, cookies=stolen) as replay:  # the old cookie is dead
        assert replay.get(overview).status_code == 303

    reset, removed, idle = (person(stack, "--account", account_id, "--role", "viewer") for _ in range(3))
    assert stack.bastion("users", "reset", reset.email).returncode == 0
    assert stack.bastion("users", "remove", removed.email).returncode == 0
    _sql(
        stack,
        "UPDATE dashboard_sessions SET last_seen_at = :t WHERE user_id = :u",
        t=utcnow() - timedelta(hours=12, seconds=5),
        u=idle.user_id,
    )
    assert ended(reset) and ended(removed) and ended(idle)
    for who in (signed_out, reset, removed, idle):
        who.close()


# ----------------------------------------------------------------------------- roles and CSRF


def test_roles_decide_what_a_member_may_do_and_a_refusal_changes_nothing(stack: Stack) -> None:
    account_id, _, _ = _ids(stack)
    other_id, _, _ = _ids(stack)
    viewer = person(stack, "--account", account_id, "--role", "viewer")
    developer = person(stack, "--account", account_id, "--role", "developer")
    owner = person(stack, "--account", account_id, "--role", "owner")
    keys_page = f"/dashboard/a/{account_id}/keys"
    try:
        before = _keys(stack, account_id)
        assert (
            "Create a key" not in viewer.page(keys_page).text
            and "Create a key" in developer.page(keys_page).text
        )
        assert viewer.post(keys_page, {"name": "by-viewer"}).status_code == 403
        assert (
            viewer.post(
                f"/dashboard/a/{account_id}/members", {"email": "x@example.com", "role": "owner"}
            ).status_code
            == 403
        )
        assert (
            developer.post(
                f"/dashboard/a/{account_id}/members", {"email": "y@example.com", "role": "owner"}
            ).status_code
            == 403
        )
        assert owner.post(f"/dashboard/a/{account_id}/credit", {"usd": "100"}).status_code == 403
        assert _keys(stack, account_id) == before
        assert stack.balance(account_id) == USD
        # Another account does not exist, for a member.
        for who in (viewer, developer, owner):
            assert who.page(f"/dashboard/a/{other_id}/").status_code == 404
            assert who.page(f"/dashboard/a/{other_id}/usage.csv").status_code == 404
            assert who.page("/dashboard/users").status_code == 404
        made = developer.post(keys_page, {"name": "by-developer", "rpm": "60"})
        assert made.status_code == 201 and 'id="new-key">qbt_' in made.text
        assert _keys(stack, account_id) == [*before, "by-developer"]
    finally:
        for who in (viewer, developer, owner):
            who.close()


def test_a_form_without_the_sessions_token_or_from_another_site_changes_nothing(stack: Stack) -> None:
    account_id, _, _ = _ids(stack)
    owner = person(stack, "--account", account_id, "--role", "owner")
    operator = person(stack, "--operator")
    keys_page = f"/dashboard/a/{account_id}/keys"
    try:
        before = _keys(stack, account_id)
        assert owner.post(keys_page, {"name": "no-token"}, csrf=False).status_code == 403
        assert (
            owner.post(keys_page, {"name": "bad-token", "csrf_token": "x" * 43}, csrf=False).status_code
            == 403
        )
        # The operator's token is not the owner's.
        assert (
            owner.post(
                keys_page, {"name": "other-token", "csrf_token": operator.csrf()}, csrf=False
            ).status_code
            == 403
        )
        cross = owner.http.post(
            keys_page,
            data={"name": "cross-site", "csrf_token": owner.csrf()},
            headers={"Origin": "https://evil.example", "Accept": "text/html"},
        )
        assert cross.status_code == 403 and "another site" in cross.text
        credit = operator.post(f"/dashboard/a/{account_id}/credit", {"usd": "5"}, csrf=False)
        assert credit.status_code == 403
        assert _keys(stack, account_id) == before and stack.balance(account_id) == USD
        # The same form with the token works.
        assert (
            operator.post(f"/dashboard/a/{account_id}/credit", {"usd": "5", "note": "top"}).status_code == 303
        )
        assert stack.balance(account_id) == USD + 5 * USD
    finally:
        owner.close()
        operator.close()


def test_bad_input_in_a_form_is_an_error_on_the_page_and_writes_nothing(stack: Stack) -> None:
    account_id, _, _ = _ids(stack)
    operator = person(stack, "--operator")
    try:
        before = _keys(stack, account_id)
        for fields in (
            {"name": "k", "rpm": "0"},
            {"name": "k", "rpm": "ten"},
            {"name": "k", "budget": "-1"},
            {"name": "k", "budget": "0.0000000001"},
            {"name": "k", "expires": "2001-01-01"},
            {"name": "k", "restrict_models": "on"},
            {"name": "k", "restrict_models": "on", "models": "gpt-5"},  # not served (a stale form)
        ):
            answer = operator.post(f"/dashboard/a/{account_id}/keys", fields)
            assert answer.status_code == 400 and "No key was created" in answer.text, fields
        assert "does not serve &#39;gpt-5&#39;" in answer.text  # the last one's reason, named
        for amount in ("-5", "ten", "0"):
            answer = operator.post(f"/dashboard/a/{account_id}/credit", {"usd": amount})
            assert answer.status_code == 400 and "Nothing was added" in answer.text
        adjustment = operator.post(f"/dashboard/a/{account_id}/credit", {"usd": "-1", "kind": "adjustment"})
        assert adjustment.status_code == 400 and "needs a note" in adjustment.text
        assert _keys(stack, account_id) == before and stack.balance(account_id) == USD
        assert operator.post("/dashboard/accounts", {"name": "", "credits": "1"}).status_code == 400
    finally:
        operator.close()


# ----------------------------------------------------------------------------- keys, audit, usage


def test_keys_created_edited_and_revoked_in_the_dashboard_apply_to_the_api_and_the_audit_log(
    stack: Stack,
) -> None:
    account_id, _, _ = _ids(stack)
    owner = person(stack, "--account", account_id, "--role", "owner")
    try:
        made = owner.post(
            f"/dashboard/a/{account_id}/keys",
            [
                ("name", "ci"),
                ("restrict_models", "on"),
                ("models", "m-echo"),
                ("budget", "0.5"),
                ("budget_period", "daily"),
            ],
        )
        assert made.status_code == 201
        key = re.search(r'id="new-key">(qbt_\w+)<', made.text).group(1)  # type: ignore[union-attr]
        key_id = re.search(r'data-created-key="(key_\w+)"', made.text).group(1)  # type: ignore[union-attr]
        client = stack.client(key)
        assert client.chat.completions.create(model="m-echo", messages=HELLO).choices
        with pytest.raises(openai.BadRequestError) as outside:
            client.chat.completions.create(model="m-reasoning", messages=HELLO)
        assert outside.value.code == "model_not_found"
        edited = owner.post(
            f"/dashboard/a/{account_id}/keys/{key_id}", {"name": "ci-2", "rpm": "1", "budget_period": "total"}
        )
        assert edited.status_code == 303
        # The change applies at the next request: one request per minute now, every model.
        assert client.chat.completions.create(model="m-reasoning", messages=HELLO).choices
        with pytest.raises(openai.RateLimitError):  # rpm 1: the second request of the minute
            client.chat.completions.create(model="m-echo", messages=HELLO)
        confirm = owner.page(f"/dashboard/a/{account_id}/keys/{key_id}/revoke")
        assert confirm.status_code == 200 and "Revoke the key" in confirm.text and "ci-2" in confirm.text
        assert owner.post(f"/dashboard/a/{account_id}/keys/{key_id}/revoke", {}).status_code == 303
        with pytest.raises(openai.AuthenticationError) as revoked:
            client.chat.completions.create(model="m-echo", messages=HELLO)
        assert revoked.value.status_code == 401
        audit = owner.page(f"/dashboard/a/{account_id}/audit").text
        for action in ("key.create", "key.update", "key.revoke", "signin", "user.password_set"):
            assert f'data-action="{action}"' in audit
        assert owner.email in re.sub(r"<[^>]+>", "", audit) and "127.0.0.1" in audit
        cli = stack.bastion("audit", "--account", account_id, "--json").stdout
        assert '"action": "key.revoke"' in cli and f'"actor": "{owner.email}"' in cli
        # A key's limits are recorded when it is made, and what changed when it is changed.
        details = {e["action"]: e["detail"] for e in json.loads(cli) if e["target"].startswith("ci")}
        assert details["key.create"] == {
            "key_id": key_id,
            "models": ["m-echo"],
            "budget_usd": "0.5",
            "budget_period": "daily",
        }
        assert details["key.update"] == {
            "key_id": key_id,
            "name": "ci-2",
            "rpm": 1,
            "models": None,
            "budget_usd": None,
            "budget_period": None,
        }
        shown = re.sub(r"<[^>]+>", "", audit)  # the page says it in words, amounts in USD
        # Phrases apart (the " ·" between them is the stylesheet's):
        assert "budget $0.50 daily models: m-echo" in shown
        assert "named “ci-2” no budget 1 rpm all models" in shown
    finally:
        owner.close()


def _record(account_id: str, key_id: str, n: int, status: int, model: str = "m-echo") -> UsageRow:
    return UsageRow(
        request_id=f"req_page_{account_id[-6:]}_{n:04d}",
        account_id=account_id,
        key_id=key_id,
        model=model,
        endpoint="chat",
        prompt_tokens=n,
        completion_tokens=1,
        cost_nano=1000 + n,
        status=status,
        latency_ms=3,
        estimated=False,
        created_at=utcnow()
        - timedelta(seconds=n // 3),  # several records share a time: the cursor's id decides
    )


def test_the_request_log_pages_by_cursor_filters_and_exports_exactly(stack: Stack) -> None:
    account_id, key_id, _ = _ids(stack)
    rows = [
        _record(account_id, key_id, n, 502 if n % 10 == 0 else 200, "m-a" if n % 2 else "m-b")
        for n in range(120)
    ]

    async def write(store: object) -> None:
        await store.record_usage(rows)  # type: ignore[attr-defined]

    stack.with_store(write)
    viewer = person(stack, "--account", account_id, "--role", "viewer")
    try:
        seen: list[str] = []
        path, params = f"/dashboard/a/{account_id}/usage", {}
        while True:
            page = viewer.page(path, **params)
            assert page.status_code == 200
            ids = re.findall(r'<tr data-request-id="([^"]+)"', page.text)
            seen += ids
            older = re.search(r'href="[^"?]+\?([^"]*after=[^"]+)" rel="next"', page.text)
            if not older:
                break
            params = dict(p.split("=", 1) for p in older.group(1).replace("&amp;", "&").split("&"))
        assert len(seen) == 120 == len(set(seen))
        expected = sorted(rows, key=lambda r: (r.created_at, int(r.request_id[-4:])), reverse=True)
        # Same time: the later insert (higher id) first.
        assert seen == [r.request_id for r in expected]
        errors = viewer.page(path, status="error", model="m-b")
        error_ids = re.findall(r'<tr data-request-id="([^"]+)"', errors.text)
        assert sorted(error_ids) == sorted(r.request_id for r in rows if r.status == 502 and r.model == "m-b")
        export = viewer.http.get(f"/dashboard/a/{account_id}/usage.csv", params={"status": "error"})
        assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
        lines = list(csv.DictReader(io.StringIO(export.text)))
        assert {line["request_id"]: int(line["cost_nano"]) for line in lines} == {
            r.request_id: r.cost_nano for r in rows if r.status == 502
        }
        assert sorted(line["cost_usd"] for line in lines) == sorted(
            decimal_usd(r.cost_nano) for r in rows if r.status == 502
        )
        detail = viewer.page(f"{path}/{rows[5].request_id}")
        assert detail.status_code == 200 and 'data-cost-nano="1005"' in detail.text
        assert viewer.page(f"{path}/req_nope").status_code == 404
        assert viewer.page(path, after="garbage").status_code == 200
        assert viewer.page(path, **{"from": "yesterday"}).status_code == 400
    finally:
        viewer.close()


def test_csv_cells_a_spreadsheet_would_run_are_quoted() -> None:
    row = UsageRow(
        "req_1",
        "acct",
        "key",
        "=HYPERLINK()",
        "chat",
        1,
        2,
        3,
        200,
        4,
        False,
        utcnow(),
        client_request_id="+1+1",
    )
    line = csv_line(row, "@name")
    assert line[2] == "'+1+1" and line[5] == "'@name" and line[6] == "'=HYPERLINK()" and line[14] == 3


def test_operators_see_the_gateway_its_breakers_and_every_account(stack: Stack) -> None:
    gateway = stack.start({"BASTION_BREAKER_THRESHOLD": "2"})
    try:
        account_id, _, key = _ids(stack)
        client = stack.client(key, gateway)
        for _ in range(2):
            with contextlib.suppress(openai.InternalServerError):
                client.chat.completions.create(model="m-error500", messages=HELLO)
        operator = person(stack, "--operator", root=gateway.root)
        state = operator.page("/dashboard/gateway").text
        row = re.search(r'<tr data-model="m-error500".*?</tr>', state, re.S).group(0)  # type: ignore[union-attr]
        assert 'data-breaker="open"' in row
        echo = re.search(r'<tr data-model="m-echo".*?</tr>', state, re.S).group(0)  # type: ignore[union-attr]
        assert 'data-breaker="closed"' in echo
        assert "sk-prov-SECRET" not in state  # providers' keys never reach a page
        accounts = operator.page("/dashboard/accounts").text
        assert f'data-account-id="{account_id}"' in accounts
        made = operator.post("/dashboard/accounts", {"name": "made-in-browser", "credits": "2.5"})
        assert made.status_code == 303
        new_id = made.headers["location"].split("/")[3]
        assert stack.balance(new_id) == 2_500_000_000
        usage = poll(lambda: 'data-request-id="' in operator.page("/dashboard/usage").text, 5)
        assert usage
        operator.close()
    finally:
        _stop(stack, gateway)


def test_users_are_managed_by_the_admin_api_too(stack: Stack) -> None:
    token = "dashboard-admin-token-0123456789"
    gateway = stack.start({"BASTION_ADMIN_TOKEN": token, "BASTION_PUBLIC_URL": "https://gw.example.com"})
    try:
        account_id, _, _ = _ids(stack)
        with httpx.Client(
            base_url=gateway.root + "/admin/v1", headers={"Authorization": f"Bearer {token}"}
        ) as api:
            made = api.post(
                "/users", json={"email": "API@example.com", "account": account_id, "role": "viewer"}
            )
            assert made.status_code == 201, made.text
            user = made.json()
            assert user["email"] == "api@example.com" and user["status"] == "invited"
            assert user["link"].startswith("https://gw.example.com/dashboard/invite/")
            assert api.post("/users", json={"email": "api@example.com", "operator": True}).status_code == 409
            assert (
                api.post(
                    "/users", json={"email": "z@example.com", "operator": True, "role": "owner"}
                ).status_code
                == 400
            )
            assert api.post("/users", json={"email": "not-an-email", "operator": True}).status_code == 400
            listed = api.get("/users", params={"account": account_id}).json()
            assert [u["email"] for u in listed] == ["api@example.com"]
            reset = api.post(f"/users/{user['id']}/reset")
            assert reset.status_code == 200 and reset.json()["link"] != user["link"]
            assert api.delete("/users/api@example.com").status_code == 200
            assert api.delete("/users/api@example.com").status_code == 404
            audit = api.get("/audit", params={"account": account_id}).json()
            assert [e["action"] for e in audit[:3]] == ["user.remove", "user.reset", "user.invite"]
            assert audit[0]["actor"] == "admin-api" and audit[0]["address"] == "127.0.0.1"
    finally:
        _stop(stack, gateway)


def test_the_overview_cards_keep_their_windows_whatever_the_charts_range(stack: Stack) -> None:
    account_id, key_id, _ = _ids(stack)
    now = utcnow()
    ages = {0: 1_000, 6: 20_000, 29: 300_000, 30: 4_000_000, 45: 50_000_000, 95: 600_000_000}
    rows = [
        UsageRow(f"req_age_{account_id[-6:]}_{age}", account_id, key_id, "m-echo", "chat", 1, 1, cost, 200, 1,
                 False, now - timedelta(days=age))
        for age, cost in ages.items()
    ]  # fmt: skip

    async def write(store: object) -> None:
        await store.record_usage(rows)  # type: ignore[attr-defined]

    stack.with_store(write)
    viewer = person(stack, "--account", account_id, "--role", "viewer")
    try:
        for days, in_chart in ((7, 21_000), (30, 321_000), (90, 54_321_000)):
            page = viewer.page(f"/dashboard/a/{account_id}/", days=str(days)).text

            def card(name: str, text: str = page) -> str:
                found = re.search(rf'data-figure="{name}">.*?class="value">{EXACT}', text, re.S)
                assert found, name
                return found.group(1)

            assert (card("spend-today"), card("spend-7d"), card("spend-30d")) == (
                "$0.000001",
                "$0.000021",
                "$0.000321",
            ), days
            chart = sum(int(n) for n in re.findall(r'data-cost-nano="(\d+)" data-requests', page))
            assert chart == in_chart, days
    finally:
        viewer.close()


def test_the_overview_shows_what_requests_in_flight_hold(stack: Stack, upstream: MockUpstream) -> None:
    account_id, _, key = _ids(stack)
    viewer = person(stack, "--account", account_id, "--role", "viewer")
    overview = f"/dashboard/a/{account_id}/"

    def cards(path: str = overview) -> tuple[str, str, str]:
        text = viewer.page(path).text
        found = [
            re.search(rf'data-figure="{name}">.*?class="value">{EXACT}', text, re.S)
            for name in ("balance", "reserved", "available")
        ]
        assert all(found)
        return tuple(f.group(1) for f in found)  # type: ignore[union-attr,return-value]

    gate = f"dash-inflight-{account_id}"
    body = {"model": "m-gated", "messages": HELLO, "max_tokens": 100, "stream": True}
    try:
        with httpx.stream(
            "POST",
            stack.gateway.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}", "x-request-id": gate},
        ) as held:
            lines = held.iter_lines()
            assert '"first"' in next(line for line in lines if "first" in line)
            # Its worst case, (5 prompt + 2 * 100 output) tokens at $1 per 1M: held until it ends.
            assert cards() == ("$1.00", "$0.000205", "$0.999795")
            assert cards(f"/dashboard/a/{account_id}/credit") == ("$1.00", "$0.000205", "$0.999795")
            upstream.open_gate(gate)
            assert any("[DONE]" in line for line in lines)
        (record,) = stack.wait_records(account_id, 1)
        left = dollars(USD - record.cost_nano)
        assert poll(lambda: cards() == (left, "$0.00", left), 5), cards()
    finally:
        viewer.close()


def test_money_is_shown_compact_with_the_exact_amount_in_its_title() -> None:
    assert [formats.usd_compact(n) for n in (0, 17_000, 80_284_800, 999_795_000, 1_234_567_891_234)] == [
        "$0.00",
        "$0.000017",
        "$0.0803",
        "$1.00",
        "$1,234.57",
    ]
    assert formats.usd_compact(-12_345_678_901) == "-$12.35"
    assert formats.money(80_284_800) == '<span class="money" title="$0.0802848">$0.0803</span>'
    assert str(formats.money(None)) == '<span class="faint">—</span>'
    assert formats.email("a.b-c@x.example") == (
        '<span class="email"><span>a<wbr>.b-c</span><wbr><span>@x<wbr>.example</span></span>'
    )
    assert formats.email("<b>@x") == '<span class="email"><span>&lt;b&gt;</span><wbr><span>@x</span></span>'
    assert formats.email("cli:root") == "cli:root"
