"""/metrics: the figures operators watch, exact after known traffic, and added up across workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from metrics_scrape import scrape, value
from stacks import Stack, drop_stack, running_stack
from upstream import MockUpstream

from bastion.metrics import FLUSH_SECONDS
from bastion.money import NANO_PER_USD

HELLO = [{"role": "user", "content": "hi"}]
TOKEN = "metrics-token-for-tests"


@pytest.fixture(scope="module")
def watched(
    upstream: MockUpstream, blackhole_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = next(running_stack("embedded", upstream, blackhole_port, tmp_path_factory.mktemp("metrics")))
    stack.stop()
    stack.start({"BASTION_METRICS_TOKEN": TOKEN})
    yield stack
    stack.stop()


def test_metrics_need_the_token_when_one_is_set(watched: Stack) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        refused = httpx.get(watched.gateway.root + "/metrics", headers=headers)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_request_token_money_and_latency_figures(watched: Stack) -> None:
    _, _, key = watched.account(NANO_PER_USD, rpm=5)
    client = watched.client(key)
    before = scrape(watched.gateway.root, TOKEN)
    for _ in range(3):
        client.chat.completions.create(model="m-echo", messages=HELLO)
    list(client.chat.completions.create(model="m-echo", messages=HELLO, stream=True))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m-echo", messages=[])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m-error500", messages=HELLO)
    with pytest.raises(openai.RateLimitError):  # the 6th admitted in the minute (the 400 admits nothing)
        client.chat.completions.create(model="m-echo", messages=HELLO)
    _, _, broke = watched.account(1)
    with pytest.raises(openai.APIStatusError):
        watched.client(broke).chat.completions.create(model="m-echo", messages=HELLO)
    after = scrape(watched.gateway.root, TOKEN)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"route": "chat", "model": "m-echo", "status": "200", "code": ""}
    assert delta("bastion_requests_total", **ok) == 4
    assert delta("bastion_requests_total", route="chat", model="", status="400", code="invalid_request") == 1
    assert (
        delta("bastion_requests_total", route="chat", model="m-error500", status="502", code="upstream_error")
        == 1
    )
    assert delta("bastion_refused_total", reason="rate_limited") == 1
    assert delta("bastion_refused_total", reason="insufficient_funds") == 1
    assert delta("bastion_tokens_total", model="m-echo", kind="prompt") == 4 * 11
    assert delta("bastion_tokens_total", model="m-echo", kind="completion") == 4 * 3
    assert delta("bastion_charged_usd_total", model="m-echo") == pytest.approx(4 * 0.000017)
    assert delta("bastion_upstream_seconds_count", provider="up", model="m-echo") == 4
    assert delta("bastion_time_to_first_token_seconds_count", model="m-echo") == 1
    assert delta("bastion_gateway_overhead_seconds_count", route="chat") == 8
    assert delta("bastion_upstream_events_total", provider="up", event="failure") == 1
    assert value(after, "bastion_in_flight_requests") == 0
    assert value(after, "bastion_open_streams") == 0


def test_two_workers_add_their_figures_up(
    upstream: MockUpstream, blackhole_port: int, tmp_path: Path
) -> None:
    stack = next(running_stack("shared", upstream, blackhole_port, tmp_path))
    try:
        stack.stop()
        gateway = stack.start({"BASTION_WORKERS": "2"})
        _, _, key = stack.account(NANO_PER_USD)
        before = value(
            scrape(gateway.root),
            "bastion_requests_total",
            route="chat",
            model="m-echo",
            status="200",
            code="",
        )
        for _ in range(20):  # fresh connections: the kernel spreads them over both workers
            assert (
                httpx.post(
                    gateway.base_url + "/chat/completions",
                    json={"model": "m-echo", "messages": HELLO},
                    headers={"Authorization": f"Bearer {key}", "Connection": "close"},
                ).status_code
                == 200
            )

        def total() -> float:
            samples = scrape(gateway.root)
            return value(
                samples, "bastion_requests_total", route="chat", model="m-echo", status="200", code=""
            )

        # Each worker moves its tallies into the shared files every second (metrics.FLUSH_SECONDS).
        deadline = time.monotonic() + 10 * FLUSH_SECONDS
        seen = total()
        while seen - before < 20 and time.monotonic() < deadline:
            assert seen - before <= 20
            time.sleep(0.05)
            seen = total()
        assert seen - before == 20
        for _ in range(4):  # whichever worker answers, the totals are everyone's
            assert total() - before == 20
    finally:
        drop_stack(stack)


def test_tallies_land_in_the_buckets_prometheus_would_use() -> None:
    """observe() tallies locally and flush() adds them up: a value on a bound counts in that bucket."""
    from types import SimpleNamespace

    from prometheus_client import REGISTRY

    from bastion import metrics

    def bucket(le: str) -> float:
        sample = REGISTRY.get_sample_value(
            "bastion_gateway_overhead_seconds_bucket", {"route": "unit", "le": le}
        )
        return sample or 0.0

    before = {le: bucket(le) for le in ("0.00025", "0.0005", "0.001", "+Inf")}
    for overhead in (0.0005, 0.0006, 0.2):
        exchange = SimpleNamespace(
            endpoint="unit", model="m", status=200, error_code=None, upstream=None,
            upstream_seconds=0.0, started=0.0, first_byte_at=None, record=None,
        )  # fmt: skip
        metrics.observe(exchange, now=overhead)
    assert bucket("0.0005") == before["0.0005"]  # nothing is visible before the flush
    metrics.flush()
    assert bucket("0.00025") - before["0.00025"] == 0
    assert bucket("0.0005") - before["0.0005"] == 1  # le is "less than or equal"
    assert bucket("0.001") - before["0.001"] == 2
    assert bucket("+Inf") - before["+Inf"] == 3


async def test_requests_ending_in_one_loop_turn_are_accounted_for_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Their metrics and access lines come once the turn is over, the lines in one write."""
    import asyncio
    from types import SimpleNamespace

    from bastion.api import access

    writes: list[list[dict[str, object]]] = []
    observed: list[str] = []
    monkeypatch.setattr(access, "write_access_lines", writes.append)
    monkeypatch.setattr(access.metrics, "observe", lambda exchange, now: observed.append(exchange.request_id))

    def ended(request_id: str) -> SimpleNamespace:
        return SimpleNamespace(
            request_id=request_id, scope={"method": "POST", "path": "/v1/chat/completions"}, status=200,
            error_code=None, principal=None, model="m", endpoint="chat", upstream="up", streaming=False,
            started=0.0, upstream_seconds=0.001, first_byte_at=None, record=None,
        )  # fmt: skip

    for request_id in ("a", "b", "c"):
        access.finished(ended(request_id), 0.002)  # type: ignore[arg-type]
    assert writes == [] and observed == []  # not in the turn that ended them
    await asyncio.sleep(0)
    assert observed == ["a", "b", "c"]
    assert [[line["request_id"] for line in batch] for batch in writes] == [["a", "b", "c"]]
    assert writes[0][0]["latency_ms"] == 2.0 and writes[0][0]["upstream_ms"] == 1.0
    access.finished(ended("d"), 0.003)  # type: ignore[arg-type]
    access.drain()  # what a /metrics scrape and the shutdown do first
    assert observed[-1] == "d" and len(writes) == 2
    await asyncio.sleep(0)
    assert len(writes) == 2  # nothing twice
