"""What the dashboard reads: totals and charts from the daily rollups, the request log by indexed ranges.

Nothing here scans the usage table: sums come from `usage_daily` (a row per day, account, key and
model), and the request log is read newest first along (account_id, created_at, id) or
(created_at, id), one page at a time, continued from a cursor (the last row's time and id).
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from bastion.db.models import (
    Account,
    ApiKey,
    CreditTransaction,
    DashboardUser,
    UsageDaily,
    UsageRecord,
)
from bastion.db.views import AccountView, KeyView, UsageRow, account_view, as_utc, key_view

EXPORT_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Totals:
    cost_nano: int = 0
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.cost_nano + other.cost_nano,
            self.requests + other.requests,
            self.errors + other.errors,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Ranked:
    """A key or a model, with its totals over a range."""

    id: str
    label: str
    totals: Totals


@dataclass(frozen=True, slots=True)
class Overview:
    first_day: date
    last_day: date
    by_day: dict[date, dict[str, Totals]]  # day -> model -> totals, over the range
    range_totals: Totals
    today: Totals
    last_7_days: Totals
    last_30_days: Totals
    top_keys: list[Ranked]
    top_models: list[Ranked]

    @property
    def days(self) -> list[date]:
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + timedelta(days=n) for n in range(count)]


@dataclass(frozen=True, slots=True)
class UsageFilter:
    key_id: str | None = None
    model: str | None = None
    status: str | None = None  # "ok" (< 400), "error" (>= 400), or a status code
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: int

    def encode(self) -> str:
        text = f"{self.created_at.astimezone(UTC).isoformat()}|{self.id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor | None:
        """None for anything that is not a cursor this module made."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            when, _, ident = raw.partition("|")
            moment = datetime.fromisoformat(when)
            return cls(moment if moment.tzinfo else moment.replace(tzinfo=UTC), int(ident))
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class LogPage:
    rows: list[UsageRow]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class KeyFigures:
    key: KeyView
    last_used: datetime | None
    spend_total_nano: int
    spend_30_days_nano: int


@dataclass(frozen=True, slots=True)
class CreditEntry:
    id: int
    account_id: str
    amount_nano: int
    kind: str
    note: str | None
    actor: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AccountFigures:
    account: AccountView
    spend_30_days_nano: int
    members: int
    active_keys: int


def _totals(row: Any) -> Totals:
    return Totals(
        int(row.cost_nano or 0),
        int(row.requests or 0),
        int(row.errors or 0),
        int(row.prompt_tokens or 0),
        int(row.completion_tokens or 0),
    )


_SUMS = (
    func.sum(UsageDaily.cost_nano).label("cost_nano"),
    func.sum(UsageDaily.requests).label("requests"),
    func.sum(UsageDaily.errors).label("errors"),
    func.sum(UsageDaily.prompt_tokens).label("prompt_tokens"),
    func.sum(UsageDaily.completion_tokens).label("completion_tokens"),
)


class Reports:
    def __init__(self, sessions: async_sessionmaker[Any]) -> None:
        self._sessions = sessions

    async def overview(self, account_id: str | None, days: int, today: date, top: int = 5) -> Overview:
        """Spend per day and model over the last `days` days (today included), the usual windows, and
        the top keys and models of the range; every account's when `account_id` is None."""
        first = today - timedelta(days=days - 1)
        earliest = min(first, today - timedelta(days=29))
        scope = [UsageDaily.day >= earliest, UsageDaily.day <= today]
        if account_id is not None:
            scope.append(UsageDaily.account_id == account_id)
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(UsageDaily.day, UsageDaily.model, *_SUMS)
                    .where(*scope)
                    .group_by(UsageDaily.day, UsageDaily.model)
                )
            ).all()
            key_rows = (
                await session.execute(
                    select(UsageDaily.key_id, *_SUMS)
                    .where(*scope, UsageDaily.day >= first)
                    .group_by(UsageDaily.key_id)
                    .order_by(func.sum(UsageDaily.cost_nano).desc(), UsageDaily.key_id)
                    .limit(top)
                )
            ).all()
            names = await self._key_labels(session, [r.key_id for r in key_rows])
        by_day: dict[date, dict[str, Totals]] = defaultdict(dict)
        range_totals = today_totals = week = month = Totals()
        by_model: dict[str, Totals] = defaultdict(Totals)
        for row in rows:
            day = row.day if isinstance(row.day, date) else date.fromisoformat(row.day)
            totals = _totals(row)
            age = (today - day).days
            month += totals
            week += totals if age < 7 else Totals()
            today_totals += totals if age == 0 else Totals()
            if day >= first:
                by_day[day][row.model] = totals
                range_totals += totals
                by_model[row.model] += totals
        top_models = sorted(by_model.items(), key=lambda item: (-item[1].cost_nano, item[0]))[:top]
        return Overview(
            first,
            today,
            dict(by_day),
            range_totals,
            today_totals,
            week,
            month,
            [Ranked(r.key_id, names.get(r.key_id, r.key_id), _totals(r)) for r in key_rows],
            [Ranked(model, model, totals) for model, totals in top_models],
        )

    async def _key_labels(self, session: Any, key_ids: list[str]) -> dict[str, str]:
        if not key_ids:
            return {}
        rows = await session.execute(select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(key_ids)))
        return {r.id: r.name for r in rows}

    async def key_names(self, key_ids: list[str]) -> dict[str, tuple[str, str]]:
        """Key id -> (name, display prefix)."""
        if not key_ids:
            return {}
        async with self._sessions() as session:
            rows = await session.execute(
                select(ApiKey.id, ApiKey.name, ApiKey.prefix).where(ApiKey.id.in_(set(key_ids)))
            )
            return {r.id: (r.name, r.prefix) for r in rows}

    # -------------------------------------------------------------- request log
    def _log_query(self, account_id: str | None, where: UsageFilter) -> Any:
        query = select(UsageRecord).order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc())
        if account_id is not None:
            query = query.where(UsageRecord.account_id == account_id)
        if where.key_id:
            query = query.where(UsageRecord.key_id == where.key_id)
        if where.model:
            query = query.where(UsageRecord.model == where.model)
        if where.status == "ok":
            query = query.where(UsageRecord.status < 400)
        elif where.status == "error":
            query = query.where(UsageRecord.status >= 400)
        elif where.status:
            query = query.where(UsageRecord.status == int(where.status))
        if where.since is not None:
            query = query.where(UsageRecord.created_at >= where.since)
        if where.until is not None:
            query = query.where(UsageRecord.created_at < where.until)
        return query

    @staticmethod
    def _after(query: Any, cursor: Cursor | None) -> Any:
        if cursor is None:
            return query
        # `created_at <= c` bounds the index range; the OR then leaves out what the cursor already showed.
        return query.where(
            UsageRecord.created_at <= cursor.created_at,
            or_(
                UsageRecord.created_at < cursor.created_at,
                and_(UsageRecord.created_at == cursor.created_at, UsageRecord.id < cursor.id),
            ),
        )

    async def log_page(
        self, account_id: str | None, where: UsageFilter, cursor: Cursor | None, limit: int = 50
    ) -> LogPage:
        query = self._after(self._log_query(account_id, where), cursor).limit(limit + 1)
        async with self._sessions() as session:
            records = list(await session.scalars(query))
        more = len(records) > limit
        records = records[:limit]
        last = records[-1] if more and records else None
        return LogPage(
            [usage_row(r) for r in records],
            Cursor(as_utc(last.created_at), last.id).encode() if last is not None else None,  # type: ignore[arg-type]
        )

    async def log_export(self, account_id: str | None, where: UsageFilter) -> AsyncIterator[list[UsageRow]]:
        """Every row the filter selects, newest first, in batches (a page query per batch, so an export
        of millions of rows holds one batch at a time and no transaction open between them)."""
        cursor: Cursor | None = None
        while True:
            query = self._after(self._log_query(account_id, where), cursor).limit(EXPORT_BATCH)
            async with self._sessions() as session:
                records = list(await session.scalars(query))
            if not records:
                return
            yield [usage_row(r) for r in records]
            if len(records) < EXPORT_BATCH:
                return
            cursor = Cursor(as_utc(records[-1].created_at), records[-1].id)  # type: ignore[arg-type]

    async def request(self, account_id: str | None, request_id: str) -> UsageRow | None:
        """One request by Bastion's id (or, within an account, the client's own x-request-id)."""
        ids = UsageRecord.request_id == request_id
        query = select(UsageRecord).order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc()).limit(1)
        if account_id is not None:
            query = query.where(
                UsageRecord.account_id == account_id, or_(ids, UsageRecord.client_request_id == request_id)
            )
        else:
            query = query.where(ids)
        async with self._sessions() as session:
            record = await session.scalar(query)
        return None if record is None else usage_row(record)

    async def models_used(self, account_id: str | None, since: date) -> list[str]:
        query = select(UsageDaily.model).where(UsageDaily.day >= since).distinct().order_by(UsageDaily.model)
        if account_id is not None:
            query = query.where(UsageDaily.account_id == account_id)
        async with self._sessions() as session:
            return list(await session.scalars(query))

    # --------------------------------------------------------------------- keys
    async def keys(self, account_id: str, today: date) -> list[KeyFigures]:
        """The account's keys, each with its last use and its spend (all time, last 30 days)."""
        last_used = (
            select(func.max(UsageRecord.created_at)).where(UsageRecord.key_id == ApiKey.id).scalar_subquery()
        )
        since = today - timedelta(days=29)
        async with self._sessions() as session:
            keys = (
                await session.execute(
                    select(ApiKey, last_used.label("last_used"))
                    .where(ApiKey.account_id == account_id)
                    .order_by(ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc())
                )
            ).all()
            spend = await session.execute(
                select(UsageDaily.key_id, func.sum(UsageDaily.cost_nano).label("total"))
                .where(UsageDaily.account_id == account_id)
                .group_by(UsageDaily.key_id)
            )
            totals = {r.key_id: int(r.total or 0) for r in spend}
            recent = await session.execute(
                select(UsageDaily.key_id, func.sum(UsageDaily.cost_nano).label("total"))
                .where(UsageDaily.account_id == account_id, UsageDaily.day >= since)
                .group_by(UsageDaily.key_id)
            )
            recent_totals = {r.key_id: int(r.total or 0) for r in recent}
        return [
            KeyFigures(
                key_view(row[0]),
                _moment(row.last_used),
                totals.get(row[0].id, 0),
                recent_totals.get(row[0].id, 0),
            )
            for row in keys
        ]

    async def key_spend_since(self, key_ids: list[str], first_day: date) -> dict[str, int]:
        """Keys' spend from a UTC day on (their budget period's, when periods are in UTC)."""
        if not key_ids:
            return {}
        async with self._sessions() as session:
            rows = await session.execute(
                select(UsageDaily.key_id, func.sum(UsageDaily.cost_nano).label("total"))
                .where(UsageDaily.key_id.in_(key_ids), UsageDaily.day >= first_day)
                .group_by(UsageDaily.key_id)
            )
            return {r.key_id: int(r.total or 0) for r in rows}

    # ------------------------------------------------------------------- credit
    async def credit_entries(
        self, account_id: str, before_id: int | None = None, limit: int = 100
    ) -> list[CreditEntry]:
        query = (
            select(CreditTransaction)
            .where(CreditTransaction.account_id == account_id)
            .order_by(CreditTransaction.id.desc())
            .limit(limit)
        )
        if before_id is not None:
            query = query.where(CreditTransaction.id < before_id)
        async with self._sessions() as session:
            return [
                CreditEntry(
                    t.id,
                    t.account_id,
                    t.amount_nano,
                    t.kind,
                    t.note,
                    t.actor,
                    as_utc(t.created_at),  # type: ignore[arg-type]
                )
                for t in await session.scalars(query)
            ]

    # ----------------------------------------------------------------- accounts
    async def accounts(self, today: date) -> list[AccountFigures]:
        since = today - timedelta(days=29)
        async with self._sessions() as session:
            accounts = list(await session.scalars(select(Account).order_by(Account.name)))
            spend = dict(
                (
                    await session.execute(
                        select(UsageDaily.account_id, func.sum(UsageDaily.cost_nano))
                        .where(UsageDaily.day >= since)
                        .group_by(UsageDaily.account_id)
                    )
                ).all()
            )
            members = dict(
                (
                    await session.execute(
                        select(DashboardUser.account_id, func.count())
                        .where(DashboardUser.account_id.is_not(None))
                        .group_by(DashboardUser.account_id)
                    )
                ).all()
            )
            keys = dict(
                (
                    await session.execute(
                        select(ApiKey.account_id, func.count())
                        .where(ApiKey.revoked_at.is_(None))
                        .group_by(ApiKey.account_id)
                    )
                ).all()
            )
        return [
            AccountFigures(
                account_view(a),
                int(spend.get(a.id) or 0),
                int(members.get(a.id) or 0),
                int(keys.get(a.id) or 0),
            )
            for a in accounts
        ]


def usage_row(record: UsageRecord) -> UsageRow:
    fields = UsageRow.__dataclass_fields__
    return UsageRow(**{f: getattr(record, f) for f in fields} | {"created_at": as_utc(record.created_at)})


def _moment(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands a correlated max() back as text
        value = datetime.fromisoformat(value)
    return as_utc(value)
