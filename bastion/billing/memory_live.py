"""`RedisLive`'s semantics in one process (no Redis): the embedded default. The same arithmetic as the
Lua scripts (admit.lua, settle.lua, key_status.lua), on dictionaries."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from bastion.billing.live import (
    ADMITTED,
    BUDGET_EXHAUSTED,
    BUDGET_IN_FLIGHT,
    CREDIT_EXHAUSTED,
    CREDIT_IN_FLIGHT,
    KEY_CHANGED,
    REFUSED_AS,
    REQUEST_LIMIT,
    RESERVATION_TTL_MS,
    REVOKED,
    TOKEN_LIMIT,
    TOO_LARGE,
    TOO_MANY_IN_FLIGHT,
    UNKNOWN_ACCOUNT,
    UNKNOWN_KEY_SPEND,
    AdmitResult,
    KeyStatus,
    LiveBalance,
    LiveState,
    PendingAdmission,
    Reservation,
    ready,
    result_admits,
)
from bastion.db.refusals import LastRefusal, RefusalTally, at_ms, day_number, tally_of
from bastion.db.store import CreditState, UsageRow

_DAY_MS = 86_400_000


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

    def remaining(self, code: int, rpm: int, tpm: int, retry_ms: float) -> tuple[int, ...]:
        return (
            code,
            math.floor(max(self.requests, 0)),
            math.ceil((rpm - self.requests) * 60000 / rpm),
            math.floor(max(self.tokens, 0)),
            math.ceil((tpm - self.tokens) * 60000 / tpm),
            math.ceil(retry_ms),
        )


@dataclass(slots=True)
class _Holds:
    """Reservations of requests in flight: the total, and each one's amount and expiry."""

    reserved: int = 0
    members: dict[str, tuple[int, float]] = field(default_factory=dict)  # member -> (nano, expiry ms)

    def expire(self, now: float) -> None:
        for member, (nano, expiry) in list(self.members.items()):
            if expiry <= now:
                del self.members[member]
                self.reserved -= nano

    def add(self, member: str, nano: int, now: float) -> None:
        self.reserved += nano
        self.members[member] = (nano, now + RESERVATION_TTL_MS)

    def release(self, member: str) -> None:
        released = self.members.pop(member, None)
        if released is not None:
            self.reserved -= released[0]


@dataclass(slots=True)
class _Account:
    credit: int
    version: int
    spent: int
    holds: _Holds = field(default_factory=_Holds)


class MemoryLive(LiveState):
    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._accounts: dict[str, _Account] = {}
        self._revoked: set[str] = set()
        self._versions: dict[str, int] = {}
        self._spent: dict[str, tuple[str, int]] = {}  # key id -> (its current period, spend in it)
        self._key_holds: dict[str, _Holds] = {}
        self.pending: list[UsageRow] = []  # drained by the ledger writer
        # refusal_counts.lua's: per key (day, refused that day, last ms, last code); per (day, account,
        # key, code) [count, last ms], taken by the ledger writer.
        self._refused: dict[str, tuple[int, int, float, str]] = {}
        self._tallies: dict[tuple[int, str, str, str], list[float]] = {}

    def _count_refusal(self, account_id: str, key_id: str, code: str) -> None:
        now = time.time() * 1000
        day = int(now // _DAY_MS)
        tally = self._tallies.setdefault((day, account_id, key_id, code), [0, now])
        tally[0] += 1
        tally[1] = now
        known = self._refused.get(key_id)
        today = known[1] if known is not None and known[0] == day else 0
        self._refused[key_id] = (day, today + 1, now, code)

    def send_admit(self, hold: Reservation, rpm: int) -> PendingAdmission:
        result = self._admit_now(hold, rpm)
        refused = REFUSED_AS.get(result.code)
        if refused is not None:
            self._count_refusal(hold.account_id, hold.key_id, refused)
        answer = ready(result)
        return PendingAdmission(answer, result_admits, answer)

    def _admit_now(self, hold: Reservation, rpm: int) -> AdmitResult:
        now = time.monotonic() * 1000
        if hold.key_id in self._revoked:
            return AdmitResult(REVOKED, 0, 0, 0, 0, 0, 0, 0)
        if self._versions.get(hold.key_id, 0) > hold.version:
            return AdmitResult(KEY_CHANGED, 0, 0, 0, 0, 0, 0, 0)
        account = self._accounts.get(hold.account_id)
        if account is None:
            return AdmitResult(UNKNOWN_ACCOUNT, 0, 0, 0, 0, 0, 0, 0)
        spend = self._spent.get(hold.key_id)
        if spend is None or spend[0] != hold.period:
            return AdmitResult(UNKNOWN_KEY_SPEND, 0, 0, 0, 0, 0, 0, 0)
        key_spent = spend[1]
        account.holds.expire(now)
        key_holds = self._key_holds.setdefault(hold.key_id, _Holds())
        key_holds.expire(now)
        bucket = self._bucket(hold.key_id, rpm, hold.tpm, now)
        bucket.refill_requests(rpm, now)
        bucket.refill_tokens(hold.tpm, now)
        balance = account.credit - account.spent
        available = balance - account.holds.reserved
        in_flight = len(key_holds.members)

        def answer(code: int, retry_ms: float) -> AdmitResult:
            figures = (available, balance, key_spent, key_holds.reserved, len(key_holds.members))
            return AdmitResult(*bucket.remaining(code, rpm, hold.tpm, retry_ms), *figures)

        if hold.tokens > hold.tpm:
            return answer(TOO_LARGE, 0)
        if hold.max_parallel and in_flight >= hold.max_parallel:
            return answer(TOO_MANY_IN_FLIGHT, 1000)
        if bucket.requests < 1:
            return answer(REQUEST_LIMIT, (1 - bucket.requests) * 60000 / rpm)
        if bucket.tokens < hold.tokens:
            return answer(TOKEN_LIMIT, (hold.tokens - bucket.tokens) * 60000 / hold.tpm)
        if hold.budget_nano is not None and key_spent + key_holds.reserved + hold.nano > hold.budget_nano:
            if key_spent + hold.nano <= hold.budget_nano:
                return answer(BUDGET_IN_FLIGHT, 1000)
            return answer(BUDGET_EXHAUSTED, 0)
        if available < hold.nano:
            if balance >= hold.nano:
                return answer(CREDIT_IN_FLIGHT, 1000)
            return answer(CREDIT_EXHAUSTED, 0)
        bucket.requests -= 1
        bucket.tokens -= hold.tokens
        account.holds.add(hold.member, hold.nano, now)
        key_holds.add(hold.member, hold.nano, now)
        available -= hold.nano
        return answer(ADMITTED, 0)

    async def peek(
        self, key_id: str, account_id: str, rpm: int, tpm: int, refused: str | None = None
    ) -> AdmitResult:
        if refused is not None:
            self._count_refusal(account_id, key_id, refused)
        now = time.monotonic() * 1000
        bucket = self._bucket(key_id, rpm, tpm, now)
        bucket.refill_requests(rpm, now)
        bucket.refill_tokens(tpm, now)
        return AdmitResult(*bucket.remaining(ADMITTED, rpm, tpm, 0), 0, 0)

    def _bucket(self, key_id: str, rpm: int, tpm: int, now: float) -> _Bucket:
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(rpm, now, tpm, now)
        return bucket

    def send_settle(
        self, hold: Reservation, cost_nano: int, tokens_used: int, record: UsageRow, period: str
    ) -> Awaitable[int | list[int]]:
        return ready(self._settle_now(hold, cost_nano, tokens_used, record, period))

    def _settle_now(
        self, hold: Reservation, cost_nano: int, tokens_used: int, record: UsageRow, period: str
    ) -> int:
        account = self._accounts[hold.account_id]
        account.holds.release(hold.member)
        account.spent += cost_nano
        key_holds = self._key_holds.get(hold.key_id)
        if key_holds is not None:
            key_holds.release(hold.member)
        spend = self._spent.get(hold.key_id)
        if spend is not None and spend[0] == period:  # else loaded from the ledger, which has it by then
            self._spent[hold.key_id] = (period, spend[1] + cost_nano)
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

    async def load_key_spend(
        self, key_id: str, account_id: str, period: str, spent_nano: int, expires_epoch: float
    ) -> None:
        known = self._spent.get(key_id)
        if known is None or known[0] != period:  # a new period replaces the one before
            self._spent[key_id] = (period, spent_nano)

    async def key_changed(
        self, key_id: str, account_id: str, version: int, key_hash: str | None = None
    ) -> None:
        self._versions[key_id] = max(version, self._versions.get(key_id, 0))

    async def key_status(self, key_id: str, account_id: str, period: str, rpm: int, tpm: int) -> KeyStatus:
        now = time.monotonic() * 1000
        account = self._accounts.get(account_id)
        available = None
        if account is not None:
            account.holds.expire(now)
            available = account.credit - account.spent - account.holds.reserved
        holds = self._key_holds.get(key_id) or _Holds()
        holds.expire(now)
        known = self._spent.get(key_id)
        spent = known[1] if known is not None and known[0] == period else None
        buckets = await self.peek(key_id, account_id, rpm, tpm)
        refused_today, last = 0, None
        known_refused = self._refused.get(key_id)
        if known_refused is not None:
            day, count, last_ms, code = known_refused
            refused_today = count if day == int(time.time() * 1000 // _DAY_MS) else 0
            last = LastRefusal(code, at_ms(last_ms))
        return KeyStatus(buckets, available, spent, holds.reserved, len(holds.members), refused_today, last)

    async def take_refusals(self) -> list[RefusalTally]:
        tallies, self._tallies = self._tallies, {}
        return [tally_of(*key, int(count), last) for key, (count, last) in tallies.items()]

    async def return_refusals(self, tallies: list[RefusalTally]) -> None:
        for t in tallies:
            key = (day_number(t.day), t.account_id, t.key_id, t.code)
            tally = self._tallies.setdefault(key, [0, 0.0])
            tally[0] += t.count
            tally[1] = max(tally[1], t.last_at.timestamp() * 1000)

    async def revoke(self, key_id: str, account_id: str) -> None:
        self._revoked.add(key_id)

    async def balance(self, account_id: str) -> LiveBalance | None:
        account = self._accounts.get(account_id)
        if account is None:
            return None
        account.holds.expire(time.monotonic() * 1000)
        return LiveBalance(account.credit - account.spent, account.holds.reserved)
