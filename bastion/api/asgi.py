"""Raw ASGI plumbing for the hot routes: headers, request ids, bounded bodies, responses.

The /v1 routes run on this instead of FastAPI's per-route machinery, which roughly halves throughput
at 32 connections on this class of machine (shared/PERFORMANCE.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from bastion.api.direct import DirectStream
from bastion.errors import ApiError, ClientDisconnected, invalid_request, request_too_large

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]

_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:=+/-]{1,128}")
JSON_HEADERS: RawHeaders = [(b"content-type", b"application/json")]


_BY_NAME = "bastion.headers"  # the scope's headers by name, made at the first look (4 looks a request)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header `name` (lower case)."""
    by_name = scope.get(_BY_NAME)
    if by_name is None:
        by_name = scope[_BY_NAME] = dict(reversed(scope["headers"]))  # (reversed: the first one kept)
    return by_name.get(name)


def request_id_for(scope: Scope) -> str:
    """The client's x-request-id if it is sane (length, charset), else a fresh one."""
    return client_request_id(scope) or new_request_id()


def client_request_id(scope: Scope) -> str | None:
    """The client's own x-request-id, if it sent a sane one (length, charset)."""
    given = header(scope, b"x-request-id")
    if given is not None and _SANE_REQUEST_ID.fullmatch(given):
        return given.decode("ascii")
    return None


class _RandomIds:
    """`req_` + 96 random bits: os.urandom is read 4 KiB at a time (a getrandom() call per request was
    measurable), and a forked child starts with its own pool."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def reset(self) -> None:
        self._pool, self._at = b"", 0

    def next(self) -> str:
        if self._at + 12 > len(self._pool):
            self._pool, self._at = os.urandom(12 * 341), 0
        start = self._at
        self._at = start + 12
        return "req_" + self._pool[start : start + 12].hex()


_ids = _RandomIds()
os.register_at_fork(after_in_child=_ids.reset)


def new_request_id() -> str:
    return _ids.next()


def require_json_content_type(scope: Scope) -> None:
    content_type = header(scope, b"content-type")
    if content_type is None:
        return  # lenient: some clients omit it for JSON bodies
    media = content_type.split(b";", 1)[0].strip().lower()
    if media != b"application/json" and not media.endswith(b"+json"):
        raise invalid_request(
            f"Content-Type must be application/json, not '{media.decode('latin-1')}'.",
        )


async def body_chunks(receive: Receive, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives; 413 past `limit` bytes, ClientDisconnected if the client goes."""
    size = 0
    while True:
        message = await receive()
        chunk = _chunk(message, size, limit)
        if chunk:
            size += len(chunk)
            yield chunk
        if not message.get("more_body", False):
            return


def _chunk(message: Message, size: int, limit: int) -> bytes:
    """A request message's body bytes, `size` having come before; 413 past `limit`, ClientDisconnected
    for a hang-up."""
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    chunk: bytes = message.get("body", b"")
    if size + len(chunk) > limit:
        raise request_too_large(limit)
    return chunk


def declared_length(scope: Scope, limit: int) -> int | None:
    """The Content-Length, refused at once when over `limit`."""
    declared = header(scope, b"content-length")
    if declared is None:
        return None
    if not declared.isdigit():
        raise invalid_request("Content-Length is not a number.")
    if int(declared) > limit:
        raise request_too_large(limit)
    return int(declared)


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing anything over `limit` bytes before reading past it."""
    declared_length(scope, limit)
    chunks, size = [], 0
    while True:  # (body_chunks' loop, without an async generator: most bodies are one message)
        message = await receive()
        chunk = _chunk(message, size, limit)
        if chunk:
            size += len(chunk)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_bytes(send: Send, status: int, body: bytes, headers: RawHeaders) -> None:
    """The whole answer: written straight to uvicorn's connection in one write when it can be."""
    direct = DirectStream.of(send)
    if direct is not None and direct.respond(status, headers, body):
        return
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


_NOT_RETRYABLE = frozenset({400, 401, 402, 403, 404, 405, 413, 422})


async def send_error(send: Send, error: ApiError, extra_headers: RawHeaders) -> None:
    headers = [*JSON_HEADERS, *extra_headers]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    if error.status in _NOT_RETRYABLE and "x-should-retry" not in error.headers:
        headers.append((b"x-should-retry", b"false"))  # the OpenAI SDKs obey it
    await send_bytes(send, error.status, error.body(), headers)
