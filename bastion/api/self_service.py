"""What a key may ask about its own account: `GET /v1/requests/{request_id}`, one request's usage record.

Off the hot path (a database query per call). A stream's cost is known only at its end, after its body
was sent as the upstream sent it (its bytes are not Bastion's to add to: the OpenAI SDKs parse every
event, and an extra one could break a strict client), so this is where a streamed request's cost is
read; a non-streamed answer carries it in `x-bastion-cost-usd` already.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson

from bastion.api.asgi import header
from bastion.api.exchange import Exchange
from bastion.auth import Authenticator
from bastion.billing import Admission
from bastion.db.store import UsageRow
from bastion.errors import ApiError
from bastion.money import decimal_usd

FindUsage = Callable[[str, str], Awaitable[UsageRow | None]]


class SelfService:
    def __init__(
        self, authenticator: Authenticator, admission: Admission, find_usage: FindUsage, flush_seconds: float
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
        "latency_ms": record.latency_ms,
        "created": int(record.created_at.timestamp()),
        "created_at": record.created_at.isoformat().replace("+00:00", "Z"),
    }
