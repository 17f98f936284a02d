"""Prometheus metrics, safe with several worker processes, cheap on the request path.

With `bastion serve --workers N` the CLI points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before
any worker starts, so every process writes its samples there and `/metrics` (answered by any worker)
adds them all up.

A finished request only adds to plain dicts in this process (`observe`); `flush` moves the sums into the
Prometheus metrics once per `FLUSH_SECONDS`, on every scrape, and at shutdown. Updating the multiprocess
values directly cost ~18 us per request (a lock, a getpid() system call and an mmap write for each of
the ~16 values a request touches); the tallies cost ~2 us. So another worker's figures on a page may be
up to a second behind; this process's are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from bisect import bisect_left
from collections import defaultdict
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
REDIS_REDIRECTS = Counter(
    "bastion_redis_redirects_total",
    "Redis Cluster replies followed instead of surfaced: moved, ask, tryagain, clusterdown, noscript.",
    ["reply"],
)
# The models file in service. With several workers, "max" over the workers: the hash every worker loaded
# reads 1 and a replaced one 0 once all of them have reloaded (both read 1 while one has not).
MODELS_FILE_INFO = Gauge(
    "bastion_models_file_info",
    "1 for the sha256 of the models file in service (0 for one a reload replaced).",
    ["sha256"],
    multiprocess_mode="max",
)
MODELS_FILE_LOADED = Gauge(
    "bastion_models_file_loaded_timestamp_seconds",
    "Unix time the models file in service was loaded (with several workers, the latest worker's).",
    multiprocess_mode="max",
)
MODELS_FILE_RELOADS = Counter(
    "bastion_models_file_reloads_total",
    "Models-file reloads by result: ok (loaded, or unchanged), error (the old file kept); one per process.",
    ["result"],
)
# Running usage and the orphan sweep (bastion/billing/checkpoints.py).
CHECKPOINT_WRITES = Counter(
    "bastion_checkpoint_writes_total",
    "Running-usage checkpoints written (one per stream per checkpoint interval, at most).",
)
ORPHANS_SETTLED = Counter(
    "bastion_orphaned_requests_settled_total",
    "Requests of a dead instance settled from their last checkpoints (by this process's sweeps).",
)
ORPHANS_BILLED_USD = Counter("bastion_orphaned_billed_usd_total", "Money charged by those settlements, USD.")

_REFUSALS = {
    "rate_limit_exceeded": "rate_limited",
    "insufficient_funds": "insufficient_funds",
    "key_budget_exceeded": "key_budget_exceeded",
}
FLUSH_SECONDS = 1.0

Labels = tuple[str, ...]
_counts: defaultdict[tuple[Counter, Labels], float] = defaultdict(float)
_observations: dict[tuple[Histogram, Labels], list[float]] = {}  # per bucket counts, then the sum
_bounds: dict[Histogram, list[float]] = {
    metric: [*buckets, math.inf]
    for metric, buckets in (
        (UPSTREAM_SECONDS, _LATENCY),
        (TTFT_SECONDS, _LATENCY),
        (OVERHEAD_SECONDS, _OVERHEAD),
    )
}


class _Live:
    """Requests and streams open in this process now (set into the gauges at each flush)."""

    __slots__ = ("in_flight", "open_streams")

    def __init__(self) -> None:
        self.in_flight = 0
        self.open_streams = 0


live = _Live()


def _observe(metric: Histogram, labels: Labels, amount: float) -> None:
    bounds = _bounds[metric]
    slot = _observations.get((metric, labels))
    if slot is None:
        slot = _observations[(metric, labels)] = [0.0] * (len(bounds) + 1)
    slot[bisect_left(bounds, amount)] += 1  # Prometheus: the first bucket whose bound is >= the value
    slot[-1] += amount


def observe(exchange: Any, now: float) -> None:
    """A finished request's metrics (called once per request, with its exchange)."""
    route, model = exchange.endpoint or "other", exchange.model or ""
    code = exchange.error_code or ""
    _counts[(REQUESTS, (route, model, str(exchange.status), code))] += 1
    if code in _REFUSALS:
        _counts[(REFUSED, (_REFUSALS[code],))] += 1
    if exchange.upstream is not None and exchange.upstream_seconds:
        _observe(UPSTREAM_SECONDS, (exchange.upstream, model), exchange.upstream_seconds)
    _observe(OVERHEAD_SECONDS, (route,), max(now - exchange.started - exchange.upstream_seconds, 0.0))
    if exchange.first_byte_at is not None:
        _observe(TTFT_SECONDS, (model,), exchange.first_byte_at - exchange.started)
    record = exchange.record
    if record is not None:
        if record.prompt_tokens:
            _counts[(TOKENS, (model, "prompt"))] += record.prompt_tokens
        if record.completion_tokens:
            _counts[(TOKENS, (model, "completion"))] += record.completion_tokens
        if record.cost_nano:
            _counts[(CHARGED_USD, (model,))] += record.cost_nano / 1e9


def flush() -> None:
    """Move this process's tallies into the Prometheus metrics."""
    global _counts, _observations
    counts, _counts = _counts, defaultdict(float)
    observations, _observations = _observations, {}
    for (counter, labels), amount in counts.items():
        counter.labels(*labels).inc(amount)
    for (histogram, labels), slot in observations.items():
        child = histogram.labels(*labels)
        # prometheus_client has no public call to add many observations at once; its Histogram keeps
        # one value per bucket (`_buckets`, non-cumulative) and `_sum` (tests/test_metrics.py checks).
        for bucket, count in zip(child._buckets, slot[:-1], strict=True):
            if count:
                bucket.inc(count)
        child._sum.inc(slot[-1])
    IN_FLIGHT.set(live.in_flight)
    OPEN_STREAMS.set(live.open_streams)


async def flush_every(seconds: float = FLUSH_SECONDS) -> None:
    """The background flush (runs until cancelled; flushes once more when it is)."""
    try:
        while True:
            await asyncio.sleep(seconds)
            flush()
    finally:
        with contextlib.suppress(Exception):
            flush()


def upstream_event(event: str, target: Any, breaker_open: bool) -> None:
    UPSTREAM_EVENTS.labels(target.provider.name, event).inc()
    BREAKER_OPEN.labels(_deployment(target)).set(1 if breaker_open else 0)


def models_file_loaded(sha256: str, loaded_at: float, replaced: str | None = None) -> None:
    """The models file in service is now `sha256` (loaded at `loaded_at`), in place of `replaced`."""
    if replaced is not None and replaced != sha256:
        MODELS_FILE_INFO.labels(replaced).set(0)  # what other workers' files hold for it still counts
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            MODELS_FILE_INFO.remove(replaced)
    MODELS_FILE_INFO.labels(sha256).set(1)
    MODELS_FILE_LOADED.set(loaded_at)
    for result in ("ok", "error"):
        MODELS_FILE_RELOADS.labels(result)  # both series exist from the start, at 0


def models_file_reloaded(ok: bool) -> None:
    MODELS_FILE_RELOADS.labels("ok" if ok else "error").inc()


def breakers_retired(targets: list[Any], live: list[Any]) -> None:
    """Deployments a reload removed with their breaker open: the breaker is gone, its gauge reads 0."""
    kept = {_deployment(t) for t in live}
    for label in {_deployment(t) for t in targets} - kept:
        BREAKER_OPEN.labels(label).set(0)


def _deployment(target: Any) -> str:
    """A deployment's label: provider/upstream model."""
    return f"{target.provider.name}/{target.deployment.model}"


def exposition() -> tuple[bytes, str]:
    """The metrics page: this process's, or every worker's added up."""
    flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
