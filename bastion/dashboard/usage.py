"""The request log (an account's, or every account's for operators): filters, pages by cursor, one
request's detail, and the CSV export with exactly the ledger's figures."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from starlette.responses import Response, StreamingResponse

from bastion.dashboard.context import PageError, Visit
from bastion.db.request_log import Cursor, UsageFilter
from bastion.db.views import UsageRow
from bastion.money import decimal_usd

PAGE_SIZE = 50
REFUSAL_DAYS = 30  # the refusals shown when the filter names no dates
CSV_COLUMNS = [
    "created_at",
    "request_id",
    "client_request_id",
    "account_id",
    "key_id",
    "key_name",
    "model",
    "endpoint",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "quantity",
    "unit",
    "cost_usd",
    "cost_nano",
    "latency_ms",
    "estimated",
    "recovered",
]
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Filters:
    key: str
    model: str
    status: str
    since: str  # YYYY-MM-DD (UTC), inclusive
    until: str  # YYYY-MM-DD (UTC), inclusive

    @classmethod
    def of(cls, params: dict[str, str]) -> Filters:
        return cls(*(params.get(name, "").strip()[:200] for name in ("key", "model", "status", "from", "to")))

    def query(self) -> UsageFilter:
        status = self.status if self.status in ("ok", "error") or self.status.isdigit() else None
        return UsageFilter(
            self.key or None, self.model or None, status, _day(self.since, "from"), _day(self.until, "to", 1)
        )

    def days(self, today: date) -> tuple[date, date]:
        """The filter's first and last UTC day (the last 30 days when it names none), for the refusals."""
        since, until = _day(self.since, "from"), _day(self.until, "to")
        last = until.date() if until is not None else today
        return (since.date() if since is not None else last - timedelta(days=REFUSAL_DAYS - 1)), last

    def with_status(self, status: str) -> Filters:
        return replace(self, status=status)

    def params(self, **extra: str) -> str:
        pairs = {
            "key": self.key,
            "model": self.model,
            "status": self.status,
            "from": self.since,
            "to": self.until,
        }
        return urlencode({k: v for k, v in (pairs | extra).items() if v})


def _day(text: str, name: str, plus: int = 0) -> datetime | None:
    if not text:
        return None
    try:
        start = date.fromisoformat(text)
    except ValueError:
        raise PageError(400, "Bad filter", f"'{text}' is not a date (YYYY-MM-DD) for '{name}'.") from None
    return datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=plus)


async def log_page(visit: Visit, account_id: str | None, params: dict[str, str], base: str) -> Response:
    filters = Filters.of(params)
    if filters.status == "refused":
        return await refusals_page(visit, account_id, filters, base)
    cursor = Cursor.decode(params["after"]) if params.get("after") else None
    log = visit.dashboard.management.store.log
    page = await log.log_page(account_id, filters.query(), cursor, PAGE_SIZE)
    names = await log.key_names([row.key_id for row in page.rows])
    accounts = await log.account_names([row.account_id for row in page.rows]) if account_id is None else {}
    if account_id is not None:
        keys = [(k.id, k.name, k.prefix) for k in await visit.dashboard.management.list_keys(account_id)]
    else:
        keys = []
    today = datetime.now(UTC).date()
    models = await log.models_used(account_id, today - timedelta(days=90))
    first_day, last_day = filters.days(today)
    refused_total = 0
    if filters.status in ("", "error") and not filters.model:  # a refusal has no model, nor a status
        summary = await visit.dashboard.management.store.refusals.summary(
            account_id, first_day, last_day, filters.key or None
        )
        refused_total = sum(summary.values())
    return visit.page(
        "usage.html",
        refused_total=refused_total,
        refused_days=(first_day, last_day),
        refused_url=f"{base}?{filters.with_status('refused').params()}",
        rows=page.rows,
        names=names,
        accounts=accounts,
        filters=filters,
        keys=keys,
        models=models,
        base=base,
        next_url=f"{base}?{filters.params(after=page.next_cursor)}" if page.next_cursor else None,
        first_url=f"{base}?{filters.params()}" if cursor is not None else None,
        export_url=f"{base}.csv?{filters.params()}",
        all_accounts=account_id is None,
    )


async def refusals_page(visit: Visit, account_id: str | None, filters: Filters, base: str) -> Response:
    """The refusals view of the log: counts per UTC day, key and code (a refusal writes no record)."""
    first_day, last_day = filters.days(datetime.now(UTC).date())
    store = visit.dashboard.management.store
    key_id = filters.key or None
    rows = await store.refusals.by_day(account_id, first_day, last_day, key_id)
    total = sum((await store.refusals.summary(account_id, first_day, last_day, key_id)).values())
    names = await store.log.key_names([row.key_id for row in rows])
    accounts = await store.log.account_names([row.account_id for row in rows]) if account_id is None else {}
    keys = []
    if account_id is not None:
        keys = [(k.id, k.name, k.prefix) for k in await visit.dashboard.management.list_keys(account_id)]
    models = await store.log.models_used(account_id, datetime.now(UTC).date() - timedelta(days=90))
    return visit.page(
        "refusals.html",
        rows=rows,
        total=total,
        first_day=first_day,
        last_day=last_day,
        names=names,
        accounts=accounts,
        filters=filters,
        keys=keys,
        models=models,
        base=base,
        all_accounts=account_id is None,
    )


async def request_page(visit: Visit, account_id: str | None, request_id: str) -> Response:
    log = visit.dashboard.management.store.log
    row = await log.request(account_id, request_id)
    if row is None:
        raise PageError(404, "Not found", f"No request '{request_id}' here.")
    names = await log.key_names([row.key_id])
    accounts = await log.account_names([row.account_id])
    return visit.page(
        "request.html", row=row, key=names.get(row.key_id), account_name=accounts.get(row.account_id)
    )


def _text(value: str | None) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP's CSV-injection advice)."""
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA) else value


def csv_line(row: UsageRow, key_name: str | None) -> list[object]:
    return [
        row.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        row.request_id,
        _text(row.client_request_id),
        row.account_id,
        row.key_id,
        _text(key_name),
        _text(row.model),
        row.endpoint,
        row.status,
        row.prompt_tokens,
        row.completion_tokens,
        row.quantity,
        row.unit or "",
        decimal_usd(row.cost_nano),
        row.cost_nano,
        row.latency_ms,
        "true" if row.estimated else "false",
        "true" if row.recovered else "false",
    ]


def csv_export(visit: Visit, account_id: str | None, params: dict[str, str], name: str) -> Response:
    filters = Filters.of(params).query()
    log = visit.dashboard.management.store.log

    async def lines() -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        async for batch in log.log_export(account_id, filters):
            names = await log.key_names([row.key_id for row in batch])
            for row in batch:
                writer.writerow(csv_line(row, names.get(row.key_id, ("", ""))[0]))
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue().encode()

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="usage-{name}-{stamp}.csv"'},
    )
