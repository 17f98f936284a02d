"""The exchange's writes, on uvicorn's own HTTP protocol with a transport that records each write.

`bastion serve` runs uvicorn's httptools protocol without its access log: there the stream is written
straight to the transport (bastion/api/direct.py); with the access log on (or any other server) it goes
through ASGI's `send`. Both must put the same bytes on the wire."""

from __future__ import annotations

from uvicorn_harness import serve_one as _serve_one

from bastion.api.asgi import Receive, Scope, Send
from bastion.api.exchange import Exchange


async def test_a_streams_head_leaves_with_its_first_bytes_in_one_write() -> None:
    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(scope, receive, send)
        exchange.start_stream()
        await exchange.write(b"data: 1\n\n")
        await exchange.write(b"data: 2\n\n")
        await exchange.end(b"data: [DONE]\n\n")

    writes = await _serve_one(stream, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n")
    head, _, first = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-type: text/event-stream" in head and b"transfer-encoding: chunked" in head
    assert first == b"9\r\ndata: 1\n\n\r\n"
    assert writes[1:] == [b"9\r\ndata: 2\n\n\r\n", b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"]


async def test_a_stream_ending_in_its_first_write_is_one_write() -> None:
    async def short(scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(scope, receive, send)
        exchange.start_stream()
        await exchange.end(b"data: 1\n\ndata: [DONE]\n\n")
        assert exchange.first_byte_at is not None  # time to first token is counted for it too

    writes = await _serve_one(short, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n")
    assert len(writes) == 1
    assert writes[0].endswith(b"\r\n\r\n17\r\ndata: 1\n\ndata: [DONE]\n\n\r\n0\r\n\r\n")


async def test_a_connection_that_does_not_stay_open_is_closed_after_the_write() -> None:
    async def short(scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(scope, receive, send)
        exchange.start_stream()
        await exchange.end(b"data: [DONE]\n\n")

    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    writes = await _serve_one(short, request)
    assert len(writes) == 1 and writes[0].endswith(b"0\r\n\r\n")
    assert b"connection: close" in writes[0]


async def test_through_asgi_send_the_bytes_are_the_same() -> None:
    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(scope, receive, send)
        exchange.prepare_stream(exchange.started)
        exchange.start_stream()
        await exchange.write(b"data: 1\n\n")
        await exchange.write(b"data: 2\n\n")
        await exchange.end(b"data: [DONE]\n\n")

    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: same-bytes\r\n\r\n"
    direct = await _serve_one(stream, request)
    through_send = await _serve_one(stream, request, access_log=True)
    assert len(direct) == 3 and len(through_send) == 4  # ASGI's `send` writes the head on its own

    def without_varying(wire: bytes) -> bytes:  # the date and Bastion's own timing
        head, _, body = wire.partition(b"\r\n\r\n")
        kept = [line for line in head.split(b"\r\n") if not line.startswith((b"date:", b"server-timing:"))]
        return b"\r\n".join(kept) + b"\r\n\r\n" + body

    assert without_varying(b"".join(direct)) == without_varying(b"".join(through_send))
    assert b"x-request-id: same-bytes\r\n" in direct[0]
