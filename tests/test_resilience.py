"""Upstream resilience against real upstreams that fail on cue: retries before the first byte (never
after), per-deployment circuit breakers, and per-provider concurrency caps."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from conftest import free_port
from metrics_scrape import scrape, value
from stacks import Stack, make_stack
from upstream import MockUpstream

from bastion.money import NANO_PER_USD

HELLO = [{"role": "user", "content": "hi"}]
PRICE = {"input": 1, "output": 2}


@pytest.fixture(scope="module")
def late_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def resilient(
    upstream: MockUpstream, late_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("resilience")
    up = f"http://127.0.0.1:{upstream.port}/v1"
    providers = [
        {"name": "up", "base_url": up, "api_key": "${BASTION_TEST_UPSTREAM_KEY}"},
        {"name": "fast", "base_url": up, "timeouts": {"connect": 0.5, "read": 0.5}},
        {"name": "late", "base_url": f"http://127.0.0.1:{late_port}/v1", "timeouts": {"connect": 0.5}},
        {"name": "capped", "base_url": up, "max_concurrency": 1},
    ]

    def model(name: str, *deployments: tuple[str, str, int]) -> dict[str, object]:
        return {
            "id": name,
            "category": "LLM",
            "price": PRICE,
            "deployments": [{"provider": p, "model": m, "weight": w} for p, m, w in deployments],
        }

    models = [
        model("ha-500", ("up", "error500", 1000), ("up", "echo", 1)),
        model("ha-hang", ("fast", "hang", 1000), ("up", "echo", 1)),
        model("ha-drop", ("up", "drop", 1000), ("up", "echo", 1)),
        model("ha-400", ("up", "bad400", 1000), ("up", "echo", 1)),
        model("lone-500", ("up", "error500", 1)),
        model("recovering", ("late", "echo", 1)),
        model("capped", ("capped", "gated", 1)),
    ]
    config = workdir / "bastion.yaml"
    config.write_text(yaml.safe_dump({"providers": providers, "models": models}))
    stack = make_stack("embedded", config, workdir)
    stack.start({"BASTION_BREAKER_THRESHOLD": "2", "BASTION_BREAKER_COOLDOWN_SECONDS": "1"})
    yield stack
    stack.stop()


def _post(
    stack: Stack, key: str, model: str, headers: dict[str, str] | None = None, **extra: object
) -> httpx.Response:
    return httpx.post(
        stack.gateway.base_url + "/chat/completions",
        json={"model": model, "messages": HELLO, **extra},
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        timeout=20,
    )


def _upstream_models(upstream: MockUpstream, since: int) -> list[str]:
    return [r.json["model"] for r in upstream.requests[since:] if isinstance(r.json, dict)]


def test_a_5xx_before_any_byte_is_retried_on_the_next_deployment(
    resilient: Stack, upstream: MockUpstream
) -> None:
    _, _, key = resilient.account(NANO_PER_USD)
    before = len(upstream.requests)
    answer = _post(resilient, key, "ha-500")
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert answer.json()["model"] == "ha-500"
    assert _upstream_models(upstream, before) == ["error500", "echo"]
    assert (
        value(scrape(resilient.gateway.root), "bastion_upstream_events_total", provider="up", event="retry")
        >= 1
    )


def test_a_stream_that_stalls_before_its_first_chunk_is_retried(
    resilient: Stack, upstream: MockUpstream
) -> None:
    _, _, key = resilient.account(NANO_PER_USD)
    before = len(upstream.requests)
    answer = _post(resilient, key, "ha-hang", stream=True)
    assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n")
    assert '"content":"Hel"' in answer.text
    assert _upstream_models(upstream, before) == ["hang", "echo"]


def test_a_failure_after_the_first_byte_is_never_retried(resilient: Stack, upstream: MockUpstream) -> None:
    _, _, key = resilient.account(NANO_PER_USD)
    before = len(upstream.requests)
    answer = _post(resilient, key, "ha-drop", stream=True)
    assert answer.status_code == 200
    assert '"code":"upstream_error"' in answer.text.strip().splitlines()[-1]
    assert _upstream_models(upstream, before) == ["drop"]


def test_an_upstream_4xx_is_not_retried(resilient: Stack, upstream: MockUpstream) -> None:
    _, _, key = resilient.account(NANO_PER_USD)
    before = len(upstream.requests)
    assert _post(resilient, key, "ha-400").status_code == 400
    assert _upstream_models(upstream, before) == ["bad400"]


def test_the_breaker_opens_then_probes_then_closes(
    resilient: Stack, upstream: MockUpstream, late_port: int
) -> None:
    _, _, key = resilient.account(NANO_PER_USD)
    # Two failures (nothing listens on the late port yet) open the breaker ...
    assert [_post(resilient, key, "recovering").status_code for _ in range(2)] == [502, 502]
    # ... and the next request is refused at once, without trying the upstream.
    started = time.monotonic()
    fast = _post(resilient, key, "recovering")
    assert fast.status_code == 503 and fast.json()["error"]["code"] == "service_unavailable"
    assert fast.headers["retry-after"] == "1" and time.monotonic() - started < 0.3
    assert value(scrape(resilient.gateway.root), "bastion_breaker_open", deployment="late/echo") == 1
    with MockUpstream(port=late_port) as recovered:
        deadline = time.monotonic() + 5
        while (answer := _post(resilient, key, "recovering")).status_code == 503:
            assert time.monotonic() < deadline, "the breaker never let a probe through"
            time.sleep(0.1)
        assert answer.status_code == 200  # the half-open probe succeeded: closed again
        assert [_post(resilient, key, "recovering").status_code for _ in range(3)] == [200, 200, 200]
        assert len(recovered.requests) == 4
    assert value(scrape(resilient.gateway.root), "bastion_breaker_open", deployment="late/echo") == 0


def test_a_provider_at_its_concurrency_cap_answers_503(resilient: Stack, upstream: MockUpstream) -> None:
    _, _, key = resilient.account(NANO_PER_USD)
    gate = "capped-holder"
    with httpx.stream(
        "POST",
        resilient.gateway.base_url + "/chat/completions",
        json={"model": "capped", "messages": HELLO, "stream": True},
        headers={"Authorization": f"Bearer {key}", "x-request-id": gate},
    ) as holder:
        lines = holder.iter_lines()
        next(line for line in lines if "first" in line)
        refused = _post(resilient, key, "capped")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "concurrency limit" in refused.json()["error"]["message"]
        samples = scrape(resilient.gateway.root)
        assert value(samples, "bastion_upstream_events_total", provider="capped", event="saturated") == 1
        upstream.open_gate(gate)
        assert any("[DONE]" in line for line in lines)
    again = _post(resilient, key, "capped", stream=True, headers={"x-request-id": "capped-after"})
    upstream.open_gate("capped-after")
    assert again.status_code == 200
