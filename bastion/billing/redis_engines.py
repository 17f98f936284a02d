"""The channel for a Redis target, and the check that the target is what its URL says it is."""

from __future__ import annotations

from typing import Any

from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bastion.billing.channel import Arg, Endpoint, Locate, RedisChannel
from bastion.billing.cluster_channel import ClusterChannel
from bastion.billing.redis_target import RedisSetupError, RedisTarget, sentinel_for

Channel = RedisChannel | ClusterChannel


def open_channel(target: RedisTarget) -> Channel:
    if target.mode == "cluster":
        return ClusterChannel(target)
    if target.mode == "single":
        return RedisChannel(target.url)
    handshake: list[tuple[Arg, ...]] = []
    if target.password:
        handshake.append(
            ("AUTH", target.username, target.password) if target.username else ("AUTH", target.password)
        )
    if target.db:
        handshake.append(("SELECT", target.db))
    endpoint = Endpoint("", 0, tls=target.tls, handshake=tuple(handshake))
    locate = primary_locator(sentinel_for(target), target.service)
    return RedisChannel(endpoint, locate=locate, replicated=True)


def primary_locator(sentinel: Sentinel, service: str) -> Locate:
    async def locate() -> tuple[str, int]:
        try:
            host, port = await sentinel.discover_master(service)
        except RedisConnectionError:
            raise
        except Exception as exc:
            raise RedisConnectionError(f"the sentinels name no primary for '{service}': {exc}") from exc
        return str(host), int(port)

    return locate


async def check_mode(target: RedisTarget, client: Any) -> None:
    """RedisSetupError when a redis:// or redis+sentinel:// URL leads to a cluster node, said at startup
    in one line (the other way round, the cluster channel's first `CLUSTER SLOTS` says it)."""
    if target.mode == "cluster":
        return
    try:
        info = await client.info("cluster")
    except ResponseError:
        return  # INFO disabled (some managed Redis): nothing to check
    if int(info.get("cluster_enabled", 0)):
        raise RedisSetupError(
            "BASTION_REDIS_URL names a Redis Cluster node: use redis+cluster://host:port (cluster mode)"
        )
