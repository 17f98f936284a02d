"""Dashboard pages over HTTP, as a browser gets them: a signed-in user's client, each page timed on the
client's clock after warm-up requests, and every answer checked (status 200 and the content it must
carry) so that a broken page can never pass as a fast one."""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

Check = Callable[[str], str | None]  # a page's HTML -> what is wrong with it, or None

_FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')
_ROW = re.compile(r'<tr data-request-id="([^"]+)"')
_NEXT = re.compile(r'<a class="btn small" href="([^"]+)" rel="next">')
_TIMING = re.compile(r"gateway;dur=([\d.]+)")


class SignInFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Page:
    name: str
    who: str  # whose client asks: "owner" or "operator"
    path: str
    target_ms: float | None  # p50 and p95 must be under it
    check: Check


@dataclass
class Timing:
    name: str
    who: str
    path: str
    target_ms: float | None
    samples_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)  # Server-Timing gateway;dur of each sample
    first_ms: float = math.nan  # the first request, on caches nothing warmed yet
    problems: list[str] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return percentile(self.samples_ms, 0.50)

    @property
    def p95_ms(self) -> float:
        return percentile(self.samples_ms, 0.95)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms, default=math.nan)

    @property
    def server_p50_ms(self) -> float:
        return percentile(self.server_ms, 0.50)

    @property
    def met(self) -> bool | None:
        """False for a broken page whatever its speed; None when the page has no target."""
        if self.problems or not self.samples_ms:
            return False
        if self.target_ms is None:
            return None
        return self.p50_ms < self.target_ms and self.p95_ms < self.target_ms

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "who": self.who,
            "path": self.path,
            "target_ms": self.target_ms,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "max_ms": self.max_ms,
            "server_p50_ms": self.server_p50_ms,
            "first_ms": self.first_ms,
            "met": self.met,
            "samples_ms": self.samples_ms,
            "server_ms": self.server_ms,
            "problems": self.problems,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest sample with at least q of the samples at or below it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def sign_in(root: str, email: str, password: str) -> httpx.Client:
    """A client holding a dashboard session, signed in through the form as a browser does."""
    client = httpx.Client(base_url=root, timeout=60, headers={"Accept": "text/html"})
    try:
        form = client.get("/dashboard/signin")
        token = _FORM_TOKEN.search(form.text)
        if form.status_code != 200 or token is None:
            raise SignInFailed(f"GET /dashboard/signin answered {form.status_code} without a form token")
        fields = {"form_token": token.group(1), "email": email, "password": password}
        answer = client.post("/dashboard/signin", data=fields)
        if answer.status_code != 303 or "bastion_session" not in client.cookies:
            raise SignInFailed(f"signing in as {email} answered {answer.status_code}, no session")
    except BaseException:
        client.close()
        raise
    return client


def measure(client: httpx.Client, page: Page, samples: int, warmup: int) -> Timing:
    timing = Timing(page.name, page.who, page.path, page.target_ms)
    for n in range(warmup + samples):
        started = time.perf_counter()
        answer = client.get(page.path)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if n == 0:
            timing.first_ms = elapsed_ms
        problem = problem_of(answer, page.check)
        if problem and problem not in timing.problems:
            timing.problems.append(problem)
        if n >= warmup:
            timing.samples_ms.append(elapsed_ms)
            server = _TIMING.search(answer.headers.get("server-timing", ""))
            if server:
                timing.server_ms.append(float(server.group(1)))
    return timing


def follow(client: httpx.Client, path: str, pages: int) -> tuple[str, list[float]]:
    """Follow the log's "Older" link `pages` times: the last page's path and each step's time."""
    times = []
    for _ in range(pages):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        found = _NEXT.search(answer.text) if answer.status_code == 200 else None
        if found is None:
            raise RuntimeError(f"{path} answered {answer.status_code} without an 'Older' link")
        path = html.unescape(found.group(1))
    return path, times


def problem_of(answer: httpx.Response, check: Check) -> str | None:
    if answer.status_code != 200:
        return f"status {answer.status_code}"
    return check(answer.text)


# ------------------------------------------------------------------------------------------- checks


def request_ids(page: str) -> list[str]:
    return _ROW.findall(page)


def rows_are(expected: Sequence[str], more: bool) -> Check:
    """The log shows exactly these request ids, in this order, and an "Older" link iff more exist."""
    wanted = list(expected)

    def check(page: str) -> str | None:
        shown = request_ids(page)
        if shown != wanted:
            first = shown[0] if shown else "none"
            return f"rows differ: {len(shown)} shown (first {first}), {len(wanted)} expected"
        if bool(_NEXT.search(page)) != more:
            return "the 'Older' link is missing" if more else "an 'Older' link past the last row"
        return None

    return check


def card_is(figure: str, value: str, sub: str | None = None) -> Check:
    """The overview's card `data-figure=...` shows this value (and sub-line); a money figure's value is
    its exact amount (its title)."""
    pattern = re.compile(
        rf'data-figure="{re.escape(figure)}">.*?<div class="value">'
        r'(?:<span class="money" title="([^"]*)">[^<]*</span>|([^<]*))</div>'
        r'(?:<div class="sub">([^<]*)</div>)?'
    )

    def check(page: str) -> str | None:
        found = pattern.search(page)
        if found is None:
            return f'no data-figure="{figure}" card'
        value_shown = found.group(1) if found.group(1) is not None else found.group(2)
        shown = (html.unescape(value_shown), html.unescape(found.group(3) or ""))
        if shown[0] != value or (sub is not None and shown[1] != sub):
            return f"{figure} shows {shown[0]!r} / {shown[1]!r}, expected {value!r} / {sub!r}"
        return None

    return check


def contains(*snippets: str) -> Check:
    def check(page: str) -> str | None:
        missing = [s for s in snippets if s not in page]
        return f"missing {', '.join(missing[:3])}" if missing else None

    return check


def every(*checks: Check) -> Check:
    def check(page: str) -> str | None:
        problems = [p for c in checks if (p := c(page)) is not None]
        return "; ".join(problems) or None

    return check
