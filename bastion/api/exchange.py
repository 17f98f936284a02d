"""One client exchange on raw ASGI: the response side of a request, and watching for a hang-up."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bastion import metrics
from bastion.api.asgi import (
    RawHeaders,
    Receive,
    Scope,
    Send,
    client_request_id,
    new_request_id,
    send_bytes,
    send_error,
)
from bastion.auth import Principal
from bastion.errors import ApiError
from bastion.proxy.sse import error_event

_SSE_HEADERS: RawHeaders = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tells nginx in front not to buffer the stream
]


class Exchange:
    """The answer to one request: a JSON body, or an event stream that can still end in an error event."""

    __slots__ = (
        "_watch",
        "client_request_id",
        "endpoint",
        "error_code",
        "first_byte_at",
        "headers",
        "limited",
        "model",
        "principal",
        "receive",
        "record",
        "record_id",
        "request_id",
        "scope",
        "send",
        "started",
        "status",
        "streaming",
        "upstream",
        "upstream_seconds",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        # The id the client sees (its own x-request-id if it sent one), and the usage record's: always
        # Bastion's own, so a client reusing its ids cannot make two requests share one record.
        self.client_request_id = client_request_id(scope)
        self.record_id = new_request_id()
        request_id = self.request_id = self.client_request_id or self.record_id
        self.headers: RawHeaders = [(b"x-request-id", request_id.encode("ascii"))]
        self.streaming = False
        self.principal: Principal | None = None  # set once the key is verified
        self.limited = False  # the rate-limit headers are in `headers`
        self._watch: DisconnectWatch | None = None
        # For the access log, Server-Timing and metrics:
        self.started = time.perf_counter()
        self.status = 0
        self.error_code: str | None = None
        self.endpoint: str | None = None
        self.model: str | None = None
        self.upstream: str | None = None  # provider name
        self.upstream_seconds = 0.0  # waiting on the upstream before answering
        self.first_byte_at: float | None = None  # first streamed bytes written
        self.record: Any = None  # the usage record settled for this request

    def timing(self) -> tuple[bytes, bytes]:
        """Server-Timing: Bastion's own time, and the upstream's for an answer that is not streamed."""
        total = time.perf_counter() - self.started
        gateway = max(total - self.upstream_seconds, 0.0)
        value = f"gateway;dur={gateway * 1000:.2f}"
        if self.upstream_seconds and not self.streaming:
            value += f", upstream;dur={self.upstream_seconds * 1000:.1f}"
        return (b"server-timing", value.encode())

    def watch_disconnect(self) -> DisconnectWatch:
        """From now until the answer is complete, a client hang-up cancels the current task."""
        self._watch = DisconnectWatch(self.receive)
        return self._watch

    def _completing(self) -> None:
        # Once the last byte is handed over a hang-up changes nothing (and after it, uvicorn reports one).
        if self._watch is not None:
            self._watch.close()

    async def respond(self, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
        self._completing()
        self.status = status
        headers = [(b"content-type", content_type), *self.headers, self.timing()]
        await send_bytes(self.send, status, body, headers)

    async def start_stream(self) -> None:
        self.streaming = True
        metrics.live.open_streams += 1
        self.status = 200
        headers = [*_SSE_HEADERS, *self.headers, self.timing()]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    async def write(self, data: bytes) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        self._completing()
        await self.send({"type": "http.response.body", "body": data, "more_body": False})

    async def fail(self, error: ApiError) -> None:
        """The error as an envelope, or as one closing `data: {"error": ...}` event once streaming."""
        self.error_code = error.code
        if self.streaming:
            await self.end(error_event(error.body()))
        else:
            self._completing()
            self.status = error.status
            await send_error(self.send, error, [*self.headers, self.timing()])


class DisconnectWatch:
    """Cancels the request's task when the client hangs up, so the upstream is closed at once.

    A slow upstream means no writes to notice the hang-up by, so this listens for `http.disconnect`.
    Once `close()`d it never cancels, so settlement after forwarding cannot be interrupted.
    """

    __slots__ = ("_closed", "_task", "_watcher", "gone")

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._closed = False
        self._task = asyncio.current_task()
        self._watcher = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._closed and self._task is not None:
            self.gone = True
            self._task.cancel()

    def absorb(self) -> bool:
        """In an `except CancelledError`: True (and the cancel undone) if it was the client hanging up."""
        if not self.gone or self._task is None:
            return False
        self._task.uncancel()
        return True

    def close(self) -> None:
        self._closed = True
        self._watcher.cancel()
