"""What every dashboard answer carries, and what every form it accepts must carry.

- Headers on every answer: a Content-Security-Policy that allows no inline script or style and no
  framing, `Referrer-Policy: same-origin` (one-time links never leak to another site),
  `X-Content-Type-Options: nosniff`, no caching of pages (static assets are cached by their version).
- Forms: a POST must carry the session's CSRF token (signed-in forms) or the pre-session cookie's
  token (sign-in, set password), compared in constant time, and must not come from another origin.
  A refused form changes nothing.
- Bodies are URL-encoded forms of at most `MAX_FORM_BYTES`.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request

from bastion.api.asgi import Message, Receive, Scope, Send

MAX_FORM_BYTES = 64 * 1024
SESSION_COOKIE = "bastion_session"
FORM_COOKIE = "bastion_form"  # the pre-session CSRF token (double submit), for sign-in and set-password

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_PAGE_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]
_NO_STORE = (b"cache-control", b"no-store")
_ASSET_CACHE = (b"cache-control", b"public, max-age=86400")  # pages name assets by content (?v=)
_HSTS = (b"strict-transport-security", b"max-age=31536000")


class FormRefused(Exception):
    """A form without a valid CSRF token, from another origin, or too large: nothing was done."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SecurityHeaders:
    """ASGI wrapper of the dashboard's app: the headers above on every answer it gives."""

    def __init__(self, app: object, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # type: ignore[operator]
            return
        https = self.https or scope.get("scheme") == "https"
        static = "/static/" in scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += _PAGE_HEADERS
                if b"cache-control" not in names:
                    headers.append(_ASSET_CACHE if static else _NO_STORE)
                if https:
                    headers.append(_HSTS)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)  # type: ignore[operator]


def tokens_match(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def same_origin(request: Request, public_url: str | None) -> bool:
    """A browser names the page a form was sent from in `Origin` (or `Referer`): its host must be this
    site's (the scheme is left out: a proxy in front may terminate TLS). A request that names neither
    (an older client) is left to the CSRF token."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if source == "null":
        return False
    if not source:
        return True
    allowed = {request.headers.get("host", "").lower()}
    if public_url:
        allowed.add(urlsplit(public_url).netloc.lower())
    return urlsplit(source).netloc.lower() in allowed


class FormData:
    """A posted form's fields, in order."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self._last = dict(pairs)

    def get(self, name: str, default: str = "") -> str:
        return self._last.get(name, default)

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


async def read_form(request: Request) -> FormData:
    return FormData(await read_form_pairs(request))


async def checked_form(
    request: Request, public_url: str | None, token_field: str, expected: str | None, expired: str
) -> FormData:
    """A posted form from this site whose `token_field` matches `expected`; else FormRefused (`expired`
    says why to the user), before anything is done."""
    if not same_origin(request, public_url):
        raise FormRefused(403, "This form was sent from another site. Nothing was changed.")
    fields = await read_form(request)
    if not tokens_match(fields.get(token_field), expected):
        raise FormRefused(403, expired)
    return fields


async def read_form_pairs(request: Request) -> list[tuple[str, str]]:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise FormRefused(413, "The form is too large.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormRefused(413, "The form is too large.")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and content_type != "application/x-www-form-urlencoded":
        raise FormRefused(415, "Forms are sent URL-encoded.")
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=500)
    except (UnicodeDecodeError, ValueError):
        raise FormRefused(400, "The form could not be read.") from None


class ClientAddress:
    """The browser's address: the peer's, or, when the peer is a trusted proxy, the nearest address in
    X-Forwarded-For that is not one."""

    def __init__(self, trusted: str | None) -> None:
        trusted = trusted or ""
        self.networks = [
            ipaddress.ip_network(part.strip(), strict=False) for part in trusted.split(",") if part.strip()
        ]

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def of(self, request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        if not self.networks or not self._trusted(peer):
            return peer
        forwarded = [part.strip() for part in request.headers.get("x-forwarded-for", "").split(",")]
        for address in reversed([a for a in forwarded if a]):
            if not self._trusted(address):
                return address[:64]
        return peer


def cookie(
    name: str, value: str, path: str, secure: bool, max_age: int | None = None, strict: bool = False
) -> str:
    parts: Iterable[str] = [
        f"{name}={value}",
        f"Path={path}",
        "HttpOnly",
        "SameSite=Strict" if strict else "SameSite=Lax",
        *(["Secure"] if secure else []),
        *([f"Max-Age={max_age}"] if max_age is not None else []),
    ]
    return "; ".join(parts)
