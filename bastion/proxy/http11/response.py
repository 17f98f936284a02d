"""One upstream answer: status and headers, then its body whole or as it arrives, with a read timeout
and back-pressure."""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from bastion.proxy.http11.errors import UpstreamFailure

if TYPE_CHECKING:
    from bastion.proxy.http11.connection import _Connection

_HIGH_WATER = 256 * 1024  # answer bytes buffered before reading pauses (the client reads slower)


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

    async def next_chunk(self) -> bytes | None:
        """Body bytes that arrived since the last call (everything buffered, in one piece), waiting for
        some; None at the end of the body."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                if self._buffered > _HIGH_WATER:
                    self._resume()
                self._buffered = 0
                return data
            if self.complete:
                self._stop_timer()
                return None
            if self.error is not None:
                self._stop_timer()
                raise self.error
            await self._wait()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (`next_chunk` until the end)."""
        try:
            while (data := await self.next_chunk()) is not None:
                yield data
        finally:
            self._stop_timer()

    def _resume(self) -> None:
        transport = self._connection.transport
        if transport is not None and not self._connection.lost:
            transport.resume_reading()

    async def drain(self, grace: float) -> bool:
        """Read the rest of the body for at most `grace` seconds (so the connection can be reused)."""
        if self.complete:  # nearly always, once the relay saw [DONE]: no timeout to arm
            self._chunks.clear()
            return self.error is None
        pool = self._connection.pool
        pool.finishing += 1
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
            pool.finishing -= 1
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
