"""Prometheus metrics, safe with several worker processes.

With `bastion serve --workers N` the CLI points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before
any worker starts, so every process writes its samples there and `/metrics` (answered by any worker)
adds them all up. Each request updates its metrics once, when it ends (`observe`).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

REQUESTS = Counter("bastion_requests_total", "Requests answered.", ["route", "model", "status", "code"])
UPSTREAM_SECONDS = Histogram(
    "bastion_upstream_seconds",
    "Time waiting on the upstream, to its full answer (JSON) or its headers and first chunk (streams).",
    ["provider", "model"],
    buckets=_LATENCY,
)
TTFT_SECONDS = Histogram(
    "bastion_time_to_first_token_seconds",
    "From the request to the first streamed bytes sent.",
    ["model"],
    buckets=_LATENCY,
)
OVERHEAD_SECONDS = Histogram(
    "bastion_gateway_overhead_seconds",
    "Bastion's own time per request (total minus upstream).",
    ["route"],
    buckets=_OVERHEAD,
)
TOKENS = Counter("bastion_tokens_total", "Tokens billed.", ["model", "kind"])
CHARGED_USD = Counter("bastion_charged_usd_total", "Money charged, USD.", ["model"])
REFUSED = Counter("bastion_refused_total", "Requests refused by admission.", ["reason"])
IN_FLIGHT = Gauge("bastion_in_flight_requests", "Requests being served.", multiprocess_mode="livesum")
OPEN_STREAMS = Gauge("bastion_open_streams", "Event streams being relayed.", multiprocess_mode="livesum")
UPSTREAM_EVENTS = Counter(
    "bastion_upstream_events_total",
    "Upstream trouble by provider: failure (before any byte), retry, saturated (concurrency cap).",
    ["provider", "event"],
)
BREAKER_OPEN = Gauge(
    "bastion_breaker_open",
    "1 while a deployment's circuit breaker is open.",
    ["deployment"],
    multiprocess_mode="max",
)

_REFUSALS = {"rate_limit_exceeded": "rate_limited", "insufficient_funds": "insufficient_funds"}


def observe(exchange: Any, now: float) -> None:
    """A finished request's metrics (called once per request, with its exchange)."""
    route, model = exchange.endpoint or "other", exchange.model or ""
    REQUESTS.labels(route, model, str(exchange.status), exchange.error_code or "").inc()
    reason = _REFUSALS.get(exchange.error_code or "")
    if reason:
        REFUSED.labels(reason).inc()
    if exchange.upstream is not None and exchange.upstream_seconds:
        UPSTREAM_SECONDS.labels(exchange.upstream, model).observe(exchange.upstream_seconds)
    OVERHEAD_SECONDS.labels(route).observe(max(now - exchange.started - exchange.upstream_seconds, 0.0))
    if exchange.first_byte_at is not None:
        TTFT_SECONDS.labels(model).observe(exchange.first_byte_at - exchange.started)
    record = exchange.record
    if record is not None:
        if record.prompt_tokens:
            TOKENS.labels(model, "prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            TOKENS.labels(model, "completion").inc(record.completion_tokens)
        if record.cost_nano:
            CHARGED_USD.labels(model).inc(record.cost_nano / 1e9)


def upstream_event(event: str, target: Any, breaker_open: bool) -> None:
    UPSTREAM_EVENTS.labels(target.provider.name, event).inc()
    BREAKER_OPEN.labels(f"{target.provider.name}/{target.deployment.model}").set(1 if breaker_open else 0)


def exposition() -> tuple[bytes, str]:
    """The metrics page: this process's, or every worker's added up."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
