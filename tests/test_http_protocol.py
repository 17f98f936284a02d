"""Bounded request heads (bastion/api/http_protocol.py): size, header count and time.

In process first (uvicorn's protocol on a recording transport, the limits set small), for where the
limit falls; then over raw sockets against `bastion serve`, with the process's RSS read from /proc.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import gateway_models_file
from stacks import Stack, drop_stack, make_stack
from upstream import MockUpstream
from uvicorn_harness import serve

from bastion.api.asgi import Receive, Scope, Send
from bastion.api.http_protocol import BoundedHttpToolsProtocol, HeadLimits

HEAD_TIMEOUT = 1.0


async def echo_body(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


def small_limits(protocol: object) -> None:
    protocol._limits = HeadLimits(max_bytes=1024, max_headers=10, timeout_seconds=10)  # type: ignore[attr-defined]


def head_of(size: int, path: str = "/") -> bytes:
    """A GET head of exactly `size` bytes."""
    start, end = f"GET {path} HTTP/1.1\r\nhost: x\r\nx-pad: ".encode(), b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


def answer(transport_writes: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    wire = b"".join(transport_writes)
    head, _, body = wire.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("pieces", [1, 3, 1000])
async def test_a_head_of_exactly_the_limit_is_served_one_byte_more_is_431(pieces: int) -> None:
    for size, status in [(1024, 200), (1025, 431)]:
        head = head_of(size)
        step = max(1, len(head) // pieces)
        chunks = [head[i : i + step] for i in range(0, len(head), step)]
        transport, _ = await serve(echo_body, chunks, BoundedHttpToolsProtocol, prepare=small_limits)
        got, headers, body = answer(transport.writes)
        assert got == status, (size, pieces)
        if status == 431:
            assert json.loads(body)["error"] == {
                "message": "The request line and headers are larger than 1 KiB.",
                "type": "invalid_request_error",
                "param": None,
                "code": "request_header_too_large",
            }
            assert headers["connection"] == "close" and "server-timing" in headers
            assert transport.eof_written  # the write side closed, the rest is read and dropped


async def test_a_body_past_the_limit_in_the_heads_read_is_the_body() -> None:
    body = b"b" * 50_000
    request = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 50000\r\n\r\n" + body
    transport, _ = await serve(echo_body, [request], BoundedHttpToolsProtocol, prepare=small_limits)
    assert answer(transport.writes)[0::2] == (200, body)


async def test_the_next_request_on_the_connection_is_bounded_too() -> None:
    chunks = [head_of(300), head_of(2000)]
    transport, _ = await serve(echo_body, chunks, BoundedHttpToolsProtocol, prepare=small_limits)
    wire = b"".join(transport.writes)
    assert wire.startswith(b"HTTP/1.1 200 OK") and wire.count(b"HTTP/1.1 431 ") == 1


async def test_more_headers_than_allowed_is_431() -> None:
    fields = b"".join(b"x-h%d: v\r\n" % i for i in range(10))
    for extra, status in [(b"", 200), (b"x-one-more: v\r\n", 431)]:
        request = b"GET / HTTP/1.1\r\n" + fields[: -len(b"x-h9: v\r\n")] + b"host: x\r\n" + extra + b"\r\n"
        transport, _ = await serve(echo_body, [request], BoundedHttpToolsProtocol, prepare=small_limits)
        got, _, body = answer(transport.writes)
        assert got == status
    assert json.loads(body)["error"]["message"] == "The request has more than 10 headers."


async def test_a_request_the_parser_rejects_gets_the_envelope() -> None:
    transport, _ = await serve(echo_body, [b"NOT HTTP AT ALL\r\n\r\n"], BoundedHttpToolsProtocol)
    status, headers, body = answer(transport.writes)
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "invalid_request"


# ---------------------------------------------------------------------------- over real sockets


@pytest.fixture(scope="module")
def stack(
    upstream: MockUpstream, blackhole_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("heads")
    config = workdir / "bastion.yaml"
    config.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    built = make_stack("embedded", config, workdir)
    built.start({"BASTION_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT), "BASTION_KEEPALIVE_SECONDS": "10"})
    yield built
    drop_stack(built)


def connect(stack: Stack) -> socket.socket:
    host, port = stack.gateway.root.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("where", ["header", "url"])
def test_a_64_mib_head_is_431_without_the_memory(stack: Stack, where: str) -> None:
    pid = stack.gateway.process.pid
    httpx.get(stack.gateway.root + "/healthz")  # warm
    before = rss_kib(pid)
    with connect(stack) as sock:
        start = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " if where == "header" else b"GET /healthz?q="
        sock.sendall(start)
        block = b"a" * 65536
        for _ in range(1024):  # 64 MiB; Bastion reads and drops what follows its answer
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)
        wire = read_until_closed(sock)
    grown = rss_kib(pid) - before
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), wire[:200]
    assert json.loads(body)["error"]["code"] == "request_header_too_large"
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB"
    assert httpx.get(stack.gateway.root + "/healthz").status_code == 200


def test_a_head_under_the_limit_and_heads_with_many_headers(stack: Stack) -> None:
    pad = "p" * 30_000
    assert httpx.get(stack.gateway.root + "/healthz", headers={"x-pad": pad}).status_code == 200
    many = {f"x-h{i}": "v" for i in range(101)}
    refused = httpx.get(stack.gateway.root + "/healthz", headers=many)
    assert refused.status_code == 431
    assert refused.json()["error"]["message"] == "The request has more than 100 headers."


def test_a_head_not_sent_in_time_is_cut(stack: Stack) -> None:
    for sent in [b"", b"GET /healthz HTTP/1.1\r\nhost: x\r\n"]:  # a silent connection; a slow head
        with connect(stack) as sock:
            started = time.monotonic()
            sock.sendall(sent)
            assert read_until_closed(sock) == b""
            took = time.monotonic() - started
        assert HEAD_TIMEOUT <= took < HEAD_TIMEOUT + 2.5, took


def test_a_slow_head_in_time_and_an_idle_keep_alive_are_served(stack: Stack) -> None:
    request = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
    with connect(stack) as sock:
        for byte in range(0, len(request), 8):  # trickled over ~0.5 s: within the head timeout
            sock.sendall(request[byte : byte + 8])
            time.sleep(0.05)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        # Idle between requests longer than the head timeout: the keep-alive timeout (10 s) rules there.
        time.sleep(HEAD_TIMEOUT * 2)
        sock.sendall(request)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
