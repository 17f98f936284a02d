"""One client exchange on raw ASGI: the response side of a request, and watching for a hang-up."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bastion import metrics
from bastion.api.asgi import (
    Message,
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
        "_head",
        "_stream_head",
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
        self._head: Message | None = None  # an event stream's head, until its first bytes go with it
        self._stream_head: Message | None = None  # made while the upstream's first chunk is awaited
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

    def prepare_stream(self, forwarded_at: float) -> None:
        """The upstream began an event stream and its first chunk is awaited: the head is made in that
        wait, not on the first chunk (which a CPU just woken from idle mostly handles). Bastion's own
        time in a stream is its time before forwarding."""
        gateway = max(forwarded_at - self.started, 0.0)
        timing = (b"server-timing", f"gateway;dur={gateway * 1000:.2f}".encode())
        self._stream_head = {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_SSE_HEADERS, *self.headers, timing],
        }

    def start_stream(self) -> None:
        """The answer is an event stream: its head leaves with the first bytes written."""
        self.streaming = True
        metrics.live.open_streams += 1
        self.status = 200
        head = self._stream_head
        if head is None:
            head = {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_SSE_HEADERS, *self.headers, self.timing()],
            }
        self._head = head

    async def write(self, data: bytes) -> None:
        body = {"type": "http.response.body", "body": data, "more_body": True}
        if self._head is None:
            await self.send(body)
            return
        await self._send_head_with(body)

    async def end(self, data: bytes = b"") -> None:
        self._completing()
        body = {"type": "http.response.body", "body": data, "more_body": False}
        if self._head is None:
            await self.send(body)
        else:
            await self._send_head_with(body)

    async def _send_head_with(self, body: Message) -> None:
        """The head and the first bytes in one write, not two: the client then wakes once for both.
        Sent apart, the client (woken on this CPU by the head) ran before the first chunk was written:
        +0.27 ms to the time to first token at c=1 in the benchmark. Collecting the server's two writes
        costs no system call (TCP_CORK, used before, took two setsockopt calls: ~40 us at c=1)."""
        head, self._head = self._head, None
        assert head is not None
        if body["body"]:
            self.first_byte_at = time.perf_counter()
        # uvicorn's `send` is a method of its request cycle, which writes each message to
        # `cycle.transport` at once: for these two, the cycle's transport is a collector. (Inline, not a
        # context manager: this runs on a stream's first chunk, mostly on a CPU just woken from idle,
        # where contextlib's machinery alone took 20-80 us.) Any other ASGI server: two plain sends.
        cycle = getattr(self.send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None or not callable(getattr(transport, "write", None)):
            await self.send(head)
            await self.send(body)
            return
        collector = cycle.transport = _WriteCollector(transport)  # type: ignore[union-attr]
        try:
            await self.send(head)
            await self.send(body)
        finally:
            cycle.transport = transport  # type: ignore[union-attr]
            collector.flush()

    async def fail(self, error: ApiError) -> None:
        """The error as an envelope, or as one closing `data: {"error": ...}` event once streaming."""
        self.error_code = error.code
        if self.streaming:
            await self.end(error_event(error.body()))
        else:
            self._completing()
            self.status = error.status
            await send_error(self.send, error, [*self.headers, self.timing()])


class _WriteCollector:
    """A transport stand-in that keeps writes until `flush`; anything else flushes, then passes through
    (uvicorn closes the transport after the last body of a connection that does not keep alive)."""

    __slots__ = ("_parts", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def flush(self) -> None:
        parts, self._parts = self._parts, []
        if parts:
            self._transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self._transport, name)


class DisconnectWatch:
    """Cancels the request's task when the client hangs up, so the upstream is closed at once.

    A slow upstream means no writes to notice the hang-up by, so this listens for `http.disconnect`.
    Once `close()`d it never cancels, so settlement after forwarding cannot be interrupted.

    The watcher is not cancelled when closed: the ASGI server answers its pending `receive()` with
    `http.disconnect` once the response is complete (uvicorn wakes it then), so it ends by itself.
    Cancelling it left a CancelledError, its traceback and frames in reference cycles on every request:
    ~10 objects of cyclic garbage per request, and the gen-2 collections they caused took 45-70 ms
    each (p99 at c=32: 64 ms).
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
        self._task = None  # no reference from a finished watcher back to the request

    def absorb(self) -> bool:
        """In an `except CancelledError`: True (and the cancel undone) if it was the client hanging up."""
        task = asyncio.current_task()
        if not self.gone or task is None:
            return False
        task.uncancel()
        return True

    def close(self) -> None:
        self._closed = True
