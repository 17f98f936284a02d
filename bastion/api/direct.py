"""Answers written straight to uvicorn's connection, for the hot writes: event streams and JSON.

Through ASGI, each write of a stream goes through uvicorn's `send`: the response head is checked and
rendered header by header when the first chunk goes out (two regular expressions per header), and every
chunk is framed by a coroutine. This renders the head while the upstream's first chunk is awaited and
writes the head with that chunk, then each chunk, framed, to the transport: the same bytes uvicorn
would write, and its request cycle's state kept as its own `send` keeps it, so uvicorn finishes the
response (keep-alive, the next request) as usual. On the benchmark's paced stream (A/B in one run):
time to first token at c=16 -0.95 ms, at c=1 first chunk in -> out 0.50 -> 0.47 ms (packet capture).

A JSON answer (`respond`) is its head and body in one write, where uvicorn's `send` checks and renders
the head header by header and writes head and body apart (two system calls, the second often a packet
of its own).

The head is checked as uvicorn checks it, in two searches over all names and all values at once
rather than two per header (a name may not hold the characters uvicorn's HEADER_RE refuses, so neither
may their concatenation; values are joined by a tab, which a value may hold). Lines whose names are
already in lower case (all of Bastion's) are rendered first and checked whole by one expression made
of uvicorn's two (`_plain_lines`): 409 bytecodes an answer before, ~100 now.

Only for uvicorn's httptools protocol (the one `bastion serve` runs), and only while writing is not
paused: any other server, and back-pressure, go through ASGI's `send`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # bastion.api.asgi writes its answers through this module
    from bastion.api.asgi import RawHeaders, Send

try:
    from uvicorn.protocols.http import httptools_impl as _uvicorn
except ImportError:  # pragma: no cover - uvicorn is a dependency; httptools may be missing
    _uvicorn = None  # type: ignore[assignment]

_CHUNKED = b"transfer-encoding: chunked\r\n"
_CLOSE = b"connection: close\r\n"
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))


def _plain_lines() -> re.Pattern[bytes] | None:
    """Header lines uvicorn would write as they are: names in lower case holding nothing its HEADER_RE
    refuses and not a framing header, values holding nothing its HEADER_VALUE_RE refuses. A name cannot
    hold `:`, so each line splits at its first `: `; a line break inside a value or a name would make two
    lines of one, which the caller sees by counting them."""
    if _uvicorn is None:
        return None
    refused_in_name = _uvicorn.HEADER_RE.pattern[1:-1]  # (both patterns are one character class)
    refused_in_value = _uvicorn.HEADER_VALUE_RE.pattern[1:-1]
    framing = rb"(?!(?:" + rb"|".join(sorted(_FRAMING)) + rb"):)"
    name = rb"[^A-Z" + refused_in_name + rb"]++"
    return re.compile(rb"(?:" + framing + name + rb": [^" + refused_in_value + rb"]*+\r\n)*+")


_PLAIN_LINES = _plain_lines()


class DirectStream:
    """Writes one chunked response on uvicorn's `RequestResponseCycle` (see the module's docstring)."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle

    @staticmethod
    def of(send: Send) -> DirectStream | None:
        """For `send` of uvicorn's httptools protocol before the response started, else None."""
        cycle = getattr(send, "__self__", None)
        if _uvicorn is None or type(cycle) is not _uvicorn.RequestResponseCycle:
            return None
        if cycle.response_started or cycle.access_log or cycle.scope.get("method") == "HEAD":
            return None
        return DirectStream(cycle)

    def render_head(self, status: int, headers: RawHeaders) -> bytes | None:
        """The status line and headers as uvicorn would write them (its default headers first), without
        the framing lines added when writing; None if a header is one uvicorn would refuse."""
        every = [*self._cycle.default_headers, *headers]
        lines = b"".join([b"%s: %s\r\n" % header for header in every])
        # (A line break inside a header would split its line in two the expression accepts: counted.)
        if _PLAIN_LINES is not None and _PLAIN_LINES.fullmatch(lines) and lines.count(b"\n") == len(every):
            return _uvicorn.STATUS_LINE[status] + lines
        return self._render_lowered(status, every)

    def _render_lowered(self, status: int, every: RawHeaders) -> bytes | None:
        names = [name.lower() for name, _ in every]
        if _uvicorn.HEADER_RE.search(b"".join(names)) or _FRAMING.intersection(names):
            return None  # framing stays uvicorn's to decide
        values = [value for _, value in every]
        if _uvicorn.HEADER_VALUE_RE.search(b"\t".join(values)):
            return None
        lines = [_uvicorn.STATUS_LINE[status]]
        for name, value in zip(names, values, strict=True):
            lines += (name, b": ", value, b"\r\n")
        return b"".join(lines)

    def respond(self, status: int, headers: RawHeaders, body: bytes) -> bool:
        """A whole answer with a body of known length, head and body in one write, and the response
        complete for uvicorn (as its `send` completes it). False if it must go through `send`."""
        cycle = self._cycle
        if cycle.disconnected:
            return True  # as uvicorn's `send` does: nothing to write to
        if cycle.flow.write_paused or cycle.response_started:
            return False
        head = self.render_head(status, headers)
        if head is None:
            return False
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        cycle.chunked_encoding = False
        cycle.expected_content_length = 0
        framing = b"content-length: %d\r\n" % len(body)
        if not cycle.keep_alive:
            framing += _CLOSE
        cycle.transport.write(b"".join((head, framing, b"\r\n", body)))
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()
        return True

    def write(self, data: bytes, head: bytes | None = None) -> bool:
        """One chunk of the body, after `head` if it has not been written yet (one write, so the client
        wakes once for both). False if it must go through `send` instead (writing paused)."""
        cycle = self._cycle
        if cycle.disconnected:
            return True  # as uvicorn's `send` does: nothing to write to
        out = self._framed(data, head)
        if out is None:
            return False
        if out:
            cycle.transport.write(out)
        return True

    def finish(self, data: bytes, head: bytes | None = None) -> bool:
        """The last chunk and the end of the body in one write, then the response is complete for
        uvicorn (as its `send` completes it). False if it must go through `send` instead."""
        cycle = self._cycle
        out = None if cycle.disconnected else self._framed(data, head)
        if out is None:
            return False
        cycle.transport.write(out + b"0\r\n\r\n")
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()
        return True

    def _framed(self, data: bytes, head: bytes | None) -> bytes | None:
        """`head` if given (the response starts here), then `data` as a chunk: the bytes to write. None
        if they must go through `send` instead: writing paused, the response complete, or not a started
        chunked body."""
        cycle = self._cycle
        if cycle.flow.write_paused or cycle.response_complete:
            return None
        if head is not None:
            out = self._started(head)
        else:
            out = b"" if cycle.response_started and cycle.chunked_encoding else None
        if out is None or not data:
            return out
        return out + b"%x\r\n%s\r\n" % (len(data), data)

    def _started(self, head: bytes) -> bytes | None:
        """The head to write first, with its framing lines; None if the response already started (or a
        chunked body is not what it started)."""
        cycle = self._cycle
        if cycle.response_started:
            return None
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        cycle.chunked_encoding = True
        cycle.expected_content_length = 0
        return head + (_CHUNKED if cycle.keep_alive else _CHUNKED + _CLOSE) + b"\r\n"
