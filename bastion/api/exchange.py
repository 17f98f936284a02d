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
from bastion.api.direct import DirectStream
from bastion.auth import Principal
from bastion.errors import ApiError
from bastion.proxy.sse import error_event

try:
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as _UVICORN_CYCLE
except ImportError:  # pragma: no cover - uvicorn is a dependency; httptools may be missing
    _UVICORN_CYCLE = None

_SSE_HEADERS: RawHeaders = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tells nginx in front not to buffer the stream
]


class Exchange:
    """The answer to one request: a JSON body, or an event stream that can still end in an error event."""

    __slots__ = (
        "_direct",
        "_direct_head",
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
        self._direct: DirectStream | None = None  # writes the stream straight to uvicorn's connection
        self._direct_head: bytes | None = None  # the head it writes, rendered with `_stream_head`
        self.principal: Principal | None = None  # set once the key is verified
        self.limited = False  # the rate-limit headers are in `headers`
        self._watch: DisconnectWatch | CycleWatch | None = None
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

    def watch_disconnect(self) -> DisconnectWatch | CycleWatch:
        """From now until the answer is complete, a client hang-up cancels the current task."""
        cycle = getattr(self.receive, "__self__", None)
        task = asyncio.current_task()
        if type(cycle) is _UVICORN_CYCLE and not cycle.more_body and task is not None:
            self._watch = CycleWatch(cycle, task)
        else:
            self._watch = DisconnectWatch(self.receive)
        return self._watch

    def request_task(self) -> asyncio.Task[Any] | None:
        """The task the disconnect watch would cancel: the request's, until its answer is complete."""
        return self._watch.task() if self._watch is not None else None

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
        self._prepare_direct(self._stream_head["headers"])

    def _prepare_direct(self, headers: RawHeaders) -> None:
        direct = DirectStream.of(self.send)
        head = direct.render_head(200, headers) if direct is not None else None
        self._direct, self._direct_head = (direct, head) if head is not None else (None, None)

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
            self._prepare_direct(head["headers"])
        self._head = head

    async def write(self, data: bytes) -> None:
        if self._head is not None:
            if data:
                self.first_byte_at = time.perf_counter()
            if self._direct is not None and self._direct.write(data, self._direct_head):
                self._head = None
                return
            await self._send_head_with({"type": "http.response.body", "body": data, "more_body": True})
        elif self._direct is None or not self._direct.write(data):
            await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        """The last bytes and the end of the body, in one write."""
        self._completing()
        head = self._head
        if head is not None and data:
            self.first_byte_at = time.perf_counter()
        direct = self._direct
        if direct is not None and direct.finish(data, self._direct_head if head is not None else None):
            self._head = None
            return
        body = {"type": "http.response.body", "body": data, "more_body": False}
        if head is None:
            await self.send(body)
        else:
            await self._send_head_with(body)

    async def _send_head_with(self, body: Message) -> None:
        head, self._head = self._head, None
        assert head is not None
        await self.send(head)
        await self.send(body)

    async def fail(self, error: ApiError) -> None:
        """The error as an envelope, or as one closing `data: {"error": ...}` event once streaming."""
        self.error_code = error.code
        if self.streaming:
            await self.end(error_event(error.body()))
        else:
            self._completing()
            self.status = error.status
            await send_error(self.send, error, [*self.headers, self.timing()])


class _Watch:
    """What the two watches share: `gone` once the client hung up, and `absorb`."""

    __slots__ = ("gone",)
    _task: asyncio.Task[Any] | None  # (in each watch's slots)

    def __init__(self) -> None:
        self.gone = False

    def task(self) -> asyncio.Task[Any] | None:
        return self._task

    def absorb(self) -> bool:
        """In an `except CancelledError`: True (and the cancel undone) if it was the client hanging up."""
        task = asyncio.current_task()
        if not self.gone or task is None:
            return False
        task.uncancel()
        return True


class DisconnectWatch(_Watch):
    """Cancels the request's task when the client hangs up, so the upstream is closed at once.

    A slow upstream means no writes to notice the hang-up by, so this listens for `http.disconnect`.
    Once `close()`d it never cancels, so settlement after forwarding cannot be interrupted.

    The watcher is not cancelled when closed: the ASGI server answers its pending `receive()` with
    `http.disconnect` once the response is complete (uvicorn wakes it then), so it ends by itself.
    Cancelling it left a CancelledError, its traceback and frames in reference cycles on every request:
    ~10 objects of cyclic garbage per request, and the gen-2 collections they caused took 45-70 ms
    each (p99 at c=32: 64 ms).
    """

    __slots__ = ("_closed", "_task", "_watcher")

    def __init__(self, receive: Receive) -> None:
        super().__init__()
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

    def close(self) -> None:
        self._closed = True


class CycleWatch(_Watch):
    """`DisconnectWatch` for uvicorn's request cycle, without a task: a callback on the event uvicorn
    sets when the connection is lost, the one its `receive` waits on.

    A task awaiting `receive()` cost a task created, registered (a WeakSet's add and remove in Python),
    stepped twice and finished per request: ~300 bytecodes and two event-loop turns. Here the waiter is
    put where `asyncio.Event.wait` puts its own (`_waiters`; tests/test_uvicorn_internals.py checks the
    event and the cycle still work so), and `close()` takes it out again, so a request that is answered
    costs a future and no wake-up.
    """

    __slots__ = ("_cycle", "_task", "_waiter")

    def __init__(self, cycle: Any, task: asyncio.Task[Any]) -> None:
        super().__init__()
        self._cycle = cycle
        self._task: asyncio.Task[Any] | None = task
        self._waiter: asyncio.Future[Any] | None = None
        self._arm()

    def _arm(self) -> None:
        """As `receive()` does before it waits: reading resumed, the event cleared, then waited on."""
        cycle, task = self._cycle, self._task
        if task is None or cycle.response_complete:
            return
        if cycle.disconnected:
            self.gone, self._task = True, None
            task.cancel()
            return
        cycle.flow.resume_reading()  # a hang-up is read as the end of the stream
        event = cycle.message_event
        event.clear()
        waiter = self._waiter = task.get_loop().create_future()
        event._waiters.append(waiter)
        waiter.add_done_callback(self._woken)

    def _woken(self, waiter: asyncio.Future[Any]) -> None:
        if waiter is not self._waiter:
            return
        self._waiter = None
        self._cycle.message_event._waiters.remove(waiter)  # as Event.wait's `finally` does
        self._arm()

    def close(self) -> None:
        self._task = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.remove_done_callback(self._woken)
            self._cycle.message_event._waiters.remove(waiter)
