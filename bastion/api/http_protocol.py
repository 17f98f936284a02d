"""The client connection: uvicorn's httptools protocol, with request heads bounded in size and time.

uvicorn's httptools protocol keeps a request's URL and every header in memory however long they are
(httptools joins a header's pieces by concatenation, so a 64 MiB header line costs 64 MiB and a
quadratic copy), and waits for a head forever. Here a head is fed to the parser only up to
`BASTION_MAX_HEADER_BYTES` (the request line and headers, like nginx's `large_client_header_buffers`):
past it, or past `BASTION_MAX_HEADERS` headers, the answer is 431 with the error envelope, and the
connection is closed after it. A client that has not sent its whole head
`BASTION_HEADER_TIMEOUT_SECONDS` after connecting (or after its head's first byte, on a keep-alive
connection) is disconnected, as nginx's `client_header_timeout` does; one timer per process checks every
connection each second, so a request costs no timer of its own. A request line the parser rejects gets
the envelope too (uvicorn answers it in plain text).

This subclasses uvicorn's protocol and relies on its internals (`parser`, `headers`, `cycle`,
`connections`, the parser callbacks, `_unset_keepalive_if_required`): pyproject pins uvicorn to the
versions it was checked against, and tests/test_http_protocol.py fails when they change shape.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cache
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from bastion.api.asgi import new_request_id
from bastion.errors import ApiError, invalid_request, request_header_too_large

LINGER_SECONDS = 2.0  # after a refusal, how long the rest of the client's bytes are read and dropped


@dataclass(frozen=True)
class HeadLimits:
    max_bytes: int
    max_headers: int
    timeout_seconds: float


@cache
def head_limits() -> HeadLimits:
    """The limits of this process (every worker reads its settings from the environment)."""
    from bastion.config import Settings

    settings = Settings()
    return HeadLimits(settings.max_header_bytes, settings.max_headers, settings.header_timeout_seconds)


class _TooManyHeaders(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """See the module's docstring."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = head_limits()
        self._in_head = True  # the bytes coming are a request head: counted
        self._head_bytes = 0
        self._head_since: float | None = None  # a head is awaited since then (None: not timed)
        self._refused = False  # answered and closing: what still arrives is dropped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_since = self.loop.time()
        _SlowHeads.watch(self)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_head:
            self._feed(data)
            return
        if self._head_since is None:  # a keep-alive connection's next head: timed from its first byte
            self._head_since = self.loop.time()
        room = self._limits.max_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            self._feed(data)
            return
        # The head may still end within the limit: feed up to it, refuse if it did not end there.
        view = memoryview(data)
        if self._feed(view[:room]) and not self._refused:
            if self._in_head:
                self._refuse(request_header_too_large(self._too_large_message()))
            else:
                self._feed(view[room:])

    def _feed(self, data: bytes | memoryview) -> bool:
        """uvicorn's `data_received`, with errors answered in the envelope. False once refused."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, _TooManyHeaders):
                message = f"The request has more than {self._limits.max_headers} headers."
                self._refuse(request_header_too_large(message))
            else:
                self.logger.debug("invalid HTTP request received: %s", error)
                self._refuse(invalid_request("Invalid HTTP request received."))
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        return True

    def _too_large_message(self) -> str:
        size = self._limits.max_bytes
        shown = f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} bytes"
        return f"The request line and headers are larger than {shown}."

    # Parser callbacks (uvicorn's, with the head's bounds kept)
    def on_headers_complete(self) -> None:
        if len(self.headers) > self._limits.max_headers:
            raise _TooManyHeaders
        self._in_head = False
        self._head_since = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # the next request's head may follow

    def _refuse(self, error: ApiError) -> None:
        """Answer `error` and close: the write side at once, the connection once the client has stopped
        sending (or after LINGER_SECONDS), so the answer is not lost to a reset by unread bytes."""
        self._refused = True
        self._head_since = None
        transport = self.transport
        if self.cycle is not None and not self.cycle.response_complete:
            transport.close()  # a response is being written on this connection: nothing can follow it
            return
        body = error.body()
        head = [
            STATUS_LINE[error.status],
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-request-id: " + new_request_id().encode() + b"\r\n",
            b"server-timing: gateway;dur=0.00\r\n",
            b"x-should-retry: false\r\n",
            b"connection: close\r\n\r\n",
        ]
        transport.write(b"".join(head) + body)
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def cut_slow_head(self) -> None:
        self._head_since = None
        self.logger.debug("closing a connection whose request head did not arrive in time")
        self.transport.close()


class _SlowHeads:
    """One timer per server: every second, the connections whose head is overdue are closed."""

    INTERVAL = 1.0

    def __init__(self, protocol: BoundedHttpToolsProtocol) -> None:
        self.loop = protocol.loop
        self.connections = protocol.connections
        self.timeout = protocol._limits.timeout_seconds
        self.interval = min(self.INTERVAL, self.timeout / 4)
        self.running = False

    @classmethod
    def watch(cls, protocol: BoundedHttpToolsProtocol) -> None:
        state = protocol.server_state
        sweeper: _SlowHeads | None = getattr(state, "bastion_slow_heads", None)
        if sweeper is None:
            sweeper = cls(protocol)
            state.bastion_slow_heads = sweeper
        if not sweeper.running:
            sweeper.running = True
            sweeper.loop.call_later(sweeper.interval, sweeper.sweep)

    def sweep(self) -> None:
        deadline = self.loop.time() - self.timeout
        for connection in list(self.connections):
            since = getattr(connection, "_head_since", None)
            if since is not None and since < deadline:
                connection.cut_slow_head()
        if self.connections:
            self.loop.call_later(self.interval, self.sweep)
        else:
            self.running = False
