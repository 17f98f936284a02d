"""The ledger writer: usage records go to the database off the hot path, in batches.

With Redis, settlement appends each record to a stream in the same script that charges the account,
so the record outlives the gateway that produced it: every instance runs a consumer of one group,
writes what it reads, then acknowledges it; entries a dead instance had read are claimed after
`CLAIM_IDLE_MS`. Without Redis, records wait in process memory for at most `FLUSH_SECONDS`.
Writes are idempotent by request id, so a batch delivered twice is charged once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from abc import ABC, abstractmethod

from redis.exceptions import ResponseError

from bastion.billing.live import MemoryLive, RedisLive, decode_usage
from bastion.db.store import Store, UsageRow

log = logging.getLogger("bastion.ledger")

FLUSH_SECONDS = 0.5
BATCH = 500
CLAIM_IDLE_MS = 30_000
GROUP = "ledger"


class LedgerWriter(ABC):
    def __init__(self, store: Store, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bastion-ledger")

    async def close(self) -> None:
        """Stop the loop and write everything still waiting (graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ledger write failed; retrying")
                await asyncio.sleep(self.flush_seconds)

    @abstractmethod
    async def _step(self) -> None: ...

    @abstractmethod
    async def flush(self) -> int:
        """Write every record waiting now; returns how many were newly written."""


class MemoryLedger(LedgerWriter):
    def __init__(self, store: Store, live: MemoryLive, flush_seconds: float = FLUSH_SECONDS) -> None:
        super().__init__(store, flush_seconds)
        self.live = live

    async def _step(self) -> None:
        await asyncio.sleep(self.flush_seconds)
        await self.flush()

    async def flush(self) -> int:
        rows, self.live.pending = self.live.pending, []
        try:
            return await self.store.record_usage(rows) if rows else 0
        except BaseException:
            self.live.pending[:0] = rows  # keep them for the next attempt
            raise


class RedisLedger(LedgerWriter):
    def __init__(self, store: Store, live: RedisLive, flush_seconds: float = FLUSH_SECONDS) -> None:
        super().__init__(store, flush_seconds)
        self.redis = live.redis
        self.stream = live.stream
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"

    async def start(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        await super().start()

    async def _step(self) -> None:
        started = asyncio.get_running_loop().time()
        await self._claim_abandoned()
        # Our own unacknowledged entries first (a write that failed), then new ones.
        written = await self._consume("0", block=None)
        if not written:
            written = await self._consume(">", block=int(self.flush_seconds * 1000))
        if written < BATCH:
            # Caught up: wait out the interval, so a busy gateway writes one batch per interval instead
            # of a transaction (and five Redis commands) for every few records.
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, self.flush_seconds - elapsed))

    async def flush(self) -> int:
        written = 0
        while True:
            pending = await self._consume("0", block=None)
            fresh = await self._consume(">", block=None)
            written += pending + fresh
            if not pending and not fresh:
                return written

    async def _claim_abandoned(self) -> None:
        await self.redis.xautoclaim(self.stream, GROUP, self.consumer, CLAIM_IDLE_MS, "0-0", count=BATCH)

    async def _consume(self, start: str, block: int | None) -> int:
        answer = await self.redis.xreadgroup(
            GROUP, self.consumer, {self.stream: start}, count=BATCH, block=block
        )
        entries = answer[0][1] if answer else []
        ids = [entry_id for entry_id, fields in entries if fields]
        rows: list[UsageRow] = [decode_usage(fields[b"r"]) for _, fields in entries if fields]
        if rows:
            await self.store.record_usage(rows)
        stale = [entry_id for entry_id, fields in entries if not fields]  # deleted under us
        if ids or stale:
            await self.redis.xack(self.stream, GROUP, *ids, *stale)
            await self.redis.xdel(self.stream, *ids, *stale)
        return len(rows)
