"""The hot path's Redis channel against servers that misbehave on purpose: one that never answers (every
waiting command fails once the oldest one's patience is spent, and the connection is dropped), one
that answers late but within it (nothing fails)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from bastion.billing.channel import RedisChannel


async def fake_redis(answer: Callable[[bytes], bytes | None], delay: float = 0.0) -> asyncio.Server:
    """A server on a free port that answers each chunk it reads with `answer(chunk)` after `delay`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            reply = answer(data)
            if reply is not None:
                await asyncio.sleep(delay)
                writer.write(reply)
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.fixture
async def silent() -> AsyncIterator[int]:
    server = await fake_redis(lambda _: None)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_commands_nobody_answers_fail_after_the_patience_and_drop_the_connection(silent: int) -> None:
    channel = RedisChannel(f"redis://127.0.0.1:{silent}/0", timeout=0.3)
    await channel.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = channel.submit(("PING",))
    await asyncio.sleep(0.1)
    second = channel.submit(("PING",))  # its own deadline is later; it fails with the connection
    for waiting in (first, second):
        with pytest.raises(RedisTimeoutError, match=r"within 0\.3 s"):
            async with asyncio.timeout(3):  # a watchdog that never fires fails here, not by hanging
                await waiting
    assert 0.25 <= loop.time() - started < 1.0
    assert channel._protocol is not None and channel._protocol.closed
    await channel.close()


async def test_a_slow_answer_within_the_patience_is_no_failure() -> None:
    server = await fake_redis(lambda data: b"+PONG\r\n" * data.count(b"PING"), delay=0.15)
    async with server:
        port = server.sockets[0].getsockname()[1]
        channel = RedisChannel(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        await channel.start()
        for _ in range(4):  # each one slower than half the patience: deadlines are per command
            assert await channel.submit(("PING",)) == b"PONG"
        replies = await asyncio.gather(*(channel.submit(("PING",)) for _ in range(3)))
        assert replies == [b"PONG"] * 3
        await asyncio.sleep(0.4)  # the watchdog wakes with nothing waiting: nothing happens
        assert await channel.submit(("PING",)) == b"PONG"
        await channel.close()
