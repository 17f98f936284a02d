"""The keep-alive pool of one provider: its fixed request head, its connections and their limit."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlsplit

from bastion.proxy.http11.connection import _Connection
from bastion.proxy.http11.errors import UpstreamFailure, _Stale
from bastion.proxy.http11.prepared import PreparedPost
from bastion.proxy.http11.response import Http11Response


class Http11Pool:
    def __init__(
        self,
        base_url: str,
        headers: Iterable[tuple[str, str]],
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
        keepalive_seconds: float = 60.0,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"unsupported upstream URL scheme {url.scheme!r}")
        self.host = url.hostname
        self.tls = url.scheme == "https"
        self.port = url.port or (443 if self.tls else 80)
        self.prefix = url.path.rstrip("/")
        host_header = self.host if url.port is None else f"{self.host}:{url.port}"
        if ":" in self.host:  # an IPv6 literal
            host_header = f"[{self.host}]" if url.port is None else f"[{self.host}]:{url.port}"
        fixed = [("host", host_header), *headers]
        self._fixed_head = b"".join(_header_line(name, value) for name, value in fixed)
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_seconds = keepalive_seconds
        self._ssl = ssl.create_default_context() if self.tls else None
        self._idle: list[_Connection] = []
        self._open = 0  # connections open or opening
        self._waiting: deque[asyncio.Future[None]] = deque()
        self.finishing = 0  # connections whose answer was relayed, waiting only for its end of body
        self._reusers: list[asyncio.Future[None]] = []  # requests waiting briefly for one of those
        self.closed = False

    async def post(
        self, path: str, headers: Iterable[tuple[str, str]], body: bytes | AsyncIterator[bytes]
    ) -> Http11Response:
        """Send the request; return once the answer's status and headers are in."""
        head = self._head(path, headers, body)
        connection = await self._acquire()
        try:
            try:
                return await connection.exchange(head, body, self.read_timeout)
            except _Stale:
                if not isinstance(body, bytes):
                    raise UpstreamFailure("disconnected", "connection closed before the answer") from None
            self._discard(connection)
        except BaseException:
            self._discard(connection)
            raise
        return await self.resend(head, body)

    def prepare(self, path: str, headers: Iterable[tuple[str, str]], body: bytes) -> PreparedPost | None:
        """The request made ready on an idle connection, to be written the moment `send` is called
        (from a callback, even): None if no connection is idle (then `post` connects as usual)."""
        connection = self._take_idle(asyncio.get_running_loop())
        if connection is None:
            return None
        return PreparedPost(self, connection, self._head(path, headers, body), body)

    async def resend(self, head: bytes, body: bytes | AsyncIterator[bytes]) -> Http11Response:
        """The request again, on a fresh connection: the pooled one was closed before any answer."""
        connection = await self._acquire(fresh=True)
        try:
            return await connection.exchange(head, body, self.read_timeout)
        except _Stale:
            self._discard(connection)
            raise UpstreamFailure("disconnected", "connection closed before the answer") from None
        except BaseException:
            self._discard(connection)
            raise

    def _head(
        self, path: str, headers: Iterable[tuple[str, str]], body: bytes | AsyncIterator[bytes]
    ) -> bytes:
        varying = b"".join([_header_line(name, value) for name, value in headers])
        target = (self.prefix + path).encode("ascii")
        if isinstance(body, bytes):
            return b"POST %s HTTP/1.1\r\n%s%scontent-length: %d\r\n\r\n" % (
                target,
                self._fixed_head,
                varying,
                len(body),
            )
        return b"POST %s HTTP/1.1\r\n%s%stransfer-encoding: chunked\r\n\r\n" % (
            target,
            self._fixed_head,
            varying,
        )

    async def close(self) -> None:
        self.closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # -- the pool ------------------------------------------------------------------------------------

    async def _acquire(self, fresh: bool = False) -> _Connection:
        if self.closed:
            raise UpstreamFailure("connect", "the provider is closed")
        loop = asyncio.get_running_loop()
        if not fresh and (connection := self._take_idle(loop)) is not None:
            return connection
        if not fresh and self.finishing > len(self._reusers) and self._open < self.max_connections:
            reused = await self._reuse_finishing(loop)
            if reused is not None:
                return reused
        while self._open >= self.max_connections:
            waiter = loop.create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass on the slot this waiter was given
                raise
            if self.closed:
                raise UpstreamFailure("connect", "the provider is closed")
            if not fresh and (connection := self._take_idle(loop)) is not None:
                return connection
        self._open += 1
        try:
            return await self._connect(loop)
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    def _take_idle(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable(loop.time(), self.keepalive_seconds):
                return connection
            self._discard(connection)
        return None

    async def _reuse_finishing(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        """Wait a moment for a connection whose answer lacks only its end of body (the client already
        has the answer; a keep-alive client's next request comes at once): reusing it beats opening
        a connection (a TCP, maybe TLS, handshake). None if none is free in time."""
        waiter = loop.create_future()
        self._reusers.append(waiter)
        timer = loop.call_later(REUSE_WAIT_SECONDS, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._reusers.remove(waiter)
        return self._take_idle(loop)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            raise UpstreamFailure(
                "connect_timeout", f"no connection within {self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise UpstreamFailure("connect", str(exc) or type(exc).__name__) from None
        return protocol

    def _release(self, connection: _Connection) -> None:
        """An answer was read to its end on a connection the server keeps open: pool it."""
        if self.closed or not connection.reusable:
            self._discard(connection)
            return
        connection.idle_since = asyncio.get_running_loop().time()
        self._make_idle(connection)

    def _release_unused(self, connection: _Connection) -> None:
        """A connection taken for a request that was never sent: idle again, as it was."""
        if self.closed or connection.lost:
            self._discard(connection)
            return
        self._make_idle(connection)

    def _make_idle(self, connection: _Connection) -> None:
        """Pooled, and handed to a request waiting for one (one waiting briefly first)."""
        self._idle.append(connection)
        for reuser in self._reusers:
            if not reuser.done():
                reuser.set_result(None)
                return
        self._wake_one()

    def _discard(self, connection: _Connection) -> None:
        if connection.counted:
            connection.counted = False
            self._open -= 1
            connection.close()
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _forget_idle(self, connection: _Connection) -> None:
        """The server closed a pooled connection."""
        if connection in self._idle:
            self._idle.remove(connection)
        self._discard(connection)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


REUSE_WAIT_SECONDS = 0.005
_UNSAFE_NAME = re.compile(r"[\r\n\0: ]")


_checked_names: set[str] = set()  # header names (from code and config: a few) found safe


def _header_line(name: str, value: str) -> bytes:
    # Three searches of a short value cost less than one regular expression's call (two a header, six
    # a request, were ~1.5 us).
    if name not in _checked_names:
        if _UNSAFE_NAME.search(name):
            raise ValueError(f"invalid character in upstream header {name!r}")
        if len(_checked_names) < 256:
            _checked_names.add(name)
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"invalid character in upstream header {name!r}")
    return f"{name}: {value}\r\n".encode("latin-1")
