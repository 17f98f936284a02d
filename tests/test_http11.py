"""The upstream HTTP/1.1 client over real sockets: pooling, stale connections, body framing, timeouts,
limits and back-pressure, against small asyncio servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bastion.proxy.http11 import Http11Pool, UpstreamFailure
from bastion.proxy.http11.prepared import PreparedPost

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw HTTP server on a free port: `handler` answers each connection as it likes."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                self.open_now -= 1
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-type: application/json\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


def pool(url: str, **options: float) -> Http11Pool:
    settings = {"max_connections": 8, "connect_timeout": 2.0, "read_timeout": 2.0} | options
    return Http11Pool(url, [("authorization", "Bearer up-key")], **settings)  # type: ignore[arg-type]


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        body = await read_request(reader)
        writer.write(answer(b'{"echo":' + body + b"}"))
        await writer.drain()


async def test_answers_come_back_and_the_connection_is_reused() -> None:
    async with Server(keep_answering) as server:
        upstream = pool(server.url)
        for i in range(5):
            response = await upstream.post("/chat", [("content-type", "application/json")], b"%d" % i)
            assert (response.status, response.content_type) == (200, "application/json")
            assert await response.read() == b'{"echo":%d}' % i
        await upstream.close()
    assert server.connections == 1


async def test_the_request_carries_the_fixed_and_the_per_request_headers() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head + await reader.readexactly(2))
        writer.write(answer(b"{}"))
        await writer.drain()

    async with Server(record) as server:
        port = server.url.split(":")[2].split("/")[0]
        upstream = pool(server.url)
        response = await upstream.post("/chat/completions", [("x-request-id", "req_1")], b"{}")
        await response.read()
        await upstream.close()
    lines = seen[0].split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert f"host: 127.0.0.1:{port}".encode() in lines
    assert b"authorization: Bearer up-key" in lines and b"x-request-id: req_1" in lines
    assert b"content-length: 2" in lines and seen[0].endswith(b"\r\n\r\n{}")


async def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError):
        await pool("http://127.0.0.1:9/v1").post("/x", [("x-request-id", "a\r\nevil: 1")], b"{}")


async def test_a_pooled_connection_the_server_closed_is_replaced_silently() -> None:
    async def one_answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))  # claims keep-alive, then closes anyway
        await writer.drain()

    async with Server(one_answer_then_close) as server:
        upstream = pool(server.url)
        for _ in range(10):
            response = await upstream.post("/x", [], b"{}")
            assert await response.read() == b"{}"
            await asyncio.sleep(0.01)  # sometimes the close lands while pooled, sometimes on reuse
        await upstream.close()
    assert server.connections == 10


async def test_a_body_delimited_by_the_close_is_read_whole() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")
        await writer.drain()

    async with Server(until_close) as server:
        upstream = pool(server.url)
        response = await upstream.post("/x", [], b"{}")
        assert await response.read() == b"part one, part two"
        await upstream.close()


async def test_chunked_bytes_are_handed_over_as_they_arrive() -> None:
    second = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        writer.write(b"d\r\ndata: first\n\n\r\n")
        await writer.drain()
        await second.wait()
        writer.write(b"e\r\ndata: second\n\n\r\n0\r\n\r\n")
        await writer.drain()
        await read_request(reader)  # the connection stays usable
        writer.write(answer(b"again"))
        await writer.drain()

    async with Server(chunked) as server:
        upstream = pool(server.url)
        response = await upstream.post("/x", [], b"{}")
        assert response.content_type == "text/event-stream"
        pieces = response.chunks()
        assert await anext(pieces) == b"data: first\n\n"  # before the server sends the rest
        second.set()
        assert [piece async for piece in pieces] == [b"data: second\n\n"]
        response.release()
        again = await upstream.post("/x", [], b"{}")
        assert await again.read() == b"again"
        await upstream.close()
    assert server.connections == 1


async def test_an_unasked_gzip_body_is_decompressed() -> None:
    async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(gzip.compress(b'{"ok":true}'), b"content-encoding: gzip\r\n"))
        await writer.drain()

    async with Server(gzipped) as server:
        upstream = pool(server.url)
        assert await (await upstream.post("/x", [], b"{}")).read() == b'{"ok":true}'
        await upstream.close()


async def test_garbage_is_a_protocol_failure() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with Server(garbage) as server:
        upstream = pool(server.url)
        with pytest.raises(UpstreamFailure) as caught:
            await upstream.post("/x", [], b"{}")
        assert caught.value.kind == "protocol"
        await upstream.close()


async def test_refused_and_unanswered_connections() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(UpstreamFailure) as refused:
        await pool(f"http://127.0.0.1:{closed_port}/v1").post("/x", [], b"{}")
    assert refused.value.kind == "connect"

    # A listener that never accepts: its backlog fills, and the next SYN is never answered.
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        port = blackhole.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamFailure) as timed_out:
            await pool(f"http://127.0.0.1:{port}/v1", connect_timeout=0.3).post("/x", [], b"{}")
        assert timed_out.value.kind == "connect_timeout" and loop.time() - started < 2
        for filler in fillers:
            filler.close()


async def test_silence_past_the_read_timeout_fails_the_answer() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async with Server(silent) as server:
        upstream = pool(server.url, read_timeout=0.3)
        response = await upstream.post("/x", [], b"{}")
        pieces = response.chunks()
        assert await anext(pieces) == b"hello"
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamFailure) as caught:
            await anext(pieces)
        assert caught.value.kind == "read_timeout" and 0.25 < loop.time() - started < 2
        await upstream.close()


async def test_the_pool_never_opens_more_than_its_limit() -> None:
    release = asyncio.Event()

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await release.wait()
            writer.write(answer(b"{}"))
            await writer.drain()

    async with Server(held) as server:
        upstream = pool(server.url, max_connections=2)

        async def one() -> bytes:
            return await (await upstream.post("/x", [], b"{}")).read()

        calls = [asyncio.create_task(one()) for _ in range(6)]
        deadline = asyncio.get_running_loop().time() + 5
        while server.open_now < 2 and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # a poll with a deadline: the server has no event to offer
        release.set()
        assert await asyncio.gather(*calls) == [b"{}"] * 6
        await upstream.close()
    assert server.most_open == 2


async def test_a_slow_reader_stops_the_upstream_instead_of_buffering_it() -> None:
    blocked = asyncio.Event()
    total = 64 * 1024 * 1024

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.set_write_buffer_limits(high=8 * 1024 * 1024)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        for _ in range(total // len(block)):
            writer.write(block)
            if writer.transport.get_write_buffer_size() > 1024 * 1024:
                blocked.set()  # the client stopped reading: both sockets are full, bytes pile up here
            await writer.drain()

    async with Server(flood) as server:
        upstream = pool(server.url)
        response = await upstream.post("/x", [], b"{}")
        await asyncio.wait_for(blocked.wait(), 10)
        assert response._buffered < 1024 * 1024  # what the client holds, not the 8 MiB sent
        received = 0
        async for piece in response.chunks():
            received += len(piece)
        assert received == total
        await upstream.close()


async def test_a_streamed_upload_goes_out_chunked() -> None:
    received: list[bytes] = []

    async def read_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            received.append(data[:-2])
        writer.write(answer(b"{}"))
        await writer.drain()

    async def upload() -> AsyncIterator[bytes]:
        for part in (b"first ", b"", b"second"):
            yield part

    async with Server(read_chunked) as server:
        upstream = pool(server.url)
        assert await (await upstream.post("/x", [], upload())).read() == b"{}"
        await upstream.close()
    assert received == [b"first ", b"second"]


async def test_a_request_lost_on_a_reused_connection_is_sent_again_once() -> None:
    async def forget_the_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        await read_request(reader)  # read, then closed unanswered: a keep-alive close racing a request

    async with Server(forget_the_second) as server:
        upstream = pool(server.url)
        for _ in range(3):
            assert await (await upstream.post("/x", [], b"{}")).read() == b"{}"
        await upstream.close()
    assert server.connections == 3


async def test_a_streamed_upload_is_not_sent_twice() -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    async def upload() -> AsyncIterator[bytes]:
        yield b"part"

    async with Server(close_at_once) as server:
        upstream = pool(server.url)
        with pytest.raises(UpstreamFailure) as caught:
            await upstream.post("/x", [], upload())
        assert caught.value.kind == "disconnected"
        await upstream.close()
    assert server.connections == 1


@pytest.mark.parametrize(("end_after", "connections"), [(0.001, 1), (0.2, 2)])
async def test_a_request_waits_a_moment_for_a_connection_finishing_its_answer(
    end_after: float, connections: int
) -> None:
    """The client has the whole answer once [DONE] is relayed; its next request comes at once, while
    the upstream has yet to end the body. A connection that ends soon is reused, rather than a new one
    opened; one that takes longer than the wait (REUSE_WAIT_SECONDS) is not waited for."""
    ended = asyncio.Event()

    async def late_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                b"e\r\ndata: [DONE]\n\n\r\n"
            )
            await writer.drain()
            await asyncio.sleep(end_after)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            ended.set()

    async with Server(late_end) as server:
        upstream = pool(server.url)
        first = await upstream.post("/x", [], b"{}")
        assert await first.next_chunk() == b"data: [DONE]\n\n"

        async def finish() -> None:
            assert await first.drain(1.0)
            first.release()

        finishing = asyncio.ensure_future(finish())
        await asyncio.sleep(0)  # the drain is under way: the next request finds no idle connection
        second = await upstream.post("/x", [], b"{}")
        assert await second.next_chunk() == b"data: [DONE]\n\n"
        await finishing
        await ended.wait()
        await upstream.close()
    assert server.connections == connections


async def test_a_prepared_request_leaves_only_when_sent_and_an_unsent_one_gives_its_connection_back() -> None:
    """The request path makes the upstream request ready on an idle connection while admission is
    decided: nothing may reach the upstream until `send`, and a request refused meanwhile (`cancel`)
    leaves the connection in the pool, unused and still good."""
    received: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await read_request(reader)
            received.append(body)
            writer.write(answer(b'{"echo":' + body + b"}"))
            await writer.drain()

    async with Server(record) as server:
        upstream = pool(server.url)
        assert upstream.prepare("/x", [], b"0") is None  # no idle connection yet: `post` connects
        assert await (await upstream.post("/x", [], b"1")).read() == b'{"echo":1}'

        refused = upstream.prepare("/x", [("x-request-id", "refused")], b"2")
        assert refused is not None
        assert upstream.prepare("/x", [], b"0") is None  # the one idle connection is taken
        refused.cancel()
        assert await (await upstream.post("/x", [], b"3")).read() == b'{"echo":3}'

        admitted = upstream.prepare("/x", [], b"4")
        assert admitted is not None
        admitted.send()
        admitted.send()  # once only
        response = await admitted.response()
        assert await response.read() == b'{"echo":4}'
        admitted.cancel()  # after `response` the answer is the caller's: nothing to undo
        assert await (await upstream.post("/x", [], b"5")).read() == b'{"echo":5}'
        await upstream.close()
    assert received == [b"1", b"3", b"4", b"5"]
    assert server.connections == 1


async def _prepared_after_one_answer(upstream: Http11Pool) -> PreparedPost:
    """A request answered (its connection pooled), then one prepared on that connection."""
    assert await (await upstream.post("/x", [], b"{}")).read() == b"{}"
    prepared = upstream.prepare("/x", [], b"{}")
    assert prepared is not None
    return prepared


async def test_a_prepared_request_cancelled_after_sending_closes_its_connection() -> None:
    """Sent, then not taken up (the request's task ended first): the connection is closed, so the
    upstream stops working on it."""
    got_request = asyncio.Event()
    closed = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        await read_request(reader)
        got_request.set()
        if await reader.read() == b"":
            closed.set()

    async with Server(hold) as server:
        upstream = pool(server.url)
        prepared = await _prepared_after_one_answer(upstream)
        prepared.send()
        await asyncio.wait_for(got_request.wait(), 2)
        prepared.cancel()
        await asyncio.wait_for(closed.wait(), 2)
        await upstream.close()


async def test_a_prepared_request_whose_connection_closed_meanwhile_goes_on_a_fresh_one() -> None:
    """The server closed the connection after it was taken for a prepared request (a keep-alive close
    racing the admission): `send` finds it closed and the request goes on a new connection."""
    close_now = asyncio.Event()

    async def answer_then_close_on_cue(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first_connection = server.connections == 1
        await read_request(reader)
        writer.write(answer(b"{}" if first_connection else b'{"fresh":true}'))
        await writer.drain()
        if first_connection:
            await close_now.wait()

    async with Server(answer_then_close_on_cue) as server:
        upstream = pool(server.url)
        prepared = await _prepared_after_one_answer(upstream)
        close_now.set()
        deadline = asyncio.get_running_loop().time() + 2
        while not prepared._connection.lost:  # the close reached the client side
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.001)
        prepared.send()
        assert await (await prepared.response()).read() == b'{"fresh":true}'
        await upstream.close()
    assert server.connections == 2
