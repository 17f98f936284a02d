"""Server-sent-events framing for the relay.

Upstream bytes arrive cut anywhere: in the middle of a line, between a CR and its LF, several events per
read. `SSEFramer` turns them into whole events (lines joined by LF, without the blank separator line) so
the relay forwards each event as soon as its last byte arrived, and never half of one.
"""

from __future__ import annotations

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


class SSEFramer:
    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed_block(self, data: bytes) -> bytes:
        """Add bytes from the upstream; return the whole events they complete as one block (LF line
        ends, ending with a blank line), or b"" while the first of them is still incomplete."""
        buffer = self._buffer + data if self._buffer else data
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):
                # A trailing CR may be the first half of CRLF: decide when the next byte comes.
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer + held
            return b""
        self._buffer = buffer[end + 2 :] + held
        return buffer[: end + 2]

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes from the upstream; return the events they complete, in order."""
        return split_events(self.feed_block(data))

    def finish(self) -> list[bytes]:
        """The event left unterminated at the upstream's close, if any: some omit the last blank line."""
        rest = self._buffer.replace(b"\r", b"\n").strip(b"\n")
        self._buffer = b""
        return [rest] if rest else []


def split_events(block: bytes) -> list[bytes]:
    """The events of a block (each without its blank separator line)."""
    if not block:
        return []
    return [part.strip(b"\n") for part in block.split(b"\n\n") if part.strip(b"\n")]


def event_data(event: bytes) -> bytes | None:
    """The data payload of an event (data lines joined by LF), or None for a comment-only event."""
    if event.startswith(b"data:") and b"\n" not in event:
        payload = event[5:]
        return payload[1:] if payload.startswith(b" ") else payload
    lines = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)


def error_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"
