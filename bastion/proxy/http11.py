"""A lean HTTP/1.1 client for the upstream leg: one keep-alive pool per provider, httptools parsing.

Why not aiohttp's client: the request path needs one thing from it, POST a body and relay the answer as
it arrives, and aiohttp's general machinery for that (URL objects, header multidicts, request and
response objects with their own streams, traces, timer contexts) was ~120 us of CPU per request here,
a fifth of everything Bastion spent. This client writes a precomputed request head and the body in one
write, parses the answer with httptools (llhttp, the parser uvicorn serves with) and hands body bytes
over as they arrive, with back-pressure (it stops reading while the relay has not taken them).

Timeouts follow the provider's settings: `connect` bounds opening a connection (TLS included); `read` is
the longest silence while an answer is awaited, first byte included. A connection the server closed
while idle in the pool is noticed and dropped; a request that meets such a close before any byte of its
answer is sent again on a fresh connection, once (a body still streaming from the client is not).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import cast
from urllib.parse import urlsplit

import httptools

_HIGH_WATER = 256 * 1024  # answer bytes buffered before reading pauses (the client reads slower)
_MAX_HEADER_BYTES = 64 * 1024
_UPLOAD_CUT = "closed the connection during the upload"


class UpstreamFailure(Exception):
    """The upstream could not be reached or broke off; `kind` says how (for the client's message)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind  # connect_timeout | connect | read_timeout | disconnected | protocol


class _Stale(Exception):
    """A pooled connection turned out closed before any byte of the answer: resend on a fresh one."""


class Http11Pool:
    def __init__(
        self,
        base_url: str,
        headers: Iterable[tuple[str, str]],
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
        keepalive_seconds: float = 60.0,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"unsupported upstream URL scheme {url.scheme!r}")
        self.host = url.hostname
        self.tls = url.scheme == "https"
        self.port = url.port or (443 if self.tls else 80)
        self.prefix = url.path.rstrip("/")
        host_header = self.host if url.port is None else f"{self.host}:{url.port}"
        if ":" in self.host:  # an IPv6 literal
            host_header = f"[{self.host}]" if url.port is None else f"[{self.host}]:{url.port}"
        fixed = [("host", host_header), *headers]
        self._fixed_head = b"".join(_header_line(name, value) for name, value in fixed)
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_seconds = keepalive_seconds
        self._ssl = ssl.create_default_context() if self.tls else None
        self._idle: list[_Connection] = []
        self._open = 0  # connections open or opening
        self._waiting: deque[asyncio.Future[None]] = deque()
        self.closed = False

    async def post(
        self, path: str, headers: Iterable[tuple[str, str]], body: bytes | AsyncIterator[bytes]
    ) -> Http11Response:
        """Send the request; return once the answer's status and headers are in."""
        varying = b"".join(_header_line(name, value) for name, value in headers)
        target = (self.prefix + path).encode("ascii")
        if isinstance(body, bytes):
            head = b"POST %s HTTP/1.1\r\n%s%scontent-length: %d\r\n\r\n" % (
                target,
                self._fixed_head,
                varying,
                len(body),
            )
        else:
            head = b"POST %s HTTP/1.1\r\n%s%stransfer-encoding: chunked\r\n\r\n" % (
                target,
                self._fixed_head,
                varying,
            )
        connection = await self._acquire()
        try:
            try:
                return await connection.exchange(head, body, self.read_timeout)
            except _Stale:
                if not isinstance(body, bytes):
                    raise UpstreamFailure("disconnected", "connection closed before the answer") from None
            self._discard(connection)
            connection = await self._acquire(fresh=True)
            try:
                return await connection.exchange(head, body, self.read_timeout)
            except _Stale:
                raise UpstreamFailure("disconnected", "connection closed before the answer") from None
        except BaseException:
            self._discard(connection)
            raise

    async def close(self) -> None:
        self.closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # -- the pool ------------------------------------------------------------------------------------

    async def _acquire(self, fresh: bool = False) -> _Connection:
        if self.closed:
            raise UpstreamFailure("connect", "the provider is closed")
        loop = asyncio.get_running_loop()
        while not fresh and self._idle:
            connection = self._idle.pop()
            if connection.usable(loop.time(), self.keepalive_seconds):
                return connection
            self._discard(connection)
        while self._open >= self.max_connections:
            waiter = loop.create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass on the slot this waiter was given
                raise
            if self.closed:
                raise UpstreamFailure("connect", "the provider is closed")
            if not fresh and self._idle:
                connection = self._idle.pop()
                if connection.usable(loop.time(), self.keepalive_seconds):
                    return connection
                self._discard(connection)
        self._open += 1
        try:
            return await self._connect(loop)
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            raise UpstreamFailure(
                "connect_timeout", f"no connection within {self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise UpstreamFailure("connect", str(exc) or type(exc).__name__) from None
        return protocol

    def _release(self, connection: _Connection) -> None:
        """An answer was read to its end on a connection the server keeps open: pool it."""
        if self.closed or not connection.reusable:
            self._discard(connection)
            return
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.append(connection)
        self._wake_one()

    def _discard(self, connection: _Connection) -> None:
        if connection.counted:
            connection.counted = False
            self._open -= 1
            connection.close()
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _forget_idle(self, connection: _Connection) -> None:
        """The server closed a pooled connection."""
        if connection in self._idle:
            self._idle.remove(connection)
        self._discard(connection)


class _Connection(asyncio.Protocol):
    def __init__(self, pool: Http11Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.counted = True  # counts against the pool's limit until discarded
        self.idle_since = 0.0
        self.reusable = False
        self.lost = False
        self.in_use = False
        self.response: Http11Response | None = None
        self._write_ready: asyncio.Future[None] | None = None  # set while the transport is paused
        self._header_bytes = 0

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes on an idle connection: the server is not speaking HTTP to us
            self.close()
            return
        response.last_activity = response.loop.time()
        response.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            response.fail(UpstreamFailure("protocol", "unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            response.fail(UpstreamFailure("protocol", f"malformed HTTP answer ({exc})"))

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.reusable = False
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_exception(ConnectionResetError("upstream connection lost"))
        response = self.response
        if response is None:
            if not self.in_use:
                self.pool._forget_idle(self)
            return
        if response.headers_done and not response.complete and response.until_close:
            response.finish_body()  # an answer delimited by the connection's close
        elif not response.complete:
            if not response.received_any:
                response.fail(_Stale())
            else:
                detail = "closed the connection mid-answer"
                response.fail(UpstreamFailure("disconnected", detail if exc is None else f"{detail}: {exc}"))

    def pause_writing(self) -> None:
        if self._write_ready is None or self._write_ready.done():
            self._write_ready = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        assert response is not None
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise httptools.HttpParserError("answer headers too large")
        response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        response.status = self.parser.get_status_code()
        if response.status < 200:  # 1xx: an interim answer; the real one follows
            response.headers.clear()
            return
        self.reusable = self.parser.should_keep_alive()
        response.headers_ready()

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        response.add_body(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is not None and response.status >= 200:
            response.finish_body()

    # -- one request at a time -----------------------------------------------------------------------

    def usable(self, now: float, keepalive: float) -> bool:
        return not self.lost and self.transport is not None and now - self.idle_since < keepalive

    async def exchange(
        self, head: bytes, body: bytes | AsyncIterator[bytes], read_timeout: float
    ) -> Http11Response:
        transport = self.transport
        if transport is None or self.lost:
            raise _Stale()
        self.in_use = True
        self.reusable = False
        self._header_bytes = 0
        self.parser = httptools.HttpResponseParser(self)
        response = self.response = Http11Response(self, read_timeout)
        if isinstance(body, bytes):
            transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                transport.write(body)
        else:
            transport.write(head)
            await self._send_chunked(body)
        await response.wait_headers()
        return response

    async def _send_chunked(self, body: AsyncIterator[bytes]) -> None:
        transport = self.transport
        async for chunk in body:
            if self.lost or transport is None:
                raise UpstreamFailure("disconnected", _UPLOAD_CUT)
            if chunk:
                transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if self._write_ready is not None and not self._write_ready.done():
                    try:
                        await self._write_ready
                    except ConnectionResetError:
                        raise UpstreamFailure(
                            "disconnected", "closed the connection during the upload"
                        ) from None
        if self.lost or transport is None:
            raise UpstreamFailure("disconnected", _UPLOAD_CUT)
        transport.write(b"0\r\n\r\n")

    def done_with(self, response: Http11Response) -> None:
        """The response is over: pool the connection if its answer was read to the end, else close it."""
        if self.response is not response:
            return
        self.response = None
        self.in_use = False
        if response.complete and response.error is None and self.reusable and not self.lost:
            if self.transport is not None and self.transport.is_reading() is False:
                self.transport.resume_reading()
            self.pool._release(self)
        else:
            self.pool._discard(self)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class Http11Response:
    """One answer: status and headers (lower-case names), then the body, whole or as it arrives."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_connection",
        "_timer",
        "_waiter",
        "complete",
        "error",
        "headers",
        "headers_done",
        "last_activity",
        "loop",
        "read_timeout",
        "received_any",
        "status",
    )

    def __init__(self, connection: _Connection, read_timeout: float) -> None:
        self._connection = connection
        self.loop = asyncio.get_running_loop()
        self.read_timeout = read_timeout
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.error: BaseException | None = None
        self.received_any = False
        self.last_activity = self.loop.time()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def until_close(self) -> bool:
        """The body has neither a length nor chunks: it ends when the connection does."""
        return "content-length" not in self.headers and "chunked" not in self.headers.get(
            "transfer-encoding", ""
        )

    # -- fed by the connection -----------------------------------------------------------------------

    def headers_ready(self) -> None:
        self.headers_done = True
        self._wake()

    def add_body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and self._connection.transport is not None:
            self._connection.transport.pause_reading()
        self._wake()

    def finish_body(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self._connection.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the relay ---------------------------------------------------------------------------

    async def _wait(self) -> None:
        """Until the connection has news (headers, bytes, the end, a failure), or the read timeout."""
        self._waiter = self.loop.create_future()
        if self._timer is None:
            # Silence counts while the answer is awaited, not while the relay held reading paused.
            self.last_activity = max(self.last_activity, self.loop.time())
            self._timer = self.loop.call_at(self.last_activity + self.read_timeout, self._check_silence)
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _check_silence(self) -> None:
        self._timer = None
        if self._waiter is None or self._waiter.done():
            return
        silent_until = self.last_activity + self.read_timeout
        if self.loop.time() >= silent_until:
            self.fail(UpstreamFailure("read_timeout", f"nothing for {self.read_timeout:g} s"))
        else:
            self._timer = self.loop.call_at(silent_until, self._check_silence)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def wait_headers(self) -> None:
        try:
            while not self.headers_done:
                if self.error is not None:
                    raise self.error
                await self._wait()
        finally:
            self._stop_timer()

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    async def read(self) -> bytes:
        """The whole body (decompressed if the server compressed it unasked); then the connection is
        pooled or closed."""
        try:
            while not self.complete:
                if self.error is not None:
                    raise self.error
                if self._buffered > _HIGH_WATER:
                    self._resume()
                await self._wait()
            data = b"".join(self._chunks)
            self._chunks.clear()
        finally:
            self._stop_timer()
            self._connection.done_with(self)
        encoding = self.headers.get("content-encoding", "identity").lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            try:
                data = zlib.decompress(data, 47 if encoding != "deflate" else zlib.MAX_WBITS)
            except zlib.error as exc:
                raise UpstreamFailure("protocol", f"undecodable {encoding} body") from exc
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (everything buffered at once, in one piece)."""
        try:
            while True:
                if self._chunks:
                    data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
                    self._chunks.clear()
                    self._buffered = 0
                    self._resume()
                    yield data
                elif self.complete:
                    return
                elif self.error is not None:
                    raise self.error
                else:
                    await self._wait()
        finally:
            self._stop_timer()

    def _resume(self) -> None:
        transport = self._connection.transport
        if transport is not None and not self._connection.lost:
            transport.resume_reading()

    async def drain(self, grace: float) -> bool:
        """Read the rest of the body for at most `grace` seconds (so the connection can be reused)."""
        try:
            async with asyncio.timeout(grace):
                while not self.complete:
                    if self.error is not None:
                        return False
                    self._chunks.clear()
                    self._buffered = 0
                    self._resume()
                    await self._wait()
        except TimeoutError:
            return False
        finally:
            self._stop_timer()
        self._chunks.clear()
        return self.error is None

    def release(self) -> None:
        """Done with the answer: a fully read one pools its connection, any other closes it."""
        self._stop_timer()
        self._connection.done_with(self)

    def abort(self) -> None:
        self._stop_timer()
        self._connection.close()
        self._connection.done_with(self)


_UNSAFE_VALUE = re.compile(r"[\r\n\0]")
_UNSAFE_NAME = re.compile(r"[\r\n\0: ]")


def _header_line(name: str, value: str) -> bytes:
    if _UNSAFE_VALUE.search(value) or _UNSAFE_NAME.search(name):
        raise ValueError(f"invalid character in upstream header {name!r}")
    return f"{name}: {value}\r\n".encode("latin-1")
