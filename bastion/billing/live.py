"""The hot-path state: per-key rate limits and per-account credit, admitted and settled atomically.

`RedisLive` keeps it in Redis (shared by every process and instance): one Lua script admits (revocation,
request and token buckets, credit reservation) and one settles (release, charge, token true-up, usage
record appended to the ledger stream), each one round trip. `MemoryLive` is the same arithmetic in one
process, for the embedded default.

Per account: `credit` (credits ever added, with the version of the newest credit transaction), `spent`
(usage charged) and `reserved` (worst cases of requests in flight). Available = credit - spent - reserved.
A reservation whose gateway died is released once its TTL passes.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis

from bastion.billing.channel import RedisChannel, Script
from bastion.db.ledger_sql import encode_row
from bastion.db.store import CreditState, UsageRow

RESERVATION_TTL_MS = 15 * 60 * 1000
T = TypeVar("T")

# Admission codes, as admit.lua returns them.
ADMITTED, REVOKED, UNKNOWN_ACCOUNT, TOO_LARGE = 0, 1, 2, 3
REQUEST_LIMIT, TOKEN_LIMIT, CREDIT_IN_FLIGHT, CREDIT_EXHAUSTED = 4, 5, 6, 7


@dataclass(frozen=True, slots=True)
class AdmitResult:
    code: int
    requests_remaining: int
    requests_reset_ms: int
    tokens_remaining: int
    tokens_reset_ms: int
    retry_ms: int
    available_nano: int
    balance_nano: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """One admitted request's hold: what to release and true up at settlement."""

    key_id: str
    account_id: str
    member: str  # "<request id>|<nano>": unique, and carries its amount for expiry
    nano: int
    tokens: int
    tpm: int


def reservation(
    key_id: str, account_id: str, request_id: str, nano: int, tokens: int, tpm: int
) -> Reservation:
    return Reservation(key_id, account_id, f"{request_id}|{nano}", nano, tokens, tpm)


class PendingAdmission:
    """An admission sent to the live state. Awaiting it gives the result; `on_admitted(callback)` calls
    `callback` from the event loop the moment the answer arrives, if it admits, ahead of the task that
    awaits it (which still gets the result, refusals included, the usual way)."""

    __slots__ = ("_admits", "_answer", "_result")

    def __init__(
        self,
        answer: asyncio.Future[Any],
        admits: Callable[[Any], bool],
        result: Awaitable[AdmitResult],
    ) -> None:
        self._answer, self._admits, self._result = answer, admits, result

    def __await__(self) -> Generator[Any, None, AdmitResult]:
        return self._result.__await__()

    def on_admitted(self, callback: Callable[[], None]) -> None:
        admits = self._admits

        def answered(answer: asyncio.Future[Any]) -> None:
            if not answer.cancelled() and answer.exception() is None and admits(answer.result()):
                callback()

        self._answer.add_done_callback(answered)


class LiveState(ABC):
    async def start(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def send_admit(self, hold: Reservation, rpm: int) -> PendingAdmission:
        """Start the admission now (with Redis: the script is sent before this returns); await the
        result, after other work if there is some."""

    async def admit(self, hold: Reservation, rpm: int) -> AdmitResult:
        return await self.send_admit(hold, rpm)

    @abstractmethod
    async def peek(self, key_id: str, rpm: int, tpm: int) -> AdmitResult:
        """The key's buckets now, consuming nothing (for answers that admit nothing)."""

    @abstractmethod
    def send_settle(
        self, hold: Reservation, cost_nano: int, tokens_used: int, record: UsageRow
    ) -> Awaitable[int]:
        """Start the settlement now: charge `cost_nano`, release the hold, record the usage; the
        awaitable gives the balance after it."""

    async def settle(self, hold: Reservation, cost_nano: int, tokens_used: int, record: UsageRow) -> int:
        return await self.send_settle(hold, cost_nano, tokens_used, record)

    @abstractmethod
    async def load_account(self, account_id: str, state: CreditState) -> None:
        """Give Redis the account's figures from the database (first use, or after a top-up)."""

    @abstractmethod
    async def revoke(self, key_id: str) -> None:
        """From now on every admission for this key answers REVOKED."""


class RedisLive(LiveState):
    """The scripts run on `channel` (the hot path's pipelined connection); `redis` (redis-py) serves the
    rest: the ledger stream, the shared key cache, revocation markers, readiness."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.redis = aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)
        self.channel = RedisChannel(url)
        self.prefix = prefix
        self.stream = f"{prefix}ledger"
        scripts = resources.files("bastion.billing")
        buckets = scripts.joinpath("buckets.lua").read_text()

        def script(name: str, prelude: str = buckets) -> Script:
            return Script.of(prelude + scripts.joinpath(name).read_text())

        self._admit = script("admit.lua")
        self._settle = script("settle.lua")
        self._peek = script("peek.lua")
        self._load = script("load_account.lua", prelude="")

    async def start(self) -> None:
        await self.redis.ping()
        for script in (self._admit, self._settle, self._load, self._peek):
            await self.channel.call(("SCRIPT", "LOAD", script.source))

    async def close(self) -> None:
        await self.channel.close()
        await self.redis.aclose()

    def _keys(self, hold: Reservation) -> list[str]:
        p = self.prefix
        return [f"{p}bucket:{hold.key_id}", f"{p}account:{hold.account_id}", f"{p}holds:{hold.account_id}"]

    def send_admit(self, hold: Reservation, rpm: int) -> PendingAdmission:
        keys = [*self._keys(hold), f"{self.prefix}revoked:{hold.key_id}"]
        args = [rpm, hold.tpm, hold.tokens, hold.nano, hold.member, RESERVATION_TTL_MS]
        call = self.channel.submit_script(self._admit, keys, args)
        return PendingAdmission(call.reply, _reply_admits, _admit_result(call))

    async def peek(self, key_id: str, rpm: int, tpm: int) -> AdmitResult:
        answer = await self.channel.evalsha(self._peek, [f"{self.prefix}bucket:{key_id}"], [rpm, tpm])
        return AdmitResult(*answer)

    def send_settle(
        self, hold: Reservation, cost_nano: int, tokens_used: int, record: UsageRow
    ) -> Awaitable[int]:
        keys = [*self._keys(hold), self.stream]
        args = [hold.member, hold.nano, cost_nano, tokens_used - hold.tokens, hold.tpm, encode_row(record)]
        return self.channel.submit_script(self._settle, keys, args)

    async def load_account(self, account_id: str, state: CreditState) -> None:
        keys = [f"{self.prefix}account:{account_id}"]
        await self.channel.evalsha(self._load, keys, [state.credits_nano, state.version, state.usage_nano])

    async def revoke(self, key_id: str) -> None:
        await self.redis.set(f"{self.prefix}revoked:{key_id}", b"1")


@dataclass(slots=True)
class _Bucket:
    requests: float
    requests_at: float
    tokens: float
    tokens_at: float

    def refill_requests(self, rpm: int, now: float) -> None:
        self.requests = min(rpm, self.requests + (now - self.requests_at) * rpm / 60000)
        self.requests_at = now

    def refill_tokens(self, tpm: int, now: float) -> None:
        self.tokens = min(tpm, self.tokens + (now - self.tokens_at) * tpm / 60000)
        self.tokens_at = now


@dataclass(slots=True)
class _Account:
    credit: int
    version: int
    spent: int
    reserved: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # member -> (nano, expiry ms)


class MemoryLive(LiveState):
    """`RedisLive`'s semantics in one process (no Redis): the embedded default."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._accounts: dict[str, _Account] = {}
        self._revoked: set[str] = set()
        self.pending: list[UsageRow] = []  # drained by the ledger writer

    def send_admit(self, hold: Reservation, rpm: int) -> PendingAdmission:
        answer = _ready(self._admit_now(hold, rpm))
        return PendingAdmission(answer, _result_admits, answer)

    def _admit_now(self, hold: Reservation, rpm: int) -> AdmitResult:
        now = time.monotonic() * 1000
        account = self._accounts.get(hold.account_id)
        if hold.key_id in self._revoked:
            return AdmitResult(REVOKED, 0, 0, 0, 0, 0, 0, 0)
        if account is None:
            return AdmitResult(UNKNOWN_ACCOUNT, 0, 0, 0, 0, 0, 0, 0)
        for member, (nano, expiry) in list(account.holds.items()):
            if expiry <= now:
                del account.holds[member]
                account.reserved -= nano
        bucket = self._bucket(hold.key_id, rpm, hold.tpm, now)
        bucket.refill_requests(rpm, now)
        bucket.refill_tokens(hold.tpm, now)
        balance = account.credit - account.spent
        available = balance - account.reserved

        def answer(code: int, retry_ms: float) -> AdmitResult:
            return AdmitResult(
                code,
                math.floor(max(bucket.requests, 0)),
                math.ceil((rpm - bucket.requests) * 60000 / rpm),
                math.floor(max(bucket.tokens, 0)),
                math.ceil((hold.tpm - bucket.tokens) * 60000 / hold.tpm),
                math.ceil(retry_ms),
                available,
                balance,
            )

        if hold.tokens > hold.tpm:
            return answer(TOO_LARGE, 0)
        if bucket.requests < 1:
            return answer(REQUEST_LIMIT, (1 - bucket.requests) * 60000 / rpm)
        if bucket.tokens < hold.tokens:
            return answer(TOKEN_LIMIT, (hold.tokens - bucket.tokens) * 60000 / hold.tpm)
        if available < hold.nano:
            if balance >= hold.nano:
                return answer(CREDIT_IN_FLIGHT, 1000)
            return answer(CREDIT_EXHAUSTED, 0)
        bucket.requests -= 1
        bucket.tokens -= hold.tokens
        account.reserved += hold.nano
        account.holds[hold.member] = (hold.nano, now + RESERVATION_TTL_MS)
        available -= hold.nano
        return answer(ADMITTED, 0)

    async def peek(self, key_id: str, rpm: int, tpm: int) -> AdmitResult:
        now = time.monotonic() * 1000
        bucket = self._bucket(key_id, rpm, tpm, now)
        bucket.refill_requests(rpm, now)
        bucket.refill_tokens(tpm, now)
        return AdmitResult(
            ADMITTED,
            math.floor(max(bucket.requests, 0)),
            math.ceil((rpm - bucket.requests) * 60000 / rpm),
            math.floor(max(bucket.tokens, 0)),
            math.ceil((tpm - bucket.tokens) * 60000 / tpm),
            0,
            0,
            0,
        )

    def _bucket(self, key_id: str, rpm: int, tpm: int, now: float) -> _Bucket:
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(rpm, now, tpm, now)
        return bucket

    def send_settle(
        self, hold: Reservation, cost_nano: int, tokens_used: int, record: UsageRow
    ) -> Awaitable[int]:
        return _ready(self._settle_now(hold, cost_nano, tokens_used, record))

    def _settle_now(self, hold: Reservation, cost_nano: int, tokens_used: int, record: UsageRow) -> int:
        account = self._accounts[hold.account_id]
        released = account.holds.pop(hold.member, None)
        if released is not None:
            account.reserved -= released[0]
        account.spent += cost_nano
        difference = tokens_used - hold.tokens
        bucket = self._buckets.get(hold.key_id)
        if difference and bucket is not None:
            bucket.refill_tokens(hold.tpm, time.monotonic() * 1000)
            bucket.tokens = min(hold.tpm, bucket.tokens - difference)
        self.pending.append(record)
        return account.credit - account.spent

    async def load_account(self, account_id: str, state: CreditState) -> None:
        account = self._accounts.get(account_id)
        if account is None:
            self._accounts[account_id] = _Account(state.credits_nano, state.version, state.usage_nano)
        elif state.version > account.version:
            account.credit, account.version = state.credits_nano, state.version

    async def revoke(self, key_id: str) -> None:
        self._revoked.add(key_id)


async def _admit_result(reply: Awaitable[list[int]]) -> AdmitResult:
    return AdmitResult(*await reply)


def _reply_admits(reply: Any) -> bool:
    return isinstance(reply, list) and bool(reply) and reply[0] == ADMITTED


def _result_admits(result: Any) -> bool:
    return isinstance(result, AdmitResult) and result.code == ADMITTED


def _ready(value: T) -> asyncio.Future[T]:
    """An awaitable already holding `value` (awaiting it does not yield to the event loop)."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future
