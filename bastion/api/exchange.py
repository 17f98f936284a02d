"""One client exchange on raw ASGI: the response side of a request, and watching for a hang-up."""

from __future__ import annotations

import asyncio

from bastion.api.asgi import RawHeaders, Receive, Scope, Send, send_bytes, send_error
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
        "headers",
        "limited",
        "principal",
        "receive",
        "request_id",
        "scope",
        "send",
        "streaming",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.request_id = request_id
        self.headers: RawHeaders = [(b"x-request-id", request_id.encode("ascii"))]
        self.streaming = False
        self.principal: Principal | None = None  # set once the key is verified
        self.limited = False  # the rate-limit headers are in `headers`
        self._watch: DisconnectWatch | None = None

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
        await send_bytes(self.send, status, body, [(b"content-type", content_type), *self.headers])

    async def start_stream(self) -> None:
        self.streaming = True
        await self.send(
            {"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *self.headers]}
        )

    async def write(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        self._completing()
        await self.send({"type": "http.response.body", "body": data, "more_body": False})

    async def fail(self, error: ApiError) -> None:
        """The error as an envelope, or as one closing `data: {"error": ...}` event once streaming."""
        if self.streaming:
            await self.end(error_event(error.body()))
        else:
            self._completing()
            await send_error(self.send, error, self.headers)


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
