"""An account's members (owners invite and remove them) and its audit log."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

from bastion.dashboard.context import AccountVisit, PageError, Visit
from bastion.dashboard.links import set_password_link
from bastion.db.errors import StoreError
from bastion.db.people import ROLES

router = APIRouter()


async def _members_page(visit: Visit, status: int = 200, **context: object) -> Response:
    members = await visit.dashboard.management.store.people.users(visit.account_id)
    defaults: dict[str, object] = {"error": None, "invited": None, "link": None, "notice": None}
    return visit.page("members.html", status, members=members, roles=ROLES, **(defaults | context))


@router.get("/a/{account_id}/members")
async def members(visit: AccountVisit, removed: str | None = None) -> Response:
    return await _members_page(
        visit, notice="The member was removed; their sessions are ended." if removed else None
    )


@router.post("/a/{account_id}/members")
async def invite(visit: AccountVisit) -> Response:
    visit.require("members.write")
    form = await visit.form()
    try:
        user, token = await visit.dashboard.management.invite_user(
            form.get("email"), False, visit.account_id, form.get("role"), visit.actor
        )
    except StoreError as exc:
        return await _members_page(visit, 400, error=f"Nobody was invited: {exc}.")
    link = set_password_link(visit.dashboard.settings, token)
    return await _members_page(visit, 201, invited=user, link=link)


@router.post("/a/{account_id}/members/{user_id}/remove")
async def remove(visit: AccountVisit, user_id: str) -> Response:
    visit.require("members.write")
    await visit.form()
    people = visit.dashboard.management.store.people
    try:
        member = await people.user(user_id)
    except StoreError:
        member = None
    if member is None or member.account_id != visit.account_id:
        raise PageError(404, "Not found", "There is no such member in this account.")
    if member.id == visit.user.id:
        raise PageError(400, "Not removed", "You cannot remove yourself; another owner or an operator can.")
    await visit.dashboard.management.remove_user(member.id, visit.actor)
    return RedirectResponse(f"/dashboard/a/{visit.account_id}/members?removed=1", status_code=303)


@router.get("/a/{account_id}/audit")
async def audit(visit: AccountVisit, before: int | None = None) -> Response:
    visit.require("audit.read")
    entries = await visit.dashboard.management.store.audit.entries(
        visit.account_id, before_id=before, limit=100
    )
    more = entries[-1].id if len(entries) == 100 else None
    return visit.page("audit.html", entries=entries, accounts={}, more=more, all_accounts=False)
