"""POST /v1/chat/completions end to end: the official SDK -> bastion serve -> a real mock upstream."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import openai
import pytest
from conftest import AUTH, CLIENT_KEY, PROVIDER_KEY, Gateway
from upstream import FLOOD_EVENT_BYTES, FLOOD_EVENTS, MockUpstream

HELLO = [{"role": "user", "content": "hi there"}]


def test_non_streaming_answer_is_relayed_with_the_public_model_id(
    client: openai.OpenAI, upstream: MockUpstream
) -> None:
    completion = client.chat.completions.create(model="m-echo", messages=HELLO)
    assert completion.model == "m-echo"
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 3)
    sent = upstream.last_request()
    assert sent is not None and sent.path == "/v1/chat/completions"
    assert sent.json == {"model": "echo", "messages": HELLO}


def test_upstream_sees_its_key_never_the_clients(client: openai.OpenAI, upstream: MockUpstream) -> None:
    client.chat.completions.create(model="m-echo", messages=HELLO)
    sent = upstream.last_request()
    assert sent is not None
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert CLIENT_KEY not in json.dumps(sent.headers)


def test_pass_through_changes_only_the_model(client: openai.OpenAI, upstream: MockUpstream) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Météo — 天気 🌦",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "model": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages = [
        {"role": "system", "content": "Réponds en français. 日本語も可。"},
        {"role": "user", "content": [{"type": "text", "text": "Quel temps à Zürich? 🌧"}]},
    ]
    vendor = {"x_vendor": {"nested": [1, 2.5, None, True, {"deep": "ünï"}]}, "top_k": 40}
    client.chat.completions.create(
        model="m-echo",
        messages=messages,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        response_format={"type": "json_object"},
        seed=1234,
        temperature=0.7,
        max_tokens=64,
        extra_body=vendor,
    )
    sent = upstream.last_request()
    assert sent is not None
    expected = {
        "model": "echo",
        "messages": messages,
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_object"},
        "seed": 1234,
        "temperature": 0.7,
        "max_tokens": 64,
        **vendor,
    }
    assert sent.json == expected


def test_same_upstream_name_forwards_the_original_bytes(gateway: Gateway, upstream: MockUpstream) -> None:
    raw = b'{"model": "same-name",  "messages": [{"role": "user", "content": "x"}], "n": 1.0e0}'
    response = httpx.post(
        gateway.base_url + "/chat/completions",
        content=raw,
        headers={"content-type": "application/json", **AUTH},
    )
    assert response.status_code == 200
    sent = upstream.last_request()
    assert sent is not None and sent.body == raw


def test_integers_past_64_bits_survive_a_model_rewrite(gateway: Gateway, upstream: MockUpstream) -> None:
    raw = (
        b'{"model": "m-echo", "messages": [{"role": "user", "content": "x"}], "big": 12345678901234567890123}'
    )
    response = httpx.post(gateway.base_url + "/chat/completions", content=raw, headers=AUTH)
    assert response.status_code == 200
    sent = upstream.last_request()
    assert sent is not None
    forwarded = json.loads(sent.body)
    assert forwarded["big"] == 12345678901234567890123
    assert list(forwarded) == ["model", "messages", "big"]  # field order kept
    assert forwarded["model"] == "echo"


def test_raw_response_headers_carry_a_request_id_that_went_upstream(
    client: openai.OpenAI, upstream: MockUpstream
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="m-echo", messages=HELLO)
    request_id = raw.headers["x-request-id"]
    assert re.fullmatch(r"req_[0-9a-f]{24}", request_id)
    assert raw.parse().choices[0].message.content == "echo: hi there"
    sent = upstream.last_request()
    assert sent is not None and sent.headers["x-request-id"] == request_id


@pytest.mark.parametrize(
    ("given", "kept"),
    [("my-trace.id:42", True), ("bad id with spaces", False), ("x" * 300, False), ("ünicode", False)],
)
def test_client_request_id_is_kept_only_when_sane(
    http: httpx.Client, upstream: MockUpstream, given: str, kept: bool
) -> None:
    response = http.post(
        "/v1/chat/completions",
        json={"model": "m-echo", "messages": HELLO},
        headers={"x-request-id": given.encode("utf-8")},
    )
    assert response.status_code == 200
    answered = response.headers["x-request-id"]
    assert (answered == given) is kept
    if not kept:
        assert re.fullmatch(r"req_[0-9a-f]{24}", answered)
    sent = upstream.last_request()
    assert sent is not None and sent.headers["x-request-id"] == answered


def test_request_id_is_on_error_answers_too(http: httpx.Client) -> None:
    for response in (
        http.post(
            "/v1/chat/completions", json={"model": "nope", "messages": HELLO}, headers={"x-request-id": "e1"}
        ),
        http.get("/v1/chat/completions", headers={"x-request-id": "e2"}),
        http.get("/no/such/route", headers={"x-request-id": "e3"}),
    ):
        assert response.headers["x-request-id"] in ("e1", "e2", "e3")
        assert "error" in response.json()


async def test_async_client_non_streaming(aclient: openai.AsyncOpenAI) -> None:
    completion = await aclient.chat.completions.create(model="m-echo", messages=HELLO)
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.model == "m-echo"


def _stream_text(client: openai.OpenAI, model: str, **extra: object) -> tuple[str, list[object]]:
    chunks = list(client.chat.completions.create(model=model, messages=HELLO, stream=True, **extra))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_streaming_relays_every_chunk_with_the_public_model(
    client: openai.OpenAI, upstream: MockUpstream
) -> None:
    text, chunks = _stream_text(client, "m-echo")
    assert text == "Hello world"
    assert {c.model for c in chunks} == {"m-echo"}  # type: ignore[attr-defined]
    assert chunks[-1].choices[0].finish_reason == "stop"  # type: ignore[attr-defined]
    assert all(c.usage is None for c in chunks)  # type: ignore[attr-defined]
    # The one sanctioned addition: Bastion asks for usage (to bill) and hides the usage chunk.
    sent = upstream.last_request()
    assert sent is not None
    assert sent.json == {
        "model": "echo",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_streaming_wire_format_ends_with_done(http: httpx.Client) -> None:
    with http.stream(
        "POST", "/v1/chat/completions", json={"model": "m-echo", "messages": HELLO, "stream": True}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-request-id"]
        body = r.read()
    events = body.split(b"\n\n")
    assert events[-1] == b""
    assert events[-2] == b"data: [DONE]"
    assert all(e.startswith(b"data: ") for e in events[:-1])
    assert b'"model":"echo"' not in body


def test_spaced_json_from_the_upstream_gets_the_model_restored(client: openai.OpenAI) -> None:
    assert client.chat.completions.create(model="m-spaced", messages=HELLO).model == "m-spaced"
    _, chunks = _stream_text(client, "m-spaced")
    assert {c.model for c in chunks} == {"m-spaced"}  # type: ignore[attr-defined]


def test_stream_usage_is_relayed_when_the_client_asks(client: openai.OpenAI) -> None:
    _, chunks = _stream_text(client, "m-echo", stream_options={"include_usage": True})
    last = chunks[-1]
    assert last.choices == []  # type: ignore[attr-defined]
    assert last.usage.completion_tokens == 3  # type: ignore[attr-defined]


def test_events_split_across_reads_with_crlf_and_comments_arrive_whole(client: openai.OpenAI) -> None:
    text, chunks = _stream_text(client, "m-fragmented")
    assert text == "Hello world"
    assert {c.model for c in chunks} == {"m-fragmented"}  # type: ignore[attr-defined]


def test_fragmented_wire_bytes_keep_comments_and_end_with_done(http: httpx.Client) -> None:
    body = http.post(
        "/v1/chat/completions", json={"model": "m-fragmented", "messages": HELLO, "stream": True}
    ).content
    assert b"\r" not in body
    assert b": keep-alive\n\n" in body
    assert body.endswith(b"data: [DONE]\n\n")


def test_a_stream_without_done_gets_one(http: httpx.Client) -> None:
    body = http.post(
        "/v1/chat/completions", json={"model": "m-nodone", "messages": HELLO, "stream": True}
    ).content
    assert body.endswith(b"data: [DONE]\n\n")
    assert body.count(b"[DONE]") == 1


def test_reasoning_fields_pass_untouched(client: openai.OpenAI) -> None:
    _, chunks = _stream_text(client, "m-reasoning")
    deltas = [c.choices[0].delta.model_dump() for c in chunks if c.choices]  # type: ignore[attr-defined]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Let me think."
    assert "".join(d.get("reasoning") or "" for d in deltas) == "ovh-style"
    message = client.chat.completions.create(model="m-reasoning", messages=HELLO).choices[0].message
    assert message.model_dump()["reasoning_content"] == "Let me think."


def test_think_tags_pass_untouched(client: openai.OpenAI) -> None:
    text, _ = _stream_text(client, "m-think")
    assert text == "<think>pondering</think>The answer"
    content = client.chat.completions.create(model="m-think", messages=HELLO).choices[0].message.content
    assert content == "<think>pondering</think>The answer"


def test_first_chunk_reaches_the_client_while_the_upstream_is_still_producing(
    client: openai.OpenAI, upstream: MockUpstream
) -> None:
    # The upstream holds its second chunk until the test, having received the first one, opens the gate.
    # A gateway that buffered would deliver nothing before the upstream's 10 s gate timeout.
    key = "gated-first-chunk"
    stream = client.chat.completions.create(
        model="m-gated", messages=HELLO, stream=True, extra_headers={"x-request-id": key}
    )
    seen = []
    for chunk in stream:
        content = chunk.choices[0].delta.content if chunk.choices else None
        if content:
            seen.append(content)
            if content == "first":
                upstream.open_gate(key)
    assert seen == ["first", " second"]
    assert upstream.gate_opened_by_test(key)


def test_closing_the_stream_closes_the_upstream_within_a_second(
    client: openai.OpenAI, upstream: MockUpstream
) -> None:
    key = "slow-close-sync"
    stream = client.chat.completions.create(
        model="m-slow", messages=HELLO, stream=True, extra_headers={"x-request-id": key}
    )
    first = [c for _, c in zip(range(3), stream, strict=False)]
    assert first[-1].choices[0].delta.content.startswith("tick")
    stream.close()
    closed_at_client = time.monotonic()
    closed_upstream = upstream.wait_closed(key, timeout=3)
    assert closed_upstream is not None, "the upstream connection was never closed"
    assert closed_upstream - closed_at_client < 1.0


async def test_cancelling_an_async_stream_closes_the_upstream_within_a_second(
    aclient: openai.AsyncOpenAI, upstream: MockUpstream
) -> None:
    key = "slow-close-async"
    received = asyncio.Event()

    async def consume() -> None:
        stream = await aclient.chat.completions.create(
            model="m-slow", messages=HELLO, stream=True, extra_headers={"x-request-id": key}
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(received.wait(), 5)
    task.cancel()
    aborted_at = time.monotonic()
    closed = await asyncio.to_thread(upstream.wait_closed, key, 3)
    assert closed is not None and closed - aborted_at < 1.0


def test_client_hanging_up_during_a_silent_upstream_closes_it(
    gateway: Gateway, upstream: MockUpstream
) -> None:
    # The upstream sends nothing at all: Bastion has no write to notice the hang-up by, so it must listen.
    key = "hang-close"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            gateway.base_url + "/chat/completions",
            json={"model": "m-hang", "messages": HELLO},
            headers={"x-request-id": key, **AUTH},
            timeout=httpx.Timeout(5, read=0.5),
        )
    hung_up = time.monotonic()
    closed = upstream.wait_closed(key, timeout=3)
    assert closed is not None, "the upstream connection was never closed"
    assert closed - hung_up < 1.0


async def test_async_client_streaming(aclient: openai.AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(model="m-think", messages=HELLO, stream=True)
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert pieces == ["<think>", "pondering", "</think>", "The answer"]


def test_streaming_with_raw_response_exposes_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="m-echo", messages=HELLO, stream=True, extra_headers={"x-request-id": "raw-stream-1"}
    )
    assert raw.headers["x-request-id"] == "raw-stream-1"
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "Hello world"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_connections_are_pooled_and_reused(
    client: openai.OpenAI, upstream: MockUpstream, stream: bool
) -> None:
    upstream.clear()
    for _ in range(10):
        if stream:
            assert _stream_text(client, "m-echo")[0] == "Hello world"
        else:
            client.chat.completions.create(model="m-echo", messages=HELLO)
    peers = {r.peer for r in upstream.wait_for_requests(10)}
    assert None not in peers
    assert len(peers) == 1, f"10 sequential requests used {len(peers)} upstream connections"


def test_done_ends_the_answer_at_once_and_the_late_upstream_connection_is_kept(
    client: openai.OpenAI, upstream: MockUpstream
) -> None:
    # m-late-eof ends its body 100 ms after [DONE]. The client must not wait for that, and the
    # connection must go back to the pool rather than be dropped at [DONE].
    upstream.clear()
    for i in range(5):
        key = f"late-eof-{i}"
        stream = client.chat.completions.create(
            model="m-late-eof", messages=HELLO, stream=True, extra_headers={"x-request-id": key}
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello world"
        client_done = time.monotonic()
        upstream_done = upstream.wait_finished(key)
        assert upstream_done is not None and client_done < upstream_done
    peers = {r.peer for r in upstream.wait_for_requests(5)}
    assert len(peers) == 1, f"5 sequential late-ending streams used {len(peers)} upstream connections"


def test_a_client_that_stops_reading_stops_the_upstream_and_then_gets_every_byte(
    gateway: Gateway, upstream: MockUpstream
) -> None:
    """Back-pressure end to end: the stream is written straight to the client's connection while it
    keeps up, and through ASGI's `send` (which waits) once its buffers are full, so the upstream is
    paused rather than its answer piling up in Bastion; reading again, the client gets all of it, in
    order."""
    key = "flood-backpressure"
    body = {"model": "m-flood", "messages": HELLO, "stream": True}
    headers = {**AUTH, "x-request-id": key}
    with httpx.stream("POST", gateway.base_url + "/chat/completions", json=body, headers=headers) as answer:
        assert answer.status_code == 200
        stalled_at, unchanged, deadline = -1, 0, time.monotonic() + 20
        while unchanged < 10:  # the same count for 10 looks 50 ms apart: the upstream is held
            assert time.monotonic() < deadline, "the upstream never stopped"
            time.sleep(0.05)
            count = upstream.flooded(key)
            unchanged = unchanged + 1 if count == stalled_at else 0
            stalled_at = count
        assert 0 < stalled_at < FLOOD_EVENTS // 2, f"{stalled_at} of {FLOOD_EVENTS} events went out unread"
        texts = []
        for line in answer.iter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    texts.append(delta["content"])
            elif line == "data: [DONE]":
                break
    assert len(texts) == FLOOD_EVENTS
    assert all(text.startswith(f"[{n}]") and len(text) == FLOOD_EVENT_BYTES for n, text in enumerate(texts))
