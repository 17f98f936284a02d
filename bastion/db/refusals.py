"""Refused requests, counted per UTC day, account, key and error code (`refusals_daily`).

A request refused before it was served (402 `insufficient_funds` or `key_budget_exceeded`, 429, a body
or model that fails validation) writes no usage record: the live state counts it in the round trip that
refused it, and the ledger writer adds those counts here (`add`), so 10,000 refusals a second cost a few
counters, never 10,000 rows. The dashboard reads them back (`summary`, `by_day`, `last_per_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import async_sessionmaker

from bastion.db.models import RefusalDaily
from bastion.db.views import as_utc

# The error codes a refusal is counted under, as the client was answered: their status, and what they
# mean to a person.
REFUSAL_CODES = {
    "insufficient_funds": (402, "insufficient credit"),
    "key_budget_exceeded": (402, "key budget exceeded"),
    "rate_limit_exceeded": (429, "rate or concurrency limit"),
    "invalid_request": (400, "invalid request"),
    "model_not_found": (400, "model not found or not allowed"),
    "request_too_large": (413, "request too large"),
}


def refusal_status(code: str) -> int | str:
    return REFUSAL_CODES[code][0] if code in REFUSAL_CODES else code


def refusal_label(code: str) -> str:
    return REFUSAL_CODES[code][1] if code in REFUSAL_CODES else code


@dataclass(frozen=True, slots=True)
class RefusalTally:
    """Refusals of one key under one code on one UTC day: how many, and when the last one was."""

    account_id: str
    key_id: str
    day: date
    code: str
    count: int
    last_at: datetime


@dataclass(frozen=True, slots=True)
class LastRefusal:
    code: str
    at: datetime


class Refusals:
    def __init__(self, sessions: async_sessionmaker[Any], dialect: str) -> None:
        self._sessions = sessions
        self._postgres = dialect == "postgresql"

    async def add(self, tallies: Sequence[RefusalTally]) -> None:
        """Add the tallies to the day's counts (one statement: a tally of a day, key and code already
        counted adds to it)."""
        if not tallies:
            return
        statement = (postgresql.insert if self._postgres else sqlite.insert)(RefusalDaily)
        greatest = func.greatest if self._postgres else func.max  # SQLite's max() of two is the greater
        statement = statement.on_conflict_do_update(
            index_elements=["account_id", "day", "key_id", "code"],
            set_={
                "count": RefusalDaily.count + statement.excluded.count,
                "last_at": greatest(RefusalDaily.last_at, statement.excluded.last_at),
            },
        )
        rows = [
            {
                "account_id": t.account_id,
                "day": t.day,
                "key_id": t.key_id,
                "code": t.code,
                "count": t.count,
                "last_at": t.last_at,
            }
            for t in _merged(tallies)
        ]
        async with self._sessions.begin() as session:
            await session.execute(statement, rows)

    async def summary(
        self, account_id: str | None, first_day: date, last_day: date, key_id: str | None = None
    ) -> dict[str, int]:
        """Refusals per code over the days (every account's when `account_id` is None, one key's with
        `key_id`), most first."""
        query = (
            select(RefusalDaily.code, func.sum(RefusalDaily.count))
            .where(RefusalDaily.day >= first_day, RefusalDaily.day <= last_day)
            .group_by(RefusalDaily.code)
        )
        if account_id is not None:
            query = query.where(RefusalDaily.account_id == account_id)
        if key_id is not None:
            query = query.where(RefusalDaily.key_id == key_id)
        async with self._sessions() as session:
            counts = {code: int(total) for code, total in (await session.execute(query)).all()}
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    async def by_day(
        self,
        account_id: str | None,
        first_day: date,
        last_day: date,
        key_id: str | None = None,
        limit: int = 500,
    ) -> list[RefusalTally]:
        """The counts themselves, by day (newest first), key and code."""
        query = select(RefusalDaily).where(RefusalDaily.day >= first_day, RefusalDaily.day <= last_day)
        if account_id is not None:
            query = query.where(RefusalDaily.account_id == account_id)
        if key_id is not None:
            query = query.where(RefusalDaily.key_id == key_id)
        query = query.order_by(
            RefusalDaily.day.desc(), RefusalDaily.count.desc(), RefusalDaily.key_id, RefusalDaily.code
        ).limit(limit)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return [
            RefusalTally(r.account_id, r.key_id, r.day, r.code, int(r.count), as_utc(r.last_at)) for r in rows
        ]

    async def last_per_key(self, key_ids: Sequence[str]) -> dict[str, LastRefusal]:
        """Each key's latest refusal (keys never refused are absent): one index range per key."""
        if not key_ids:
            return {}
        latest = (
            select(RefusalDaily.key_id, func.max(RefusalDaily.last_at).label("at"))
            .where(RefusalDaily.key_id.in_(list(key_ids)))
            .group_by(RefusalDaily.key_id)
            .subquery()
        )
        query = select(RefusalDaily.key_id, RefusalDaily.code, RefusalDaily.last_at).join(
            latest, (RefusalDaily.key_id == latest.c.key_id) & (RefusalDaily.last_at == latest.c.at)
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return {key_id: LastRefusal(code, as_utc(at)) for key_id, code, at in rows}


def _merged(tallies: Sequence[RefusalTally]) -> list[RefusalTally]:
    """One tally per (account, day, key, code): an upsert may not touch a row twice."""
    merged: dict[tuple[str, date, str, str], RefusalTally] = {}
    for t in tallies:
        key = (t.account_id, t.day, t.key_id, t.code)
        known = merged.get(key)
        if known is not None:
            t = replace(t, count=known.count + t.count, last_at=max(known.last_at, t.last_at))
        merged[key] = t
    return [merged[key] for key in sorted(merged)]


# The live state keeps days as days since the epoch (UTC) and times as epoch milliseconds.
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def day_number(day: date) -> int:
    return day.toordinal() - _EPOCH_ORDINAL


def at_ms(epoch_ms: float) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


def tally_of(day: int, account_id: str, key_id: str, code: str, count: int, last_ms: float) -> RefusalTally:
    """A tally from the live state's figures."""
    return RefusalTally(
        account_id, key_id, date.fromordinal(_EPOCH_ORDINAL + day), code, count, at_ms(last_ms)
    )
