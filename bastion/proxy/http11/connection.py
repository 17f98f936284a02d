"""One upstream connection: an asyncio protocol feeding httptools, one request at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, cast

import httptools

from bastion.proxy.http11.errors import UpstreamFailure, _Stale
from bastion.proxy.http11.response import Http11Response

if TYPE_CHECKING:
    from bastion.proxy.http11.pool import Http11Pool

_MAX_HEADER_BYTES = 64 * 1024
_UPLOAD_CUT = "closed the connection during the upload"


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
        if isinstance(body, bytes):
            response = self.begin(head, body, read_timeout)
        else:
            response = self.begin(head, b"", read_timeout)
            await self._send_chunked(body)
        await response.wait_headers()
        return response

    def begin(self, head: bytes, body: bytes, read_timeout: float) -> Http11Response:
        """Write the request (head and a whole body) now; its answer comes into the response returned."""
        transport = self.transport
        if transport is None or self.lost:
            raise _Stale()
        self.in_use = True
        self.reusable = False
        self._header_bytes = 0
        self.parser = httptools.HttpResponseParser(self)
        response = self.response = Http11Response(self, read_timeout)
        if len(body) < 65536:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
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
