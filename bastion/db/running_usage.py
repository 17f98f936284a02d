"""Streams' running usage in the database (`running_usage`), for the in-process live state: checkpoints
written while the streams run, and the settlement of a dead process's at the next start.

A checkpoint goes once its request's usage record is in the database (never before: a record waits in
memory for the ledger's next write). Settling one inserts its record, skipped if the request has one
already (the unique request id): so a checkpoint is billed exactly once, whoever settles it, however
often.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bastion.db.models import RunningUsage, UsageRecord, utcnow


@dataclass(frozen=True, slots=True)
class Recovered:
    settled: int  # records written from checkpoints
    billed_nano: int  # what they charged


class RunningUsageTable:
    def __init__(
        self, engine: AsyncEngine, record_usage_json: Callable[[list[bytes]], Awaitable[int]]
    ) -> None:
        self.engine = engine
        self._record = record_usage_json
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def write(
        self, instance_id: str, checkpoints: Mapping[str, bytes], ended: Collection[str]
    ) -> set[str]:
        """Upsert `checkpoints` (request id -> usage record JSON), beat this instance's rows, and delete the
        checkpoints of `ended` requests whose records are written; returns those deleted."""
        now = utcnow()
        async with self.engine.begin() as connection:
            gone: set[str] = set()
            if ended:
                recorded = select(UsageRecord.request_id).where(UsageRecord.request_id.in_(list(ended)))
                await connection.execute(delete(RunningUsage).where(RunningUsage.request_id.in_(recorded)))
                gone = set(ended) - await self._present(connection, ended)
            if checkpoints:
                rows = [
                    {"request_id": r, "instance_id": instance_id, "record": record.decode(), "beat_at": now}
                    for r, record in checkpoints.items()
                ]
                statement = self._insert(RunningUsage)
                statement = statement.on_conflict_do_update(
                    index_elements=["request_id"],
                    set_={"record": statement.excluded.record, "beat_at": statement.excluded.beat_at},
                )
                await connection.execute(statement, rows)
            await connection.execute(
                update(RunningUsage).where(RunningUsage.instance_id == instance_id).values(beat_at=now)
            )
        return gone

    async def _present(self, connection: AsyncConnection, request_ids: Collection[str]) -> set[str]:
        rows = await connection.execute(
            select(RunningUsage.request_id).where(RunningUsage.request_id.in_(list(request_ids)))
        )
        return {row[0] for row in rows}

    async def instances(self) -> dict[str, datetime]:
        """Instances with checkpoints here, and their last heartbeat."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(RunningUsage.instance_id, func.max(RunningUsage.beat_at)).group_by(
                    RunningUsage.instance_id
                )
            )
            return {instance: beat for instance, beat in rows}

    async def settle(self, instance_id: str) -> Recovered:
        """Settle a dead instance's checkpoints: each one's record written (unless its request has one)
        and charged, then the checkpoints deleted (a crash in between: the next settle skips them)."""
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(RunningUsage.request_id, RunningUsage.record).where(
                        RunningUsage.instance_id == instance_id
                    )
                )
            ).all()
        settled = billed = 0
        for _, record in rows:  # one at a time: what each charged is known only if it was new
            if await self._record([record.encode()]):
                settled += 1
                billed += int(orjson.loads(record)["cost_nano"])
        if rows:
            async with self.engine.begin() as connection:
                settled_ids = [request_id for request_id, _ in rows]
                await connection.execute(delete(RunningUsage).where(RunningUsage.request_id.in_(settled_ids)))
        return Recovered(settled, billed)

    @staticmethod
    def stale(beat_at: datetime, window: timedelta) -> bool:
        beat = beat_at if beat_at.tzinfo else beat_at.replace(tzinfo=utcnow().tzinfo)
        return utcnow() - beat > window
