"""Who is asking and what they may do: the signed-in user of a page, the account in view, the roles.

Operators see and run every account. A member sees their own account only (another account's pages
are a 404, as if they did not exist) and does what their role allows.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import Request
from starlette.responses import HTMLResponse

from bastion.billing.live import LiveState
from bastion.config import Catalog, Settings
from bastion.dashboard.render import Renderer
from bastion.dashboard.security import (
    SESSION_COOKIE,
    ClientAddress,
    FormData,
    checked_form,
)
from bastion.dashboard.throttle import Throttle
from bastion.db.audit import Actor
from bastion.db.people import SessionView, UserView
from bastion.db.store import AccountView, NotFound
from bastion.management import Management
from bastion.periods import Periods

# What each role may do beyond reading its account's pages; operators may do everything.
PERMISSIONS: dict[str, frozenset[str]] = {
    "keys.write": frozenset({"owner", "developer"}),
    "members.write": frozenset({"owner"}),
    "audit.read": frozenset({"owner"}),
    "credit.write": frozenset(),
}


def allowed(user: UserView, action: str) -> bool:
    return user.operator or (user.role or "") in PERMISSIONS[action]


class SignInRequired(Exception):
    pass


class PageError(Exception):
    """An answer as a page: 403 (not allowed), 404 (nothing here, or not yours), 400 (bad input)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


@dataclass
class Dashboard:
    """What the pages share, built once per process."""

    settings: Settings
    management: Management
    live: LiveState
    periods: Periods
    throttle: Throttle
    renderer: Renderer
    catalog: Callable[[], Catalog]
    gateway_state: Callable[[], Coroutine[Any, Any, dict[str, Any]]]
    https: bool
    addresses: ClientAddress = field(init=False)

    def __post_init__(self) -> None:
        self.addresses = ClientAddress(self.settings.trusted_proxies)

    @property
    def idle(self) -> timedelta:
        return timedelta(hours=self.settings.session_idle_hours)

    def secure(self, request: Request) -> bool:
        """Cookies are `Secure` when the public URL is https, or this request came over TLS."""
        return self.https or request.url.scheme == "https"


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


@dataclass
class Visit:
    """One page view by a signed-in user."""

    dashboard: Dashboard
    request: Request
    session: SessionView
    address: str
    account: AccountView | None = None

    @property
    def user(self) -> UserView:
        return self.session.user

    @property
    def account_id(self) -> str:
        """The account in view (pages under /a/{account_id} only)."""
        assert self.account is not None
        return self.account.id

    @property
    def actor(self) -> Actor:
        return Actor(self.user.email, self.user.id, self.address)

    def can(self, action: str) -> bool:
        return allowed(self.user, action)

    def require(self, action: str) -> None:
        if not self.can(action):
            raise PageError(403, "Not allowed", "Your role does not allow this. Nothing was changed.")

    async def form(self) -> FormData:
        """The posted form, once its origin and the session's CSRF token are checked."""
        expired = "This form has expired or did not come from this page. Nothing was changed."
        public_url = self.dashboard.settings.public_url
        return await checked_form(self.request, public_url, "csrf_token", self.session.csrf_token, expired)

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        base = {
            "visit": self,
            "user": self.user,
            "account": self.account,
            "csrf_token": self.session.csrf_token,
            "can": self.can,
            "path": self.request.url.path,
        }
        return self.dashboard.renderer.html(template, base | context, status)


async def visit(request: Request) -> Visit:
    dashboard = dashboard_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = await dashboard.management.store.people.session(token, dashboard.idle) if token else None
    if session is None:
        raise SignInRequired()
    return Visit(dashboard, request, session, dashboard.addresses.of(request))


async def account_visit(request: Request, account_id: str) -> Visit:
    """A page of one account: the user's own, or any for an operator; else 404."""
    seen = await visit(request)
    if not seen.user.operator and seen.user.account_id != account_id:
        raise PageError(404, "Not found", "There is no such page.")
    try:
        seen.account = await seen.dashboard.management.store.account(account_id)
    except NotFound:
        raise PageError(404, "Not found", "There is no such account.") from None
    return seen


AccountVisit = Annotated[Visit, Depends(account_visit)]
