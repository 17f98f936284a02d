"""Self-checks for the MockUpstream test server (tests/upstream.py)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from upstream import MockUpstream


@pytest.fixture
def mock() -> Iterator[MockUpstream]:
    with MockUpstream() as m:
        yield m


def _post(m: MockUpstream, body: dict[str, Any], rid: str | None = None) -> http.client.HTTPResponse:
    headers = {"Content-Type": "application/json"}
    if rid:
        headers["X-Request-Id"] = rid
    req = urllib.request.Request(
        m.base_url + "/chat/completions", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    return urllib.request.urlopen(req, timeout=10)


def _events(raw: bytes) -> list[str]:
    """Minimal SSE parser: returns the data payloads, skipping comments."""
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        for line in block.decode().split("\n"):
            if line.startswith("data:"):
                out.append(line[5:].removeprefix(" "))
    return out


MSGS = [{"role": "user", "content": "hi there"}]


def test_echo_json_and_recording(mock: MockUpstream) -> None:
    with _post(mock, {"model": "echo", "messages": MSGS}, rid="r1") as resp:
        raw = resp.read()
    data = json.loads(raw)
    assert data["model"] == "echo"
    assert data["choices"][0]["message"]["content"] == "echo: hi there"
    assert b", " not in raw  # compact separators
    rec = mock.wait_for_requests(1)[0]
    assert rec.path == "/v1/chat/completions" and rec.headers["x-request-id"] == "r1"
    assert rec.json == {"model": "echo", "messages": MSGS}


def test_spaced_and_errors(mock: MockUpstream) -> None:
    with _post(mock, {"model": "spaced", "messages": MSGS}) as resp:
        assert b'"model": "spaced"' in resp.read()
    with pytest.raises(urllib.error.HTTPError) as exc:
        _post(mock, {"model": "ratelimited429"})
    assert exc.value.code == 429 and exc.value.headers["Retry-After"] == "7"
    with pytest.raises(urllib.error.HTTPError) as exc:
        _post(mock, {"model": "status:503"})
    assert exc.value.code == 503
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(mock.base_url + "/models", timeout=5)
    assert exc.value.code == 404 and "error" in json.loads(exc.value.read())


def test_echo_stream_with_usage(mock: MockUpstream) -> None:
    body = {"model": "echo", "stream": True, "stream_options": {"include_usage": True}, "messages": MSGS}
    with _post(mock, body) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Transfer-Encoding"] == "chunked"
        events = _events(resp.read())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello world"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert all(c["model"] == "echo" for c in chunks)


def test_gated(mock: MockUpstream) -> None:
    result: dict[str, bytes] = {}

    def run() -> None:
        with _post(mock, {"model": "gated", "stream": True}, rid="g1") as resp:
            result["raw"] = resp.read()

    t = threading.Thread(target=run)
    t.start()
    mock.wait_for_requests(1)
    time.sleep(0.1)
    assert "raw" not in result
    mock.open_gate("g1")
    t.join(5)
    assert mock.gate_opened_by_test("g1")
    chunks = [json.loads(e) for e in _events(result["raw"])[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "first second"


def test_slow_client_close_detected(mock: MockUpstream) -> None:
    resp = _post(mock, {"model": "slow", "stream": True}, rid="s1")
    assert b"tick 1" in resp.read1(4096) + resp.read1(4096)
    resp.close()
    closed_at = time.monotonic()
    detected = mock.wait_closed("s1", timeout=2)
    assert detected is not None and detected - closed_at < 1.0


def test_drop(mock: MockUpstream) -> None:
    with _post(mock, {"model": "drop", "stream": True}) as resp, pytest.raises(http.client.IncompleteRead):
        resp.read()
    with _post(mock, {"model": "drop"}) as resp, pytest.raises(http.client.IncompleteRead) as exc:
        resp.read()
    assert len(exc.value.partial) == 10


def test_fragmented(mock: MockUpstream) -> None:
    with _post(mock, {"model": "fragmented", "stream": True}) as resp:
        raw = resp.read()
    assert b": keep-alive\r\n\r\n" in raw and b"data:{" in raw
    events = _events(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello world"


def test_stop_is_prompt_with_hang_in_flight() -> None:
    m = MockUpstream().start()
    sock = socket.create_connection(("127.0.0.1", m.port))
    body = b'{"model":"hang"}'
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    m.wait_for_requests(1)
    t0 = time.monotonic()
    m.stop()
    assert time.monotonic() - t0 < 2.0
    sock.settimeout(2)
    assert sock.recv(100) == b""  # connection closed, no answer
    sock.close()
