"""uvicorn's HTTP protocol driven in process: a transport that records each write, one request served."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.eof_written = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        pass


async def serve_one(app: Any, request: bytes, access_log: bool = False) -> list[bytes]:
    transport, _ = await serve(app, [request], access_log=access_log)
    return transport.writes


async def serve(
    app: Any,
    chunks: list[bytes],
    protocol_class: type[HttpToolsProtocol] = HttpToolsProtocol,
    access_log: bool = False,
    prepare: Callable[[HttpToolsProtocol], None] | None = None,
) -> tuple[RecordingTransport, HttpToolsProtocol]:
    """`chunks` fed to a new connection one by one (each request served before the next chunk)."""
    config = uvicorn.Config(
        app, http="httptools", lifespan="off", proxy_headers=False, log_level="error", access_log=access_log
    )
    config.load()
    state = ServerState()
    protocol = protocol_class(config, state, app_state={})
    if prepare is not None:
        prepare(protocol)
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for chunk in chunks:
        protocol.data_received(chunk)
        async with asyncio.timeout(5):
            while state.tasks:
                await asyncio.gather(*state.tasks)
    protocol.connection_lost(None)
    return transport, protocol
