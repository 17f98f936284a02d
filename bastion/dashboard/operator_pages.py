"""Operators' pages: every account (create, balance, spend, members), every account's usage, users and
invites, the audit log, and the running instance's models, deployments and breakers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from bastion.dashboard import usage
from bastion.dashboard.context import PageError, Visit, visit
from bastion.dashboard.links import set_password_link
from bastion.db.errors import StoreError
from bastion.db.people import ROLES
from bastion.money import MoneyError, usd_to_nano


async def operator_visit(request: Request) -> Visit:
    seen = await visit(request)
    if not seen.user.operator:
        raise PageError(404, "Not found", "There is no such page.")
    return seen


router = APIRouter()
OperatorVisit = Annotated[Visit, Depends(operator_visit)]


async def _accounts_page(visit: Visit, status: int = 200, **context: object) -> Response:
    today = datetime.now(UTC).date()
    accounts = await visit.dashboard.management.store.reports.accounts(today)
    figures = await visit.dashboard.management.store.reports.overview(None, 30, today)
    defaults: dict[str, object] = {"error": None}
    return visit.page("accounts.html", status, accounts=accounts, figures=figures, **(defaults | context))


@router.get("/accounts")
async def accounts(visit: OperatorVisit) -> Response:
    return await _accounts_page(visit)


@router.post("/accounts")
async def create_account(visit: OperatorVisit) -> Response:
    form = await visit.form()
    try:
        credit = usd_to_nano(form.get("credits", "0").strip().lstrip("$").replace(",", "") or "0")
        account = await visit.dashboard.management.create_account(form.get("name")[:200], credit, visit.actor)
    except (StoreError, MoneyError) as exc:
        return await _accounts_page(visit, 400, error=f"No account was created: {exc}.")
    return RedirectResponse(f"/dashboard/a/{account.id}/", status_code=303)


@router.get("/usage")
async def all_usage(visit: OperatorVisit, request: Request) -> Response:
    return await usage.log_page(visit, None, dict(request.query_params), "/dashboard/usage")


@router.get("/usage.csv")
async def all_usage_csv(visit: OperatorVisit, request: Request) -> Response:
    return usage.csv_export(visit, None, dict(request.query_params), "all")


@router.get("/usage/{request_id}")
async def one_request(visit: OperatorVisit, request_id: str) -> Response:
    return await usage.request_page(visit, None, request_id)


async def _users_page(visit: Visit, status: int = 200, **context: object) -> Response:
    users = await visit.dashboard.management.store.people.users()
    names = {a.id: a.name for a in await visit.dashboard.management.list_accounts()}
    defaults: dict[str, object] = {
        "error": None,
        "invited": None,
        "link": None,
        "notice": None,
        "reset": False,
    }
    return visit.page("users.html", status, users=users, accounts=names, roles=ROLES, **(defaults | context))


@router.get("/users")
async def users(visit: OperatorVisit, removed: str | None = None) -> Response:
    return await _users_page(
        visit, notice="The user was removed; their sessions are ended." if removed else None
    )


@router.post("/users")
async def invite(visit: OperatorVisit) -> Response:
    form = await visit.form()
    operator = form.get("role") == "operator"
    account = None if operator else form.get("account") or None
    role = None if operator else form.get("role")
    try:
        user, token = await visit.dashboard.management.invite_user(
            form.get("email"), operator, account, role, visit.actor
        )
    except StoreError as exc:
        return await _users_page(visit, 400, error=f"Nobody was invited: {exc}.")
    return await _users_page(
        visit, 201, invited=user, link=set_password_link(visit.dashboard.settings, token)
    )


@router.post("/users/{user_id}/reset")
async def reset(visit: OperatorVisit, user_id: str) -> Response:
    await visit.form()
    try:
        user, token = await visit.dashboard.management.reset_user(user_id, visit.actor)
    except StoreError as exc:
        raise PageError(404, "Not found", str(exc)) from None
    return await _users_page(
        visit, invited=user, link=set_password_link(visit.dashboard.settings, token), reset=True
    )


@router.post("/users/{user_id}/remove")
async def remove(visit: OperatorVisit, user_id: str) -> Response:
    await visit.form()
    if user_id == visit.user.id:
        raise PageError(400, "Not removed", "You cannot remove yourself; another operator can.")
    try:
        await visit.dashboard.management.remove_user(user_id, visit.actor)
    except StoreError as exc:
        raise PageError(404, "Not found", str(exc)) from None
    return RedirectResponse("/dashboard/users?removed=1", status_code=303)


@router.get("/audit")
async def audit(visit: OperatorVisit, before: int | None = None) -> Response:
    store = visit.dashboard.management.store
    entries = await store.audit.entries(None, before_id=before, limit=100)
    accounts = await store.log.account_names([e.account_id for e in entries if e.account_id])
    more = entries[-1].id if len(entries) == 100 else None
    return visit.page("audit.html", entries=entries, accounts=accounts, more=more, all_accounts=True)


@router.get("/gateway")
async def gateway(visit: OperatorVisit) -> Response:
    return visit.page("gateway.html", state=await visit.dashboard.gateway_state())
