"""An account's pages: overview, usage (log, one request, CSV), models and rates, credit."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from bastion.dashboard import usage
from bastion.dashboard.charts import spend_chart
from bastion.dashboard.context import AccountVisit, Visit
from bastion.dashboard.rates import billed_prices, examples
from bastion.db.errors import StoreError
from bastion.money import MoneyError, usd_to_nano

router = APIRouter()
RANGES = (7, 30, 90)


async def live_balance(visit: Visit) -> tuple[int, int]:
    """(balance, reserved by requests in flight): the live state's, else the database's balance."""
    account = visit.account
    assert account is not None
    live = await visit.dashboard.live.balance(account.id)
    if live is None:
        return account.balance_nano, 0
    return live.balance_nano, live.reserved_nano


@router.get("/a/{account_id}/")
async def overview(visit: AccountVisit, days: int = 30) -> Response:
    days = days if days in RANGES else 30
    today = datetime.now(UTC).date()
    store = visit.dashboard.management.store
    figures = await store.reports.overview(visit.account_id, days, today)
    refused = await store.refusals.summary(visit.account_id, figures.first_day, figures.last_day)
    balance, reserved = await live_balance(visit)
    return visit.page(
        "overview.html",
        figures=figures,
        refused=refused,
        chart=spend_chart(figures),
        days=days,
        ranges=RANGES,
        balance=balance,
        reserved=reserved,
    )


@router.get("/a/{account_id}/usage")
async def usage_log(visit: AccountVisit, request: Request) -> Response:
    base = f"/dashboard/a/{visit.account_id}/usage"
    return await usage.log_page(visit, visit.account_id, dict(request.query_params), base)


@router.get("/a/{account_id}/usage.csv")
async def usage_csv(visit: AccountVisit, request: Request) -> Response:
    return usage.csv_export(visit, visit.account_id, dict(request.query_params), visit.account_id)


@router.get("/a/{account_id}/usage/{request_id}")
async def one_request(visit: AccountVisit, request_id: str) -> Response:
    return await usage.request_page(visit, visit.account_id, request_id)


@router.get("/a/{account_id}/models")
async def models(visit: AccountVisit) -> Response:
    catalog = visit.dashboard.catalog()
    rows = [(model, billed_prices(model), examples(model)) for model in catalog.models.values()]
    return visit.page("models.html", models=rows)


@router.get("/a/{account_id}/credit")
async def credit(visit: AccountVisit, added: str | None = None) -> Response:
    balance, reserved = await live_balance(visit)
    entries = await visit.dashboard.management.store.reports.credit_entries(visit.account_id)
    return visit.page(
        "credit.html", entries=entries, balance=balance, reserved=reserved, error=None, added=added
    )


@router.post("/a/{account_id}/credit")
async def add_credit(visit: AccountVisit) -> Response:
    visit.require("credit.write")
    form = await visit.form()
    kind = "adjustment" if form.get("kind") == "adjustment" else "topup"
    note = form.get("note", "").strip()[:1000] or None
    try:
        amount = usd_to_nano(form.get("usd", "").strip().lstrip("$").replace(",", ""))
        if kind == "adjustment" and not note:
            raise StoreError("an adjustment needs a note saying why")
        await visit.dashboard.management.add_credits(visit.account_id, amount, note, visit.actor, kind)
    except (MoneyError, StoreError) as exc:
        balance, reserved = await live_balance(visit)
        entries = await visit.dashboard.management.store.reports.credit_entries(visit.account_id)
        error = f"Nothing was added: {exc}."
        return visit.page(
            "credit.html", 400, entries=entries, balance=balance, reserved=reserved, error=error, added=None
        )
    return RedirectResponse(f"/dashboard/a/{visit.account_id}/credit?added=1", status_code=303)
