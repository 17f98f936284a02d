"""The hot path's channel to a Redis Cluster: one pipelined `RedisChannel` per master, commands routed by
the hash slot of their first key.

The slot map comes from `CLUSTER SLOTS` at start and again whenever a node says the map has changed.
Replies that mean "not here, not now" are followed, never surfaced, because the command did not run:
`MOVED` (the slot has a new owner: note it, refresh the map, resend there), `ASK` (the slot is being
migrated and this key has left: `ASKING` then the command on the importing node), `TRYAGAIN` (the slot is
half migrated and the script's keys are split between the two nodes: retry shortly) and `CLUSTERDOWN`
(a failover in progress: refresh, retry shortly), for up to `REDIRECT_PATIENCE_SECONDS`. A lost connection
is surfaced as on one Redis (the command may have run; it is not sent twice) and refreshes the map, so
that the next commands go to the replica promoted in its place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator, Sequence
from typing import Any

from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bastion.billing.channel import Arg, Endpoint, RedisChannel, Script
from bastion.billing.layout import SLOTS
from bastion.billing.redis_target import RedisSetupError, RedisTarget
from bastion.metrics import REDIS_REDIRECTS

log = logging.getLogger("bastion.redis")

REDIRECT_PATIENCE_SECONDS = 5.0
RETRY_PAUSE_SECONDS = 0.02
_FOLLOWED = ("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")


class ClusterChannel:
    def __init__(self, target: RedisTarget, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._seeds = list(target.nodes)
        handshake: tuple[tuple[Arg, ...], ...] = ()
        if target.password:
            auth = (target.username, target.password) if target.username else (target.password,)
            handshake = (("AUTH", *auth),)
        self._tls, self._handshake = target.tls, handshake
        self._owners: list[RedisChannel | None] = [None] * SLOTS
        self._nodes: dict[tuple[str, int], RedisChannel] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()  # redirections being followed
        self._replicated: set[RedisChannel] = set()  # masters that have a replica

    # ------------------------------------------------------------------ the hot path
    def submit_script(self, script: Script, keys: list[str], args: list[Arg]) -> ClusterScriptCall:
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return ClusterScriptCall(self, script, command, keys[0])

    async def evalsha(self, script: Script, keys: list[str], args: list[Arg]) -> Any:
        return await self.submit_script(script, keys, args)

    def submit(self, command: tuple[Arg, ...], key: str, script: Script | None = None) -> asyncio.Future[Any]:
        """Send `command` to the owner of `key`'s slot now; the future gives its reply, redirections
        followed."""
        owner = self._owners[key_slot(key.encode())]
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if owner is None:  # no map yet (or a slot nobody owns): route once the map is known
            self._spawn(self._chain(self._follow(command, key, None, None, script), answer))
            return answer
        first = owner.submit(command)
        first.add_done_callback(lambda reply: self._first_reply(reply, answer, command, key, owner, script))
        return answer

    def _first_reply(
        self,
        reply: asyncio.Future[Any],
        answer: asyncio.Future[Any],
        command: tuple[Arg, ...],
        key: str,
        owner: RedisChannel,
        script: Script | None,
    ) -> None:
        if answer.done():
            return
        if reply.cancelled():
            answer.cancel()
            return
        error = reply.exception()
        if error is None:
            answer.set_result(reply.result())
        elif isinstance(error, ResponseError) and _followed(error, script):
            self._spawn(self._chain(self._follow(command, key, error, owner, script), answer))
        else:
            if isinstance(error, RedisConnectionError | RedisTimeoutError):
                self.refresh_soon()
            answer.set_exception(error)

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _chain(work: Any, answer: asyncio.Future[Any]) -> None:
        try:
            result = await work
        except BaseException as exc:
            if not answer.done():
                answer.set_exception(exc)
            return
        if not answer.done():
            answer.set_result(result)

    async def _follow(
        self,
        command: tuple[Arg, ...],
        key: str,
        error: ResponseError | None,
        node: RedisChannel | None,
        script: Script | None,
        patience: float | None = None,
    ) -> Any:
        """Send `command` where `error` (the last reply) says, until it runs or patience runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REDIRECT_PATIENCE_SECONDS
        while True:
            asking = False
            message = str(error) if error is not None else ""
            if error is not None:
                REDIS_REDIRECTS.labels(_reply_kind(error)).inc()
            if message.startswith(("MOVED ", "ASK ")):
                kind, slot, address = message.split()[:3]
                node = self._node(_parse_address(address, self._seeds[0][0]))
                if kind == "MOVED":
                    self._owners[int(slot)] = node
                    self.refresh_soon()
                asking = kind == "ASK"
            elif isinstance(error, NoScriptError) and script is not None and node is not None:
                # A node that has not seen the script (new, or restarted): EVAL loads it there.
                command = ("EVAL", script.source, *command[2:])
            else:
                if error is not None:  # TRYAGAIN, CLUSTERDOWN: the slot is moving or the cluster healing
                    if message.startswith("CLUSTERDOWN"):
                        self.refresh_soon()
                    await asyncio.sleep(RETRY_PAUSE_SECONDS)
                node = await self._owner(key)
            try:
                if asking:
                    replies = await node.submit_many((("ASKING",), command), patience)
                    return await replies[1]
                return await node.call(command, patience)
            except ResponseError as exc:
                if not _followed(exc, script) or loop.time() > deadline:
                    raise
                error = exc
            except (RedisConnectionError, RedisTimeoutError):
                self.refresh_soon()
                raise

    async def _owner(self, key: str) -> RedisChannel:
        slot = key_slot(key.encode())
        if self._owners[slot] is None:
            await self.refresh()
        owner = self._owners[slot]
        if owner is None:
            raise RedisConnectionError(f"no node of the Redis Cluster serves slot {slot}")
        return owner

    def has_replica(self, key: str) -> bool:
        """The master of `key`'s slot had a replica at the last look at the slot map (a failover would
        promote it)."""
        return self._owners[key_slot(key.encode())] in self._replicated

    async def run_then_wait(
        self, script: Script, keys: list[str], args: list[Arg], wait_ms: int
    ) -> tuple[Any, int]:
        """The script on its slot's master with `WAIT 1 wait_ms` right behind it on the same connection;
        after a redirection, the WAIT is asked where the script finally ran."""
        key = keys[0]
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        node = await self._owner(key)
        try:
            ran, kept = await node.submit_many((command, ("WAIT", 1, wait_ms)))
            return await ran, await kept
        except ResponseError as exc:
            if not _followed(exc, script):
                raise
            result = await self._follow(command, key, exc, node, script)
            return result, await self.call(("WAIT", 1, wait_ms), key=key)
        except (RedisConnectionError, RedisTimeoutError):
            self.refresh_soon()
            raise

    # ------------------------------------------------------------------ off the hot path
    async def call(self, command: tuple[Arg, ...], patience: float | None = None, key: str = "") -> Any:
        """One command's reply, routed by `key` (the node of its slot), redirections followed."""
        node = await self._owner(key)
        try:
            return await node.call(command, patience)
        except ResponseError as exc:
            if not _followed(exc, None):
                raise
            return await self._follow(command, key, exc, node, None, patience)
        except (RedisConnectionError, RedisTimeoutError):
            self.refresh_soon()
            raise

    async def start(self) -> None:
        await self.refresh()

    async def load_scripts(self, scripts: Sequence[Script]) -> None:
        for node in self.masters():
            await node.load_scripts(scripts)

    def masters(self) -> list[RedisChannel]:
        return list({id(node): node for node in self._owners if node is not None}.values())

    def refresh_soon(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            log.warning("Redis Cluster slot map refresh failed: %s", exc)

    async def refresh(self) -> None:
        """Read the slot map from the first node that answers (the seeds, then every node known)."""
        candidates = list(dict.fromkeys([*self._seeds, *self._nodes]))
        failure: Exception | None = None
        for address in candidates:
            try:
                reply = await self._node(address).call(("CLUSTER", "SLOTS"))
            except ResponseError as exc:
                if "cluster support disabled" in str(exc):
                    raise RedisSetupError(
                        f"{address[0]}:{address[1]} is not a Redis Cluster node (cluster support disabled):"
                        " use redis:// for one Redis"
                    ) from None
                failure = exc
                continue
            except (RedisConnectionError, RedisTimeoutError) as exc:
                failure = exc
                continue
            owners: list[RedisChannel | None] = [None] * SLOTS
            replicated: set[RedisChannel] = set()
            for start, end, primary, *replicas in reply:
                node = self._node(_node_address(primary, address[0]))
                owners[start : end + 1] = [node] * (end + 1 - start)
                if replicas:
                    replicated.add(node)
            self._owners, self._replicated = owners, replicated
            return
        raise RedisConnectionError(f"no node of the Redis Cluster answered ({failure})")

    def _node(self, address: tuple[str, int]) -> RedisChannel:
        node = self._nodes.get(address)
        if node is None:
            endpoint = Endpoint(address[0], address[1], tls=self._tls, handshake=self._handshake)
            node = self._nodes[address] = RedisChannel(endpoint, self.timeout)
        return node

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for node in self._nodes.values():
            await node.close()


class ClusterScriptCall:
    """A script sent to its slot's node; `reply` resolves with its result once it has run (after any
    redirection), so a callback on it acts the moment the answer is final."""

    __slots__ = ("reply",)

    def __init__(self, channel: ClusterChannel, script: Script, command: tuple[Arg, ...], key: str) -> None:
        self.reply = channel.submit(command, key, script)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.reply.__await__()


def _reply_kind(error: ResponseError) -> str:
    return "noscript" if isinstance(error, NoScriptError) else str(error).split(" ", 1)[0].lower()


def _followed(error: ResponseError, script: Script | None) -> bool:
    if isinstance(error, NoScriptError):
        return script is not None
    return str(error).startswith(_FOLLOWED)


def _parse_address(address: str, default_host: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host or default_host, int(port))


def _node_address(entry: list[Any], asked_host: str) -> tuple[str, int]:
    host = entry[0].decode() if isinstance(entry[0], bytes) else str(entry[0])
    # An empty or "?" host means "the address you reached me at".
    return (host if host and host != "?" else asked_host, int(entry[1]))
