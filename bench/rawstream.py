"""A lean streaming client for time to first token: raw keep-alive sockets, no HTTP library.

aiohttp's client costs ~0.3 ms of Python per response head and chunk; at 16 streams that work queues
behind itself and shows up in the measured time to first token, differently for direct and
through-Bastion runs (a direct upstream sends its head at once and its first chunk 50 ms later; a
gateway that retries a stream stalling before its first chunk sends both together). This client writes
a prepared request and only looks for the first `data:` in the bytes after the head, then for the end
of the chunked body, so what it measures is the servers'.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

_HEAD_END = b"\r\n\r\n"
_CHUNKED_END = b"\r\n0\r\n\r\n"


class _Stream(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("connection closed")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def more(self) -> None:
        if self.lost is not None:
            raise self.lost
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter
        if self.lost is not None and not self.buffer:
            raise self.lost


def request_bytes(url: str, key: str, body: bytes) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {parts.path} HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\naccept: text/event-stream\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    return host, port, head + body


async def _one(stream: _Stream, request: bytes) -> float:
    """Seconds to the first `data:` of one streamed answer, read to its end."""
    assert stream.transport is not None
    stream.buffer.clear()
    started = time.perf_counter()
    stream.transport.write(request)
    while _HEAD_END not in stream.buffer:
        await stream.more()
    head_end = stream.buffer.index(_HEAD_END) + len(_HEAD_END)
    status = bytes(stream.buffer[9:12])
    if status != b"200":
        raise RuntimeError(f"HTTP {status.decode()}: {bytes(stream.buffer[:300])!r}")
    while stream.buffer.find(b"data:", head_end) < 0:
        await stream.more()
    first = time.perf_counter() - started
    while not stream.buffer.endswith(_CHUNKED_END):
        await stream.more()
    return first


async def ttft(url: str, key: str, body: bytes, concurrency: int, requests: int) -> list[float]:
    """Seconds to the first `data:` of `requests` streams, `concurrency` at a time, each connection
    kept alive for the next stream."""
    host, port, request = request_bytes(url, key, body)
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        _, stream = await loop.create_connection(_Stream, host, port)
        try:
            while remaining > 0:
                remaining -= 1
                samples.append(await _one(stream, request))
        finally:
            assert stream.transport is not None
            stream.transport.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples
