"""The access log line: one JSON line per request, written when it ends."""

from __future__ import annotations

from typing import Any

from bastion.api.exchange import Exchange
from bastion.logs import write_access
from bastion.money import format_usd


def log_access(exchange: Exchange, now: float) -> None:
    principal, record = exchange.principal, exchange.record
    fields: dict[str, Any] = {
        "request_id": exchange.request_id,
        "method": exchange.scope["method"],
        "path": exchange.scope["path"],
        "status": exchange.status,
        "error": exchange.error_code,
        "key": principal.key_prefix if principal else None,
        "account": principal.account_id if principal else None,
        "model": exchange.model,
        "endpoint": exchange.endpoint,
        "upstream": exchange.upstream,
        "stream": exchange.streaming,
        "latency_ms": round((now - exchange.started) * 1000, 2),
        "upstream_ms": round(exchange.upstream_seconds * 1000, 2),
    }
    if exchange.first_byte_at is not None:
        fields["ttft_ms"] = round((exchange.first_byte_at - exchange.started) * 1000, 2)
    if record is not None:
        fields.update(
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            cost_usd=format_usd(record.cost_nano),
            estimated=record.estimated,
        )
    write_access(fields)
