"""Signing in and out, and setting a password from a one-time link.

Sign-in answers the same page, the same status and after the same work (an argon2 verification) for
an unknown email and a wrong password. Failed sign-ins are counted per email and per client address;
past the limit the answer is 429 with `Retry-After`, whatever the password. These forms exist before
a session does, so their CSRF token is a double-submitted cookie (`bastion_form`).
"""

from __future__ import annotations

import math
import secrets

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bastion.auth.passwords import WeakPassword, check_strength, hash_password, needs_rehash, verify_password
from bastion.dashboard.context import Dashboard, PageError, SignInRequired, dashboard_of, visit
from bastion.dashboard.security import (
    FORM_COOKIE,
    SESSION_COOKIE,
    FormData,
    checked_form,
    cookie,
)
from bastion.db.audit import Actor
from bastion.db.people import UserView
from bastion.db.store import NotFound

router = APIRouter()
PREFIX = "/dashboard"


def home_of(user: UserView) -> str:
    return f"{PREFIX}/accounts" if user.operator else f"{PREFIX}/a/{user.account_id}/"


def safe_next(target: str | None) -> str | None:
    """Only a path of the dashboard itself (no other host, no scheme)."""
    if not target or not target.startswith(f"{PREFIX}/") or "//" in target or "\\" in target:
        return None
    return target


def _with_form_token(
    request: Request, dashboard: Dashboard, template: str, context: dict[str, object], status: int = 200
) -> Response:
    token = secrets.token_urlsafe(24)
    response = dashboard.renderer.html(template, {**context, "form_token": token}, status)
    response.headers.append(
        "set-cookie", cookie(FORM_COOKIE, token, PREFIX, dashboard.https, 3600, strict=True)
    )
    return response


async def _checked_form(request: Request, dashboard: Dashboard) -> FormData:
    """Before a session exists, the CSRF token is the one double-submitted in the form's cookie."""
    expired = "This form has expired; it was reloaded, please send it again."
    cookie_token = request.cookies.get(FORM_COOKIE)
    return await checked_form(request, dashboard.settings.public_url, "form_token", cookie_token, expired)


async def _signed_in(
    request: Request, dashboard: Dashboard, user: UserView, target: str | None = None
) -> RedirectResponse:
    """A new session for `user`, its cookie, and on to the page they came for (or their home)."""
    people = dashboard.management.store.people
    address = dashboard.addresses.of(request)
    token = await people.start_session(user, address, request.headers.get("user-agent"))
    await people.forget_idle_sessions(dashboard.idle)  # sign-ins are rare: the table is kept small here
    secure = dashboard.secure(request)
    response = RedirectResponse(target or home_of(user), status_code=303)
    response.headers.append("set-cookie", cookie(SESSION_COOKIE, token, PREFIX, secure))
    response.headers.append("set-cookie", cookie(FORM_COOKIE, "", PREFIX, secure, 0, strict=True))
    return response


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    try:
        seen = await visit(request)
    except SignInRequired:
        return RedirectResponse(f"{PREFIX}/signin", status_code=303)
    return RedirectResponse(home_of(seen.user), status_code=303)


@router.get("/signin", response_class=HTMLResponse)
async def signin_page(request: Request, next: str | None = None) -> Response:
    dashboard = dashboard_of(request)
    return _with_form_token(
        request, dashboard, "signin.html", {"next": safe_next(next), "email": "", "error": None}
    )


@router.post("/signin", response_class=HTMLResponse)
async def signin(request: Request) -> Response:
    dashboard = dashboard_of(request)
    fields = await _checked_form(request, dashboard)
    email = fields.get("email", "").strip().lower()[:320]
    password = fields.get("password", "")
    target = safe_next(fields.get("next"))
    address = dashboard.addresses.of(request)
    context: dict[str, object] = {"next": target, "email": email}
    wait = await dashboard.throttle.retry_after(email, address)
    if wait:
        minutes = math.ceil(wait / 60)
        error = f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        response = _with_form_token(request, dashboard, "signin.html", context | {"error": error}, 429)
        response.headers["retry-after"] = str(wait)
        return response
    people = dashboard.management.store.people
    found = await people.credentials(email)
    if not await verify_password(found[1] if found else None, password) or found is None:
        await dashboard.throttle.failed(email, address)
        account = found[0].account_id if found else None
        await dashboard.management.store.audit.add(
            Actor(email or "-", None, address), "signin.failed", account, email
        )
        error = "Incorrect email or password."
        return _with_form_token(request, dashboard, "signin.html", context | {"error": error}, 401)
    user, stored = found
    await dashboard.throttle.succeeded(email)
    if needs_rehash(stored):
        await people.rehash(user.id, await hash_password(password))
    return await _signed_in(request, dashboard, user, target)


@router.post("/signout")
async def signout(request: Request) -> Response:
    seen = await visit(request)
    await seen.form()
    token = request.cookies.get(SESSION_COOKIE, "")
    await seen.dashboard.management.store.people.end_session(token, seen.actor)
    response = RedirectResponse(f"{PREFIX}/signin", status_code=303)
    response.headers.append(
        "set-cookie", cookie(SESSION_COOKIE, "", PREFIX, seen.dashboard.secure(request), 0)
    )
    return response


@router.get("/invite/{token}", response_class=HTMLResponse)
async def invite_page(request: Request, token: str) -> Response:
    dashboard = dashboard_of(request)
    user = await dashboard.management.store.people.link_user(token)
    if user is None:
        raise PageError(404, "Link expired", "This link has expired or was already used. Ask for a new one.")
    return _with_form_token(
        request, dashboard, "invite.html", {"invited": user, "error": None, "token": token}
    )


@router.post("/invite/{token}", response_class=HTMLResponse)
async def set_password(request: Request, token: str) -> Response:
    dashboard = dashboard_of(request)
    people = dashboard.management.store.people
    fields = await _checked_form(request, dashboard)
    user = await people.link_user(token)
    if user is None:
        raise PageError(404, "Link expired", "This link has expired or was already used. Ask for a new one.")
    password = fields.get("password", "")
    try:
        check_strength(password, user.email)
        if password != fields.get("confirm", ""):
            raise WeakPassword("the two passwords differ")
    except WeakPassword as exc:
        context = {"invited": user, "error": f"Not saved: {exc}.", "token": token}
        return _with_form_token(request, dashboard, "invite.html", context, 400)
    address = dashboard.addresses.of(request)
    try:
        user = await people.set_password(token, await hash_password(password), address)
    except NotFound:
        raise PageError(
            404, "Link expired", "This link has expired or was already used. Ask for a new one."
        ) from None
    return await _signed_in(request, dashboard, user)
