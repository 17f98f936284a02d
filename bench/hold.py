"""Holds many connections open in a process of its own, while the benchmark measures beside them.

    python -m bench.hold idle URL COUNT             # keep-alive connections, each after one GET /healthz
    python -m bench.hold streams URL KEY MODEL COUNT  # streams that got their first chunk, then wait

It prints one JSON line when everything is open ({"open": n, "errors": [...], "seconds": s}), then holds
until its stdin closes; streams are then read to their end and a last line reports how many completed.
Its own CPU is not Bastion's: running apart keeps it out of the figures and off the bench's event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

from bench.payloads import chat_body
from bench.rawstream import request_bytes

BATCH = 500  # connections opened at once, below the listeners' backlog


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.event = asyncio.Event()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.event.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.event.set()

    async def until(self, marker: bytes, limit_seconds: float) -> None:
        async with asyncio.timeout(limit_seconds):
            while marker not in self.buffer:
                if self.closed:
                    raise ConnectionError("closed by the server")
                self.event.clear()
                await self.event.wait()


async def _open(host: str, port: int, request: bytes, marker: bytes) -> _Connection:
    _, connection = await asyncio.get_running_loop().create_connection(_Connection, host, port)
    assert connection.transport is not None
    connection.transport.write(request)
    await connection.until(marker, 120)
    return connection


async def hold(host: str, port: int, request: bytes, marker: bytes, count: int, end: bytes | None) -> None:
    started = time.perf_counter()
    connections: list[_Connection] = []
    errors: list[str] = []
    for first in range(0, count, BATCH):
        opened = await asyncio.gather(
            *(_open(host, port, request, marker) for _ in range(first, min(count, first + BATCH))),
            return_exceptions=True,
        )
        for result in opened:
            if isinstance(result, BaseException):
                errors.append(f"{type(result).__name__}: {result}"[:200])
            else:
                connections.append(result)
    report = {"open": len(connections), "errors": errors[:10], "error_count": len(errors)}
    print(json.dumps(report | {"seconds": time.perf_counter() - started}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench is done
    completed = 0
    if end is not None:
        results = await asyncio.gather(*(c.until(end, 120) for c in connections), return_exceptions=True)
        completed = sum(1 for r in results if not isinstance(r, BaseException))
    still_open = sum(1 for c in connections if not c.closed)
    print(json.dumps({"completed": completed, "still_open": still_open}), flush=True)
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()


def main(argv: list[str]) -> None:
    kind, url = argv[0], argv[1]
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if kind == "idle":
        request = f"GET /healthz HTTP/1.1\r\nhost: {host}:{port}\r\n\r\n".encode()
        asyncio.run(hold(host, port, request, b'"ok"}', int(argv[2]), None))
    elif kind == "streams":
        key, model, count = argv[2], argv[3], int(argv[4])
        _, _, request = request_bytes(url + "/v1/chat/completions", key, chat_body(model))
        asyncio.run(hold(host, port, request, b"data:", count, b"data: [DONE]"))
    else:
        raise SystemExit(f"unknown kind {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
