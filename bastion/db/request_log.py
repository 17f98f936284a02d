"""The request log: usage records newest first, one page at a time, continued from a cursor (the last
row's time and id), along the indexes (account_id, created_at, id) and (created_at, id), or those of a
model's records and of failures; one request's record; the whole selection in batches for an export.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from bastion.db.lookups import account_names, key_names
from bastion.db.models import UsageDaily, UsageRecord
from bastion.db.views import UsageRow, as_utc

EXPORT_BATCH = 5000


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


class RequestLog:
    def __init__(self, sessions: async_sessionmaker[Any]) -> None:
        self._sessions = sessions

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

    async def key_names(self, key_ids: list[str]) -> dict[str, tuple[str, str]]:
        """Key id -> (name, display prefix)."""
        async with self._sessions() as session:
            return await key_names(session, key_ids)

    async def account_names(self, account_ids: list[str]) -> dict[str, str]:
        """Account id -> name."""
        async with self._sessions() as session:
            return await account_names(session, account_ids)


def usage_row(record: UsageRecord) -> UsageRow:
    fields = UsageRow.__dataclass_fields__
    return UsageRow(**{f: getattr(record, f) for f in fields} | {"created_at": as_utc(record.created_at)})
