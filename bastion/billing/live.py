"""The hot-path state: per-key rate limits and per-account credit, admitted and settled atomically.

`RedisLive` keeps it in Redis (shared by every process and instance): one Lua script admits (revocation,
request and token buckets, credit reservation) and one settles (release, charge, token true-up, usage
record appended to the ledger stream), each one round trip. `MemoryLive` is the same arithmetic in one
process, for the embedded default.

Per account: `credit` (credits ever added, with the version of the newest credit transaction), `spent`
(usage charged) and `reserved` (worst cases of requests in flight). Available = credit - spent - reserved.
Per key: its spend in its budget period (kept under the period's id, loaded from the ledger when Redis
does not have it), what its requests in flight have reserved, and those requests (their count is the
key's concurrency). A reservation whose gateway died is released once its TTL passes.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bastion.billing.channel import Arg, Script
from bastion.billing.layout import KeyLayout
from bastion.billing.redis_engines import Channel, check_mode, open_channel
from bastion.billing.redis_target import RedisSetupError, RedisTarget, client_for, parse_redis_url
from bastion.db.ledger_sql import encode_row
from bastion.db.refusals import LastRefusal, RefusalTally, at_ms, day_number, tally_of
from bastion.db.store import CreditState, UsageRow

RESERVATION_TTL_MS = 15 * 60 * 1000
REPLICA_WAIT_MS = 100  # behind Sentinel: how long a settlement waits for a replica to have it
SPEND_KEPT_MS = 2 * 24 * 3600 * 1000  # a finished period's spend stays this long (for late settlements)
T = TypeVar("T")

# Admission codes, as admit.lua returns them.
ADMITTED, REVOKED, UNKNOWN_ACCOUNT, TOO_LARGE = 0, 1, 2, 3
REQUEST_LIMIT, TOKEN_LIMIT, CREDIT_IN_FLIGHT, CREDIT_EXHAUSTED = 4, 5, 6, 7
KEY_CHANGED, UNKNOWN_KEY_SPEND, BUDGET_IN_FLIGHT, BUDGET_EXHAUSTED, TOO_MANY_IN_FLIGHT = 8, 9, 10, 11, 12
# The refusals among them, and the error code each is counted (and answered) under, as admit.lua has it.
REFUSED_AS = {
    TOO_LARGE: "rate_limit_exceeded",
    REQUEST_LIMIT: "rate_limit_exceeded",
    TOKEN_LIMIT: "rate_limit_exceeded",
    TOO_MANY_IN_FLIGHT: "rate_limit_exceeded",
    CREDIT_IN_FLIGHT: "insufficient_funds",
    CREDIT_EXHAUSTED: "insufficient_funds",
    BUDGET_IN_FLIGHT: "key_budget_exceeded",
    BUDGET_EXHAUSTED: "key_budget_exceeded",
}


@dataclass(slots=True, unsafe_hash=True)  # per request: not frozen (see PERFORMANCE in README)
class AdmitResult:
    code: int
    requests_remaining: int
    requests_reset_ms: int
    tokens_remaining: int
    tokens_reset_ms: int
    retry_ms: int
    available_nano: int
    balance_nano: int
    key_spent_nano: int = 0  # the key's spend in its current period
    key_reserved_nano: int = 0  # held by its requests in flight
    in_flight: int = 0  # its requests in flight


@dataclass(slots=True, unsafe_hash=True)  # per request: not frozen (see PERFORMANCE in README)
class Reservation:
    """One admitted request's hold: what to release and true up at settlement, and the key's limits it
    was admitted under."""

    key_id: str
    account_id: str
    member: str  # "<request id>|<nano>": unique, and carries its amount for expiry
    nano: int
    tokens: int
    tpm: int
    period: str = "total"  # the id of the key's spend period at admission
    budget_nano: int | None = None
    max_parallel: int | None = None
    version: int = 0  # the key's settings version it was admitted under
    checkpointed: bool = False  # its running usage is in the live state (a stream's; checkpoints.py)


def reservation(
    key_id: str,
    account_id: str,
    request_id: str,
    nano: int,
    tokens: int,
    tpm: int,
    period: str = "total",
    budget_nano: int | None = None,
    max_parallel: int | None = None,
    version: int = 0,
) -> Reservation:
    member = f"{request_id}|{nano}"
    return Reservation(
        key_id, account_id, member, nano, tokens, tpm, period, budget_nano, max_parallel, version
    )


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """A key's figures now, consuming nothing (`GET /v1/key`); None where the live state has not got
    them (the account's or the period's: load them, ask again)."""

    buckets: AdmitResult
    available_nano: int | None
    key_spent_nano: int | None
    key_reserved_nano: int
    in_flight: int
    refused_today: int = 0  # requests of this key refused since 00:00 UTC
    last_refusal: LastRefusal | None = None


@dataclass(frozen=True, slots=True)
class LiveBalance:
    """An account's money as admission sees it now: credits minus usage charged, and what the requests
    in flight hold (the dashboard's figures)."""

    balance_nano: int
    reserved_nano: int

    @property
    def available_nano(self) -> int:
        return self.balance_nano - self.reserved_nano


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
    async def peek(
        self, key_id: str, account_id: str, rpm: int, tpm: int, refused: str | None = None
    ) -> AdmitResult:
        """The key's buckets now, consuming nothing (for answers that admit nothing); with `refused`
        (the error code of a request refused before admission), that refusal is counted too."""

    @abstractmethod
    async def take_refusals(self) -> list[RefusalTally]:
        """The refusals counted since the last take (admissions refused, and `peek(refused=...)`), per
        day, key and code, for the database; taken, they are no longer here."""

    @abstractmethod
    async def return_refusals(self, tallies: list[RefusalTally]) -> None:
        """Tallies taken for a database write that failed, given back for the next one."""

    @abstractmethod
    def send_settle(
        self, hold: Reservation, cost_nano: int, tokens_used: int, record: UsageRow, period: str
    ) -> Awaitable[int | list[int]]:
        """Start the settlement now: charge `cost_nano` (to the account, and to the key's spend in
        `period`, the current one), release the hold, record the usage; the awaitable gives the balance
        after it, or `[balance]` if an orphan sweep had settled the request already from its checkpoint
        (nothing charged again: `settled_by_sweep`)."""

    async def settle(
        self, hold: Reservation, cost_nano: int, tokens_used: int, record: UsageRow, period: str = "total"
    ) -> int | list[int]:
        return await self.send_settle(hold, cost_nano, tokens_used, record, period)

    @abstractmethod
    async def load_key_spend(
        self, key_id: str, account_id: str, period: str, spent_nano: int, expires_epoch: float
    ) -> None:
        """Give the live state a key's spend in `period`, from the ledger, unless it has it already."""

    @abstractmethod
    async def key_changed(
        self, key_id: str, account_id: str, version: int, key_hash: str | None = None
    ) -> None:
        """The key's settings are at `version` now: admissions under an older one reload the key (and
        the shared key cache forgets it)."""

    @abstractmethod
    async def key_status(self, key_id: str, account_id: str, period: str, rpm: int, tpm: int) -> KeyStatus:
        """The key's buckets, spend and requests in flight, and its account's available credit."""

    @abstractmethod
    async def load_account(self, account_id: str, state: CreditState) -> None:
        """Give Redis the account's figures from the database (first use, or after a top-up)."""

    @abstractmethod
    async def revoke(self, key_id: str, account_id: str) -> None:
        """From now on every admission for this key answers REVOKED."""

    @abstractmethod
    async def balance(self, account_id: str) -> LiveBalance | None:
        """The account's live balance and reservations; None when the live state has not loaded it."""


class RedisLive(LiveState):
    """The scripts run on `channel` (the hot path's pipelined connection, or one per master of a
    cluster); `redis` (redis-py's client for the same target) serves the rest: the shared key cache,
    revocation markers, balances, readiness. Key names: `layout.py`."""

    def __init__(self, target: RedisTarget | str, prefix: str) -> None:
        self.target = parse_redis_url(target) if isinstance(target, str) else target
        self.layout = KeyLayout(prefix, self.target.tagged)
        self.redis = client_for(self.target)
        self.channel = self.open_channel()
        scripts = resources.files("bastion.billing")
        buckets = scripts.joinpath("buckets.lua").read_text()

        def script(name: str, prelude: str = buckets) -> Script:
            return Script.of(prelude + scripts.joinpath(name).read_text())

        counting = buckets + scripts.joinpath("refusal_counts.lua").read_text()
        self._admit = script("admit.lua", prelude=counting)
        settling = buckets + scripts.joinpath("settle_fn.lua").read_text()
        self._settle = script("settle.lua", prelude=settling)
        self.sweep_script = script("sweep.lua", prelude=settling)
        self.checkpoint_script = script("checkpoint.lua")
        self.instance_id = ""  # this process's, once its checkpoints start (bastion/billing/checkpoints.py)
        self._peek = script("peek.lua", prelude=counting)
        self._status = script("key_status.lua")
        self._load = script("load_account.lua", prelude="")
        self._load_spend = script("load_key_spend.lua", prelude="")
        self._take_refusals = script("take_refusals.lua", prelude="")
        self._return_refusals = script("return_refusals.lua", prelude="")

    @classmethod
    async def connect(cls, url: str, prefix: str) -> RedisLive:
        """A started RedisLive, or RedisSetupError saying in one line why not: a bad URL, the wrong kind
        of server for its scheme, none reachable (what the CLI and `bastion serve` tell an operator)."""
        try:
            live = cls(url, prefix)
        except ValueError as exc:
            raise RedisSetupError(f"BASTION_REDIS_URL: {exc}") from None
        try:
            await live.start()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            await live.close()
            raise RedisSetupError(f"cannot reach {live.target.describe()}: {exc}") from None
        except BaseException:
            await live.close()
            raise
        return live

    def open_channel(self) -> Channel:
        """A channel of its own to this target (the ledger reads on one)."""
        return open_channel(self.target)

    async def start(self) -> None:
        await self.channel.start()
        await check_mode(self.target, self.redis)
        scripts = (
            self._admit,
            self._settle,
            self._load,
            self._peek,
            self._status,
            self._load_spend,
            self._take_refusals,
            self._return_refusals,
            self.sweep_script,
            self.checkpoint_script,
        )
        await self.channel.load_scripts(scripts)

    async def close(self) -> None:
        await self.channel.close()
        await self.redis.aclose()

    def send_admit(self, hold: Reservation, rpm: int) -> PendingAdmission:
        keys = self.layout.admit_keys(hold.account_id, hold.key_id, hold.period)
        budget = -1 if hold.budget_nano is None else hold.budget_nano
        args = [rpm, hold.tpm, hold.tokens, hold.nano, hold.member, RESERVATION_TTL_MS]
        args += [hold.version, budget, hold.max_parallel or 0, hold.account_id, hold.key_id]
        call = self.channel.submit_script(self._admit, keys, args)
        return PendingAdmission(call.reply, _reply_admits, _admit_result(call))

    async def peek(
        self, key_id: str, account_id: str, rpm: int, tpm: int, refused: str | None = None
    ) -> AdmitResult:
        layout = self.layout
        head = layout.head(account_id)
        keys, args = [layout.bucket(head, key_id)], [rpm, tpm]
        if refused is not None:
            keys += [layout.refused(head, key_id), layout.tallies(account_id)]
            args += [refused, account_id, key_id]
        return AdmitResult(*await self.channel.evalsha(self._peek, keys, args))

    async def take_refusals(self) -> list[RefusalTally]:
        names = self.layout.refusal_tallies
        taken = await asyncio.gather(*(self.channel.evalsha(self._take_refusals, [n], []) for n in names))
        return [tally for flat in taken for tally in _tallies(flat)]

    async def return_refusals(self, tallies: list[RefusalTally]) -> None:
        by_name: dict[str, list[Arg]] = {}
        for t in tallies:
            tally = f"{day_number(t.day)}|{t.account_id}|{t.key_id}|{t.code}"
            by_name.setdefault(self.layout.tallies(t.account_id), []).extend(
                (tally, t.count, int(t.last_at.timestamp() * 1000))
            )
        await asyncio.gather(
            *(self.channel.evalsha(self._return_refusals, [name], args) for name, args in by_name.items())
        )

    def send_settle(
        self, hold: Reservation, cost_nano: int, tokens_used: int, record: UsageRow, period: str
    ) -> Awaitable[int | list[int]]:
        keys = self.layout.settle_keys(hold.account_id, hold.key_id, period)
        if hold.checkpointed:  # its checkpoint goes with it, or says a sweep settled it already
            keys.append(self.layout.running(self.layout.head(hold.account_id), self.instance_id))
        args = [hold.member, hold.nano, cost_nano, tokens_used - hold.tokens, hold.tpm, encode_row(record)]
        # Where a replica may be promoted in its server's place, the settlement waits for one to have
        # it (what a promoted replica lacks would be lost).
        if self.channel.has_replica(keys[0]):
            return asyncio.ensure_future(self._settle_kept(keys, args))
        return self.channel.submit_script(self._settle, keys, args)

    async def _settle_kept(self, keys: list[str], args: list[Arg]) -> int | list[int]:
        balance, replicas = await self.channel.run_then_wait(self._settle, keys, args, REPLICA_WAIT_MS)
        if replicas < 1:
            raise Unreplicated("no replica acknowledged the settlement")
        return balance  # type: ignore[no-any-return]

    async def load_key_spend(
        self, key_id: str, account_id: str, period: str, spent_nano: int, expires_epoch: float
    ) -> None:
        expiry_ms = 0 if expires_epoch == float("inf") else int(expires_epoch * 1000) + SPEND_KEPT_MS
        keys = [self.layout.key_spend(self.layout.head(account_id), key_id, period)]
        await self.channel.evalsha(self._load_spend, keys, [spent_nano, expiry_ms])

    async def key_changed(
        self, key_id: str, account_id: str, version: int, key_hash: str | None = None
    ) -> None:
        await self.redis.set(
            self.layout.key_version(self.layout.head(account_id), key_id), str(version).encode()
        )
        if key_hash is not None:
            await self.redis.delete(self.layout.key_cache(key_hash))

    async def key_status(self, key_id: str, account_id: str, period: str, rpm: int, tpm: int) -> KeyStatus:
        layout = self.layout
        head = layout.head(account_id)
        keys = [
            layout.bucket(head, key_id),
            layout.account(head, account_id),
            layout.key_spend(head, key_id, period),
            layout.key_holds(head, key_id),
            layout.in_flight(head, key_id),
            layout.refused(head, key_id),
        ]
        reply = await self.channel.evalsha(self._status, keys, [rpm, tpm])
        buckets = AdmitResult(*reply[:8])
        available = reply[6] if reply[8] else None
        spent = reply[9] if reply[10] else None
        last = LastRefusal(reply[15].decode(), at_ms(reply[14])) if reply[14] else None
        return KeyStatus(buckets, available, spent, reply[11], reply[12], reply[13], last)

    async def load_account(self, account_id: str, state: CreditState) -> None:
        keys = [self.layout.account(self.layout.head(account_id), account_id)]
        await self.channel.evalsha(self._load, keys, [state.credits_nano, state.version, state.usage_nano])

    async def revoke(self, key_id: str, account_id: str) -> None:
        await self.redis.set(self.layout.revoked(self.layout.head(account_id), key_id), b"1")

    async def balance(self, account_id: str) -> LiveBalance | None:
        name = self.layout.account(self.layout.head(account_id), account_id)
        credit, spent, reserved = await self.redis.hmget(name, "credit", "spent", "reserved")
        if credit is None:
            return None
        return LiveBalance(int(credit) - int(spent or 0), int(reserved or 0))


class Unreplicated(RedisConnectionError):
    """Settled on the primary, but no replica has it yet: a failover now could lose it, so its record
    is written to the database as well (idempotent by request id)."""


def _tallies(flat: list[bytes]) -> list[RefusalTally]:
    """take_refusals.lua's answer: c|<day>|<account>|<key>|<code> -> count, t|... -> last epoch ms."""
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    tallies = []
    for name, count in fields.items():
        if name.startswith(b"c|"):
            day, account_id, key_id, code = name[2:].decode().split("|")
            last_ms = int(fields.get(b"t|" + name[2:], 0))
            tallies.append(tally_of(int(day), account_id, key_id, code, int(count), last_ms))
    return tallies


async def _admit_result(reply: Awaitable[list[int]]) -> AdmitResult:
    return AdmitResult(*await reply)


def _reply_admits(reply: Any) -> bool:
    return isinstance(reply, list) and bool(reply) and reply[0] == ADMITTED


def settled_by_sweep(answer: Any) -> bool:
    """A settlement's answer saying an orphan sweep had settled the request already (settle.lua)."""
    return isinstance(answer, list)


def result_admits(result: Any) -> bool:
    return isinstance(result, AdmitResult) and result.code == ADMITTED


def ready(value: T) -> asyncio.Future[T]:
    """An awaitable already holding `value` (awaiting it does not yield to the event loop)."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future
