"""The hot path's Redis connection: admission and settlement scripts, pipelined on one connection.

Each request makes two script calls. Through redis-py's asyncio client a call cost about 70 us of CPU
here (pool checkout and health check, the retry wrapper, command packing in Python, asyncio streams):
a fifth of a request. This channel packs the command with hiredis, writes it on one connection that
every request shares, and parses replies with hiredis. Redis answers a connection's commands in order,
so each reply resolves the oldest waiter, and the commands of concurrent requests that are ready in the
same event-loop turn leave in one write. redis-py stays for everything off the hot path.

A connection that fails fails every call waiting on it (`redis.exceptions.ConnectionError`, which the
gateway answers with 503 before anything is forwarded); the next call reconnects. A call that gets no
reply within `timeout` closes the connection the same way, since its reply would no longer line up.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from hashlib import sha1
from typing import Any, cast

import hiredis
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int


@dataclass(frozen=True, slots=True)
class Script:
    source: str
    sha: str

    @staticmethod
    def of(source: str) -> Script:
        return Script(source, sha1(source.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a Redis server is and what to say first (AUTH, SELECT)."""

    host: str
    port: int
    path: str | None = None  # a unix socket
    tls: bool = False
    handshake: tuple[tuple[Arg, ...], ...] = ()

    @staticmethod
    def from_url(url: str) -> Endpoint:
        options = parse_url(url)
        connection_class = options.get("connection_class")
        return Endpoint(
            str(options.get("host", "localhost")),
            int(options.get("port", 6379)),
            options.get("path") if connection_class is UnixDomainSocketConnection else None,
            connection_class is SSLConnection,
            tuple(_handshake(options)),
        )


Locate = Callable[[], Awaitable[tuple[str, int]]]


class RedisChannel:
    """`locate`, when given, names the server's address at each connection (the primary Sentinel
    reports now); `replicated`: the server is a primary whose replica a failover would promote."""

    def __init__(
        self,
        endpoint: Endpoint | str,
        timeout: float = 5.0,
        locate: Locate | None = None,
        replicated: bool = False,
    ) -> None:
        self.endpoint = Endpoint.from_url(endpoint) if isinstance(endpoint, str) else endpoint
        self._locate = locate
        self._replicated = replicated
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def evalsha(self, script: Script, keys: list[str], args: list[Arg]) -> Any:
        """Run a script by its SHA (loading it first if this Redis has not seen it: a restart, a flush)."""
        return await self.submit_script(script, keys, args)

    def submit_script(self, script: Script, keys: list[str], args: list[Arg]) -> ScriptCall:
        """`evalsha`, with the command sent before this returns: await the result after other work."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return ScriptCall(self, script, command, self.submit(command))

    def submit(self, command: tuple[Arg, ...]) -> asyncio.Future[Any]:
        """Send `command` now (with the other commands of this event-loop turn) and return the future of
        its reply, so that the caller works while Redis answers. Before a connection exists, a task
        connects and sends."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return asyncio.ensure_future(self.call(command))
        return protocol.submit(hiredis.pack_command(command), self.timeout)

    async def call(self, command: tuple[Arg, ...], patience: float | None = None, key: str = "") -> Any:
        """One command's reply; `patience` (seconds, default `timeout`) for a command that blocks; `key`
        routes it on a cluster (here there is one server)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return await protocol.submit(hiredis.pack_command(command), patience or self.timeout)

    async def start(self) -> None:
        """Connect now (a server that cannot be reached is said at startup)."""
        if self._protocol is None or self._protocol.closed:
            await self._connect()

    async def submit_many(
        self, commands: Sequence[tuple[Arg, ...]], patience: float | None = None
    ) -> list[asyncio.Future[Any]]:
        """Send `commands` back to back on one connection (connecting first if needed), so that they run
        in this order with nothing between them from this channel; the futures give their replies."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        replies = [
            protocol.submit(hiredis.pack_command(command), patience or self.timeout) for command in commands
        ]
        for reply in replies:  # a caller that stops at the first failure leaves the others unawaited
            reply.add_done_callback(_retrieve)
        return replies

    def has_replica(self, key: str) -> bool:
        """Writes to `key` must reach a replica to survive a failover."""
        return self._replicated

    async def run_then_wait(
        self, script: Script, keys: list[str], args: list[Arg], wait_ms: int
    ) -> tuple[Any, int]:
        """Run the script, then `WAIT 1 wait_ms` on the same connection right behind it (no added round
        trip): its result, and how many replicas have its writes."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        ran, kept = await self.submit_many((command, ("WAIT", 1, wait_ms)))
        try:
            return await ran, await kept
        except NoScriptError:
            result = await self.call(("EVAL", script.source, *command[2:]))
            return result, await self.call(("WAIT", 1, wait_ms))

    async def load_scripts(self, scripts: Sequence[Script]) -> None:
        for script in scripts:
            await self.call(("SCRIPT", "LOAD", script.source))

    async def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None

    async def _connect(self) -> _Protocol:
        # Concurrent callers share one connection attempt.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        endpoint = self.endpoint
        try:
            async with asyncio.timeout(self.timeout):
                if self._locate is not None:
                    host, port = await self._locate()
                else:
                    host, port = endpoint.host, endpoint.port
                if endpoint.path is not None:
                    _, protocol = await loop.create_unix_connection(_Protocol, endpoint.path)
                else:
                    context = ssl.create_default_context() if endpoint.tls else None
                    _, protocol = await loop.create_connection(_Protocol, host, port, ssl=context)
                try:
                    for command in endpoint.handshake:
                        await protocol.submit(hiredis.pack_command(command), self.timeout)
                except BaseException:
                    protocol.close()
                    raise
        except TimeoutError as exc:
            raise RedisTimeoutError(f"connecting to Redis timed out after {self.timeout:g} s") from exc
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        self._protocol = protocol
        return protocol


class ScriptCall:
    """A script submitted to Redis. Awaiting it gives the script's result (loading the script first if
    this Redis had not seen it: a restart, a flush); `reply` is the future of Redis's first answer, for
    a callback that must act the moment it arrives."""

    __slots__ = ("_channel", "_command", "_script", "reply")

    def __init__(
        self, channel: RedisChannel, script: Script, command: tuple[Arg, ...], reply: asyncio.Future[Any]
    ) -> None:
        self._channel, self._script, self._command, self.reply = channel, script, command, reply

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result().__await__()

    async def _result(self) -> Any:
        try:
            return await self.reply
        except NoScriptError:
            await self._channel.call(("SCRIPT", "LOAD", self._script.source))
            return await self._channel.call(self._command)


def _handshake(options: dict[str, Any]) -> list[tuple[Arg, ...]]:
    commands: list[tuple[Arg, ...]] = []
    if options.get("password"):
        if options.get("username"):
            commands.append(("AUTH", options["username"], options["password"]))
        else:
            commands.append(("AUTH", options["password"]))
    if int(options.get("db") or 0):
        commands.append(("SELECT", int(options["db"])))
    return commands


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        # Replies come in command order: each one resolves the oldest waiter. Each waiter has a deadline;
        # one watchdog timer per connection looks at the oldest (a timer per command cost a TimerHandle
        # made and cancelled twice per request).
        self._waiters: deque[tuple[asyncio.Future[Any], float, float]] = deque()  # future, deadline, patience
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = 0.0  # when the watchdog fires
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._batching = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def submit(self, packed: bytes, patience: float) -> asyncio.Future[Any]:
        if self.closed or self._transport is None:
            raise RedisConnectionError("the Redis connection is closed")
        loop = self._loop
        waiter = loop.create_future()
        # A deadline, not asyncio.timeout: the reply must still be consumed in order when it comes.
        deadline = loop.time() + patience
        self._waiters.append((waiter, deadline, patience))
        if self._watchdog is None or deadline < self._watch_at:  # (earlier: a shorter patience)
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watch_at, self._watchdog = deadline, loop.call_at(deadline, self._watch)
        if self._batching:
            self._out.append(packed)
        else:
            # The first command of this event-loop turn goes out at once (no added latency when idle);
            # the ones that follow it in the same turn leave together at the turn's end.
            self._transport.write(packed)
            self._batching = True
            loop.call_soon(self._flush)
        return waiter

    def _flush(self) -> None:
        self._batching = False
        out, self._out = self._out, []
        if self._transport is not None and not self.closed and out:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            reply = self._reader.gets()
            while reply is not False:
                waiter = self._waiters.popleft()[0]
                if not waiter.done():
                    if isinstance(reply, hiredis.ReplyError):
                        waiter.set_exception(self._response_error(str(reply)))
                    else:
                        waiter.set_result(reply)
                reply = self._reader.gets()
        except (hiredis.ProtocolError, IndexError) as exc:
            self._fail(RedisConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"the Redis connection was lost ({exc or 'closed by the server'})"))

    def _response_error(self, message: str) -> Exception:
        if message.startswith("READONLY"):
            # A primary demoted by a failover: this connection is done; the next one asks Sentinel again.
            self._loop.call_soon(self._fail, _demoted(message))
            return _demoted(message)
        return _response_error(message)

    def _watch(self) -> None:
        """The oldest command still waiting past its deadline fails the connection (its reply, and so
        every later one, would no longer line up); else look again at the oldest one's deadline."""
        self._watchdog = None
        if not self._waiters or self.closed:
            return
        _, deadline, patience = self._waiters[0]
        if self._loop.time() >= deadline:
            self._fail(RedisTimeoutError(f"Redis did not answer within {patience:g} s"))
            return
        self._watch_at, self._watchdog = deadline, self._loop.call_at(deadline, self._watch)

    def close(self) -> None:
        self._fail(RedisConnectionError("the Redis connection was closed"))

    def _fail(self, error: Exception) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiters:
            waiter = self._waiters.popleft()[0]
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # retrieved: a submitted command nobody awaits any more is no news
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def _response_error(message: str) -> ResponseError:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


def _demoted(message: str) -> RedisConnectionError:
    return RedisConnectionError(f"the Redis server is a replica now, not the primary ({message})")


def _retrieve(reply: asyncio.Future[Any]) -> None:
    if not reply.cancelled():
        reply.exception()
