"""What a key may ask about itself: `GET /v1/key` (its limits and what remains of them, its budget and
spend, its account's credit: no SQL on a warm key) and `GET /v1/requests/{request_id}` (one request's
usage record of its account: a database query per call).

A stream's cost is known only at its end, after its body was sent as the upstream sent it (its bytes are
not Bastion's to add to: the OpenAI SDKs parse every event, and an extra one could break a strict
client), so this is where a streamed request's cost is read; a non-streamed answer carries it in
`x-bastion-cost-usd` already.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import orjson

from bastion.api.asgi import header
from bastion.api.exchange import Exchange
from bastion.auth import Authenticator, Principal
from bastion.billing.admission import CreditAdmission
from bastion.billing.live import KeyStatus
from bastion.db.store import UsageRow
from bastion.errors import ApiError
from bastion.money import decimal_usd
from bastion.periods import Window
from bastion.ratelimit import ratelimit_headers
from bastion.ratelimit.headers import format_reset

FindUsage = Callable[[str, str], Awaitable[UsageRow | None]]


class SelfService:
    def __init__(
        self,
        authenticator: Authenticator,
        admission: CreditAdmission,
        find_usage: FindUsage,
        flush_seconds: float,
    ) -> None:
        self.authenticator = authenticator
        self.admission = admission
        self.find_usage = find_usage
        self.flush_seconds = flush_seconds  # how late a record that was just settled may reach the database

    async def request_record(self, request_id: str, exchange: Exchange) -> None:
        exchange.endpoint = "requests"
        principal = await self.authenticator.authenticate(header(exchange.scope, b"authorization"))
        exchange.principal = principal
        record = await self.find_usage(principal.account_id, request_id)
        if record is None:  # a request that ended a moment ago may still be on its way to the database
            await asyncio.sleep(self.flush_seconds + 0.05)
            record = await self.find_usage(principal.account_id, request_id)
        if record is None:
            raise ApiError(
                404, "not_found", "invalid_request_error", f"No request '{request_id}' on this account."
            )
        exchange.headers += await self.admission.limit_headers(principal)
        exchange.limited = True
        await exchange.respond(200, orjson.dumps(request_object(record)))

    async def key(self, _: object, exchange: Exchange) -> None:
        exchange.endpoint = "key"
        principal = await self.authenticator.authenticate(header(exchange.scope, b"authorization"))
        exchange.principal = principal
        status, window = await self.admission.key_status(principal)
        exchange.headers += ratelimit_headers(principal.rpm, principal.tpm, status.buckets)
        exchange.limited = True
        await exchange.respond(200, orjson.dumps(key_object(principal, status, window)))


def key_object(principal: Principal, status: KeyStatus, window: Window) -> dict[str, object]:
    buckets, budget = status.buckets, principal.budget_nano
    expires = principal.expires_at
    return {
        "object": "bastion.key",
        "id": principal.key_id,
        "name": principal.name,
        "prefix": principal.key_prefix,
        "account_id": principal.account_id,
        "rpm": principal.rpm,
        "tpm": principal.tpm,
        "remaining_requests": buckets.requests_remaining,
        "remaining_tokens": buckets.tokens_remaining,
        "reset_requests": format_reset(buckets.requests_reset_ms),
        "reset_tokens": format_reset(buckets.tokens_reset_ms),
        "budget_usd": decimal_usd(budget) if budget is not None else None,
        "budget_period": principal.budget_period if budget is not None else None,
        "period": window.id,
        "period_resets_at": _iso(window.resets.timestamp()) if window.resets else None,
        "spend_usd": decimal_usd(status.key_spent_nano or 0),
        "reserved_usd": decimal_usd(status.key_reserved_nano),
        "remaining_budget_usd": (
            decimal_usd(max(budget - (status.key_spent_nano or 0) - status.key_reserved_nano, 0))
            if budget is not None
            else None
        ),
        "max_parallel": principal.max_parallel,
        "in_flight": status.in_flight,
        "allowed_models": sorted(principal.allowed_models) if principal.allowed_models is not None else None,
        "expires_at": _iso(expires) if expires is not None else None,
        "account_available_credit_usd": decimal_usd(status.available_nano or 0),
        # Requests of this key refused before they were served (402, 429, validation) since 00:00 UTC:
        # counted, not recorded (GET /v1/requests has no record of them).
        "refused_today": status.refused_today,
        "last_refusal": (
            {"code": last.code, "at": _iso(last.at.timestamp())}
            if (last := status.last_refusal) is not None
            else None
        ),
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def request_object(record: UsageRow) -> dict[str, object]:
    return {
        "id": record.request_id,
        "object": "bastion.request",
        "client_request_id": record.client_request_id,
        "model": record.model,
        "endpoint": record.endpoint,
        "status": record.status,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "quantity": record.quantity,
        "unit": record.unit,
        "cost_usd": decimal_usd(record.cost_nano),
        "cost_nano": record.cost_nano,
        "estimated": record.estimated,
        "recovered": record.recovered,  # settled from its last checkpoint after its instance died
        "latency_ms": record.latency_ms,
        "created": int(record.created_at.timestamp()),
        "created_at": record.created_at.isoformat().replace("+00:00", "Z"),
    }
