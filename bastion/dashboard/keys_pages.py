"""An account's API keys: the list with limits, last use and spend; create (the key shown once), edit
(name, limits, models, expiry), revoke (after a confirmation)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

from bastion.dashboard.context import AccountVisit, PageError, Visit
from bastion.dashboard.links import public_base
from bastion.dashboard.security import FormData
from bastion.db.errors import StoreError
from bastion.db.reports import KeyFigures
from bastion.db.views import KeyView
from bastion.money import MoneyError, usd_to_nano
from bastion.periods import PERIODS

router = APIRouter()


async def period_spend(visit: Visit, keys: list[KeyView]) -> dict[str, tuple[str, int]]:
    """Each budgeted key's spend in its current period (from the rollups and, for a period that starts
    within a UTC day, that day's records)."""
    dashboard = visit.dashboard
    found: dict[str, tuple[str, int]] = {}
    for key in keys:
        if key.budget_nano is not None and key.revoked_at is None:
            window, spent = await dashboard.management.key_spend(key, dashboard.periods)
            found[key.id] = (window.id, spent)
    return found


async def _keys_page(visit: Visit, status: int = 200, **context: Any) -> Response:
    today = datetime.now(UTC).date()
    figures: list[KeyFigures] = await visit.dashboard.management.store.reports.keys(visit.account_id, today)
    spend = await period_spend(visit, [f.key for f in figures])
    refusals = await visit.dashboard.management.store.refusals.last_per_key([f.key.id for f in figures])
    defaults = {"error": None, "values": {}, "created": None, "plaintext": None, "notice": None}
    return visit.page(
        "keys.html",
        status,
        keys=figures,
        spend=spend,
        refusals=refusals,
        models=list(visit.dashboard.catalog().models),
        periods=PERIODS,
        now=datetime.now(UTC),
        settings=visit.dashboard.settings,
        base_url=public_base(visit.dashboard.settings) + "/v1",
        **(defaults | context),
    )


@router.get("/a/{account_id}/keys")
async def keys(visit: AccountVisit, updated: str | None = None, revoked: str | None = None) -> Response:
    notice = "The key was updated." if updated else "The key was revoked." if revoked else None
    return await _keys_page(visit, notice=notice)


def _whole(form: FormData, name: str, label: str) -> int | None:
    text = form.get(name).strip().replace(",", "")
    if not text:
        return None
    if not text.isdigit():
        raise StoreError(f"{label} must be a whole number")
    return int(text)


def limits(form: FormData) -> dict[str, Any]:
    """The key settings a form gives (on an edit, an empty field removes the limit)."""
    budget = form.get("budget").strip().lstrip("$").replace(",", "")
    expires = form.get("expires").strip()
    chosen = [m for m in form.getlist("models") if m]
    try:
        expiry = datetime.combine(date.fromisoformat(expires), time(23, 59, 59), UTC) if expires else None
    except ValueError:
        raise StoreError(f"'{expires}' is not a date (YYYY-MM-DD)") from None
    settings = {
        "rpm": _whole(form, "rpm", "requests per minute"),
        "tpm": _whole(form, "tpm", "tokens per minute"),
        "max_parallel": _whole(form, "max_parallel", "requests in flight"),
        "budget_nano": usd_to_nano(budget) if budget else None,
        "budget_period": form.get("budget_period") or None,
        "models": chosen if form.get("restrict_models") == "on" else None,
        "expires_at": expiry,
    }
    if settings["models"] == []:
        raise StoreError("choose at least one model, or allow every model")
    return settings


@router.post("/a/{account_id}/keys")
async def create_key(visit: AccountVisit) -> Response:
    visit.require("keys.write")
    form = await visit.form()
    try:
        settings = limits(form)
        key, plaintext = await visit.dashboard.management.create_key(
            visit.account_id,
            form.get("name").strip()[:200] or None,
            settings["rpm"],
            settings["tpm"],
            settings["models"],
            settings["expires_at"],
            settings["budget_nano"],
            settings["budget_period"],
            settings["max_parallel"],
            visit.actor,
        )
    except (StoreError, MoneyError) as exc:
        return await _keys_page(visit, 400, error=f"No key was created: {exc}.", values=dict(form.pairs))
    return await _keys_page(visit, 201, created=key, plaintext=plaintext)


async def _key(visit: Visit, key_id: str) -> KeyView:
    found = await visit.dashboard.management.store.key(key_id)
    if found is None or found[0].account_id != visit.account_id:
        raise PageError(404, "Not found", "There is no such key in this account.")
    return found[0]


@router.get("/a/{account_id}/keys/{key_id}")
async def edit_key_page(visit: AccountVisit, key_id: str) -> Response:
    visit.require("keys.write")
    key = await _key(visit, key_id)
    return visit.page(
        "key_edit.html", key=key, error=None, models=list(visit.dashboard.catalog().models), periods=PERIODS
    )


@router.post("/a/{account_id}/keys/{key_id}")
async def edit_key(visit: AccountVisit, key_id: str) -> Response:
    visit.require("keys.write")
    key = await _key(visit, key_id)
    form = await visit.form()
    try:
        changes = limits(form)
        if key.expires_at is not None and form.get("expires").strip() == key.expires_at.date().isoformat():
            changes.pop("expires_at")  # the same day as before: the expiry stays to the second
        name = form.get("name").strip()[:200]
        await visit.dashboard.management.update_key(key.id, name or None, changes, visit.actor)
    except (StoreError, MoneyError) as exc:
        return visit.page(
            "key_edit.html",
            400,
            key=key,
            error=f"Nothing was changed: {exc}.",
            models=list(visit.dashboard.catalog().models),
            periods=PERIODS,
        )
    return RedirectResponse(f"/dashboard/a/{visit.account_id}/keys?updated={key.id}", status_code=303)


@router.get("/a/{account_id}/keys/{key_id}/revoke")
async def revoke_page(visit: AccountVisit, key_id: str) -> Response:
    visit.require("keys.write")
    return visit.page("key_revoke.html", key=await _key(visit, key_id))


@router.post("/a/{account_id}/keys/{key_id}/revoke")
async def revoke(visit: AccountVisit, key_id: str) -> Response:
    visit.require("keys.write")
    key = await _key(visit, key_id)
    await visit.form()
    await visit.dashboard.management.revoke_key(key.id, visit.actor)
    return RedirectResponse(f"/dashboard/a/{visit.account_id}/keys?revoked={key.id}", status_code=303)
