"""Credit and rate-limit admission over the live state, and settlement from the upstream's usage."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bastion.auth import Principal
from bastion.billing import Admitting, Metered, Outcome, Ticket
from bastion.billing.live import (
    ADMITTED,
    CREDIT_EXHAUSTED,
    CREDIT_IN_FLIGHT,
    REQUEST_LIMIT,
    REVOKED,
    TOKEN_LIMIT,
    TOO_LARGE,
    UNKNOWN_ACCOUNT,
    AdmitResult,
    LiveState,
    Reservation,
    reservation,
)
from bastion.billing.meters import Meter
from bastion.db.store import Store, UsageRow
from bastion.errors import ApiError, insufficient_funds, invalid_api_key, rate_limited
from bastion.money import format_usd
from bastion.proxy.routing import Route
from bastion.ratelimit import ratelimit_headers

log = logging.getLogger("bastion.billing")


class CreditAdmission:
    def __init__(self, live: LiveState, store: Store, default_max_output_tokens: int) -> None:
        self.live = live
        self.store = store
        self.default_max_output_tokens = default_max_output_tokens

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
        hold = reservation(
            principal.key_id, principal.account_id, request_id, metered.nano, metered.tokens, principal.tpm
        )
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
        if result.code == UNKNOWN_ACCOUNT:  # first use of this account since Redis started: load it
            state = await self.store.credit_state(principal.account_id)
            await self.live.load_account(principal.account_id, state)
            result = await self.live.admit(hold, principal.rpm)
        headers = ratelimit_headers(principal.rpm, principal.tpm, result)
        if result.code != ADMITTED:
            raise _refusal(result, hold, headers)
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

    async def limit_headers(self, principal: Principal) -> list[tuple[bytes, bytes]]:
        """The rate-limit headers for an answer that admitted nothing (a listing, a rejected body)."""
        now = await self.live.peek(principal.key_id, principal.rpm, principal.tpm)
        return ratelimit_headers(principal.rpm, principal.tpm, now)

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
        return Settlement(record, self.live.send_settle(ticket.hold, record.cost_nano, bill.tokens, record))

    async def settle(self, ticket: Ticket, outcome: Outcome, started: Settlement | None = None) -> UsageRow:
        settlement = started or self.start_settlement(ticket, outcome)
        record = settlement.record
        try:
            await settlement.sent
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # The answer is served: its usage must not be lost with Redis. Written straight to the
            # database; the reservation in Redis, if Redis kept it, expires with its TTL.
            log.error(
                "settlement could not reach Redis (%s); request_id=%s written to the database",
                exc,
                record.request_id,
            )
            await self.store.record_usage([record])
        return record


@dataclass(frozen=True, slots=True)
class Bill:
    record: UsageRow
    tokens: int  # prompt + completion: what the key's token bucket is trued up to


@dataclass(frozen=True, slots=True)
class Settlement:
    """A settlement on its way: the usage record, and the live state's answer to await."""

    record: UsageRow
    sent: Awaitable[int]


def _record_status(outcome: Outcome) -> int:
    return 499 if outcome.client_disconnected else outcome.status


def _refusal(result: AdmitResult, hold: Reservation, ratelimit: list[tuple[bytes, bytes]]) -> ApiError:
    headers = {name.decode(): value.decode() for name, value in ratelimit}
    retry_after = str(max(1, -(-result.retry_ms // 1000)))
    if result.code == REVOKED:
        return invalid_api_key()
    if result.code == TOO_LARGE:
        return rate_limited(
            f"This request may use {hold.tokens} tokens (prompt estimate plus max output), more than this "
            f"key's limit of {hold.tpm} tokens per minute; lower max_tokens.",
            {**headers, "x-should-retry": "false"},
        )
    if result.code == REQUEST_LIMIT:
        return rate_limited(
            f"Rate limit reached: {headers['x-ratelimit-limit-requests']} requests per minute for this key. "
            f"Retry after {retry_after} s.",
            {**headers, "retry-after": retry_after},
        )
    if result.code == TOKEN_LIMIT:
        return rate_limited(
            f"Rate limit reached: {hold.tpm} tokens per minute for this key; this request reserves "
            f"{hold.tokens}. Retry after {retry_after} s.",
            {**headers, "retry-after": retry_after},
        )
    could_cost = format_usd(hold.nano)
    if result.code == CREDIT_IN_FLIGHT:
        return insufficient_funds(
            f"This request could cost up to {could_cost}; the balance is {format_usd(result.balance_nano)}"
            f" but requests in flight hold all but {format_usd(max(result.available_nano, 0))} of it. "
            f"Retry when they finish.",
            {**headers, "retry-after": retry_after, "x-should-retry": "true"},
        )
    assert result.code == CREDIT_EXHAUSTED
    return insufficient_funds(
        f"Insufficient credit: this request could cost up to {could_cost} and "
        f"{format_usd(max(result.available_nano, 0))} is available. Add credit to the account.",
        {**headers, "x-should-retry": "false"},
    )
