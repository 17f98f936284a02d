"""Credit and rate-limit admission over the live state, and settlement from the upstream's usage."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bastion.auth import Principal
from bastion.billing import Admitting, Metered, Outcome, Ticket
from bastion.billing.live import (
    ADMITTED,
    KEY_CHANGED,
    UNKNOWN_ACCOUNT,
    UNKNOWN_KEY_SPEND,
    AdmitResult,
    KeyStatus,
    LiveState,
    Reservation,
    Unreplicated,
    reservation,
    settled_by_sweep,
)
from bastion.billing.meters import Meter
from bastion.billing.refusals import refusal
from bastion.billing.running import Running
from bastion.db.store import Store, UsageRow
from bastion.errors import invalid_api_key, model_not_found
from bastion.periods import Periods, Window
from bastion.proxy.routing import Route
from bastion.ratelimit import ratelimit_headers

log = logging.getLogger("bastion.billing")


class CreditAdmission:
    def __init__(
        self,
        live: LiveState,
        store: Store,
        default_max_output_tokens: int,
        periods: Periods | None = None,
        reload_key: Callable[[str], Awaitable[Principal | None]] | None = None,
    ) -> None:
        self.live = live
        self.store = store
        self.default_max_output_tokens = default_max_output_tokens
        self.periods = periods or Periods()
        self.reload_key = reload_key  # the authenticator's: a key whose settings changed, read again
        self._unreplicated_said = float("-inf")
        self.running: Running | None = None  # the requests in flight (checkpoints.py), once wired

    def begin(
        self,
        principal: Principal,
        route: Route,
        body: dict[str, Any],
        request_id: str,
        endpoint: Metered,
        size: int,
        client_request_id: str | None = None,
    ) -> Admitting:
        """The admission, sent before this returns (to Redis, when there is one); awaiting the result
        gives the ticket or raises the refusal. Work done in between overlaps Redis's answer."""
        metered = endpoint.meter.reserve(body, route.model, self.default_max_output_tokens, size)
        hold = self._hold(principal, request_id, metered)
        answer = self.live.send_admit(hold, principal.rpm)
        ticket = self._ticket(
            answer, principal, route, request_id, endpoint, metered, hold, client_request_id
        )
        return Admitting(ticket, answer.on_admitted)

    async def admit(
        self,
        principal: Principal,
        route: Route,
        body: dict[str, Any],
        request_id: str,
        endpoint: Metered,
        size: int,
        client_request_id: str | None = None,
    ) -> Ticket:
        return await self.begin(principal, route, body, request_id, endpoint, size, client_request_id)

    def _hold(self, principal: Principal, request_id: str, metered: Any) -> Reservation:
        period = self.periods.current(principal.budget_period).id
        return reservation(
            principal.key_id,
            principal.account_id,
            request_id,
            metered.nano,
            metered.tokens,
            principal.tpm,
            period,
            principal.budget_nano,
            principal.max_parallel,
            principal.version,
        )

    async def _ticket(
        self,
        answer: Awaitable[AdmitResult],
        principal: Principal,
        route: Route,
        request_id: str,
        endpoint: Metered,
        metered: Any,
        hold: Reservation,
        client_request_id: str | None,
    ) -> Ticket:
        result = await answer
        # What the live state did not have (after a Redis restart, or on first use) is loaded and the
        # admission asked again; each of these can happen once per request.
        for _ in range(3):
            if result.code == UNKNOWN_ACCOUNT:
                state = await self.store.credit_state(principal.account_id)
                await self.live.load_account(principal.account_id, state)
            elif result.code == UNKNOWN_KEY_SPEND:
                await self._load_key_spend(principal)
            elif result.code == KEY_CHANGED:
                principal = await self._reloaded(principal, route)
                hold = self._hold(principal, request_id, metered)
            else:
                break
            result = await self.live.admit(hold, principal.rpm)
        headers = ratelimit_headers(principal.rpm, principal.tpm, result)
        if result.code != ADMITTED:
            window = self.periods.current(principal.budget_period)
            raise refusal(result, hold, headers, window, self.periods.epoch())
        return Ticket(
            principal,
            route,
            request_id,
            endpoint.kind,
            headers,
            hold,
            metered,
            endpoint.meter,
            time.monotonic(),
            client_request_id,
        )

    async def key_status(self, principal: Principal) -> tuple[KeyStatus, Window]:
        """The key's figures now (GET /v1/key): from the live state, loaded there first if need be."""
        window = self.periods.current(principal.budget_period)
        p = principal
        status = await self.live.key_status(p.key_id, p.account_id, window.id, p.rpm, p.tpm)
        if status.available_nano is None or status.key_spent_nano is None:
            if status.available_nano is None:
                state = await self.store.credit_state(p.account_id)
                await self.live.load_account(p.account_id, state)
            if status.key_spent_nano is None:
                await self._load_key_spend(p)
            status = await self.live.key_status(p.key_id, p.account_id, window.id, p.rpm, p.tpm)
        return status, window

    async def _load_key_spend(self, principal: Principal) -> None:
        window = self.periods.current(principal.budget_period)
        spent = await self.store.key_spend(principal.key_id, window.starts)
        await self.live.load_key_spend(
            principal.key_id, principal.account_id, window.id, spent, window.resets_epoch
        )

    async def _reloaded(self, principal: Principal, route: Route) -> Principal:
        """The key as it is now (its settings changed on some instance since this one cached it)."""
        fresh = await self.reload_key(principal.key_id) if self.reload_key is not None else None
        if fresh is None:
            raise invalid_api_key()
        if not fresh.may_use(route.model.id):
            raise model_not_found(route.model.id)
        return fresh

    async def limit_headers(
        self, principal: Principal, refused: str | None = None
    ) -> list[tuple[bytes, bytes]]:
        """The rate-limit headers for an answer that admitted nothing (a listing, a rejected body);
        `refused`: the error code of a request refused before admission, counted in the same read."""
        p = principal
        now = await self.live.peek(p.key_id, p.account_id, p.rpm, p.tpm, refused)
        return ratelimit_headers(p.rpm, p.tpm, now)

    def bill(self, ticket: Ticket, outcome: Outcome) -> Bill:
        meter: Meter = ticket.meter
        charge = meter.charge(ticket.route.model, ticket.metered, outcome)
        record = UsageRow(
            request_id=ticket.request_id,
            account_id=ticket.principal.account_id,
            key_id=ticket.principal.key_id,
            model=ticket.route.model.id,
            endpoint=ticket.endpoint,
            prompt_tokens=charge.prompt_tokens,
            completion_tokens=charge.completion_tokens,
            cost_nano=charge.cost_nano,
            status=_record_status(outcome),
            latency_ms=round((time.monotonic() - ticket.started) * 1000),
            estimated=charge.estimated,
            created_at=datetime.now(UTC),
            quantity=charge.quantity,
            unit=charge.unit,
            client_request_id=ticket.client_request_id,
        )
        return Bill(record, charge.prompt_tokens + charge.completion_tokens)

    def start_settlement(self, ticket: Ticket, outcome: Outcome, bill: Bill | None = None) -> Settlement:
        """Bill the outcome (unless `bill` is its bill already) and send its settlement now; `settle`
        awaits it. Once sent it is final."""
        bill = bill or self.bill(ticket, outcome)
        record = bill.record
        period = self.periods.current(ticket.principal.budget_period).id
        sent = self.live.send_settle(ticket.hold, record.cost_nano, bill.tokens, record, period)
        return Settlement(record, sent)

    async def settle(self, ticket: Ticket, outcome: Outcome, started: Settlement | None = None) -> UsageRow:
        settlement = started or self.start_settlement(ticket, outcome)
        record = settlement.record
        try:
            answer = await settlement.sent
            if settled_by_sweep(answer):
                log.warning(
                    "request_id=%s was settled from its checkpoint by an orphan sweep: not charged again",
                    record.request_id,
                )
        except Unreplicated:
            # Charged on the primary, but a failover now could lose it: the database gets it too.
            if time.monotonic() >= self._unreplicated_said + 60:
                self._unreplicated_said = time.monotonic()
                log.warning("no Redis replica acknowledges settlements: their records go to the database too")
            await self.store.record_usage([record])
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # The answer is served: its usage must not be lost with Redis. Written straight to the
            # database; the reservation in Redis, if Redis kept it, expires with its TTL.
            log.error(
                "settlement could not reach Redis (%s); request_id=%s written to the database",
                exc,
                record.request_id,
            )
            await self.store.record_usage([record])
            if ticket.hold.checkpointed and self.running is not None:
                self.running.unsettled.append(ticket.hold)  # its checkpoint in Redis must not be swept
        return record


@dataclass(slots=True, unsafe_hash=True)  # per request: not frozen (see PERFORMANCE in README)
class Bill:
    record: UsageRow
    tokens: int  # prompt + completion: what the key's token bucket is trued up to


@dataclass(slots=True, unsafe_hash=True)  # per request: not frozen (see PERFORMANCE in README)
class Settlement:
    """A settlement on its way: the usage record, and the live state's answer to await."""

    record: UsageRow
    sent: Awaitable[int | list[int]]


def _record_status(outcome: Outcome) -> int:
    return 499 if outcome.client_disconnected else outcome.status
