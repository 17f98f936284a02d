"""What the dashboard reads from the daily rollups: totals, charts, top lists, keys' and accounts'
figures, and the credit transactions.

Nothing here scans the usage table: sums come from `usage_daily` (a row per UTC day, account, key and
model, kept by the ledger writer in the same transaction as the records); a key's last use is one index
lookup. The request log itself is `bastion.db.request_log`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from bastion.db.lookups import key_names
from bastion.db.models import (
    Account,
    ApiKey,
    CreditTransaction,
    DashboardUser,
    UsageDaily,
    UsageRecord,
)
from bastion.db.views import AccountView, KeyView, account_view, as_utc, key_view


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
            names = await key_names(session, [r.key_id for r in key_rows])
        by_day: dict[date, dict[str, Totals]] = defaultdict(dict)
        range_totals = today_totals = week = month = Totals()
        by_model: dict[str, Totals] = defaultdict(Totals)
        for row in rows:
            day = row.day if isinstance(row.day, date) else date.fromisoformat(row.day)
            totals = _totals(row)
            age = (today - day).days
            month += totals if age < 30 else Totals()
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
            [Ranked(r.key_id, names.get(r.key_id, (r.key_id,))[0], _totals(r)) for r in key_rows],
            [Ranked(model, model, totals) for model, totals in top_models],
        )

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
            spend = {
                r.key_id: (int(r.total or 0), int(r.recent or 0))
                for r in await session.execute(
                    select(
                        UsageDaily.key_id,
                        func.sum(UsageDaily.cost_nano).label("total"),
                        func.sum(case((UsageDaily.day >= since, UsageDaily.cost_nano), else_=0)).label(
                            "recent"
                        ),
                    )
                    .where(UsageDaily.account_id == account_id)
                    .group_by(UsageDaily.key_id)
                )
            }
        return [
            KeyFigures(
                key_view(row[0]),
                _moment(row.last_used),
                *spend.get(row[0].id, (0, 0)),
            )
            for row in keys
        ]

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


def _moment(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands a correlated max() back as text
        value = datetime.fromisoformat(value)
    return as_utc(value)
