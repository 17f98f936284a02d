"""A dashboard user over plain HTTP (httpx): invited through the CLI, password set through the one-time
link, signed in; forms posted with the tokens the pages carry, as a browser would."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
from stacks import Stack

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_FORM = re.compile(r'name="form_token" value="([^"]+)"')


def dollars(nano: int) -> str:
    """The exact amount of a dashboard money figure (its title; the text may be rounded), written out
    independently: trailing zeros trimmed past the cents, thousands separators ('$0.000017',
    '$1,234.50')."""
    sign = "-" if nano < 0 else ""
    whole, fraction = divmod(abs(nano), 10**9)
    digits = f"{fraction:09d}".rstrip("0").ljust(2, "0")
    return f"{sign}${whole:,}.{digits}"


@dataclass
class Person:
    email: str
    http: httpx.Client
    user_id: str

    def page(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(path, params=params or None, headers={"Accept": "text/html"})

    def csrf(self, path: str = "/dashboard/") -> str:
        found = _CSRF.search(self.http.get(path, follow_redirects=True).text)
        assert found, f"no csrf token on {path}"
        return found.group(1)

    def post(
        self, path: str, data: dict[str, str] | list[tuple[str, str]], csrf: bool = True
    ) -> httpx.Response:
        fields = list(data.items()) if isinstance(data, dict) else list(data)
        if csrf:
            fields.append(("csrf_token", self.csrf()))
        headers = {"Accept": "text/html", "Content-Type": "application/x-www-form-urlencoded"}
        return self.http.post(path, content=urlencode(fields), headers=headers)

    def close(self) -> None:
        self.http.close()


def invite(stack: Stack, email: str, *role: str) -> tuple[str, str]:
    """(user id, token of the one-time link), through `bastion users invite --json`."""
    result = stack.bastion("users", "invite", email, *role, "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    return answer["id"], answer["link"].rsplit("/", 1)[1]


def form_token(http: httpx.Client, path: str) -> str:
    page = http.get(path)
    assert page.status_code == 200, page.text
    found = _FORM.search(page.text)
    assert found and http.cookies.get("bastion_form") == found.group(1)
    return found.group(1)


def accept(http: httpx.Client, token: str, password: str = PASSWORD) -> httpx.Response:
    path = f"/dashboard/invite/{token}"
    return http.post(
        path, data={"form_token": form_token(http, path), "password": password, "confirm": password}
    )


def sign_in(http: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    token = form_token(http, "/dashboard/signin")
    return http.post("/dashboard/signin", data={"form_token": token, "email": email, "password": password})


def person(stack: Stack, *role: str, root: str | None = None) -> Person:
    """A new user with this role (`--operator` or `--account ID --role ROLE`), signed in."""
    email = f"user-{secrets.token_hex(4)}@example.com"
    user_id, token = invite(stack, email, *role)
    http = httpx.Client(base_url=root or stack.gateway.root, timeout=20)
    answer = accept(http, token)
    assert answer.status_code == 303, answer.text
    assert "bastion_session" in http.cookies
    return Person(email, http, user_id)
