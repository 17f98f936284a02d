"""What `BASTION_REDIS_URL` names: one Redis, a Redis Cluster, or a primary watched by Sentinel.

- `redis://[user:password@]host:port[/db]` (or `rediss://`, `unix://`): one Redis server.
- `redis+cluster://[user:password@]host:port[,host:port...]` (or `rediss+cluster://`): a Redis Cluster,
  found through any of the seed nodes listed; keys are hash-tagged (see `layout.py`).
- `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]` (or `rediss+sentinel://`):
  the primary of `service`, asked from the sentinels listed; the user and password are the primary's
  (sentinels that need a password of their own: `?sentinel_password=...`).

Each is served by redis-py's matching client for the operations off the hot path and by Bastion's own
channel (`channel.py`, `cluster_channel.py`) for the admission and settlement scripts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

Mode = Literal["single", "cluster", "sentinel"]
SENTINEL_PORT = 26379


class RedisSetupError(RuntimeError):
    """Bastion cannot use the Redis that BASTION_REDIS_URL names (said in one line)."""


@dataclass(frozen=True)
class RedisTarget:
    mode: Mode
    url: str  # as given (single mode: what redis-py parses)
    nodes: tuple[tuple[str, int], ...] = ()  # cluster seeds, or sentinels
    service: str = ""  # sentinel: the monitored primary's name
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def tagged(self) -> bool:
        """Keys of one account share a hash tag (needed on a cluster)."""
        return self.mode == "cluster"

    def describe(self) -> str:
        where = ",".join(f"{host}:{port}" for host, port in self.nodes)
        if self.mode == "cluster":
            return f"Redis Cluster via {where}"
        if self.mode == "sentinel":
            return f"Redis primary '{self.service}' via sentinels {where}"
        return "Redis"


def parse_redis_url(url: str) -> RedisTarget:
    """The target `url` names; ValueError (one line, naming the problem) for one Bastion cannot use."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if not rest:
        raise ValueError(f"not a Redis URL: {url!r} (redis://host:port, redis+cluster://, redis+sentinel://)")
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget("single", url, tls=scheme == "rediss")
    base, _, kind = scheme.partition("+")
    if base not in ("redis", "rediss") or kind not in ("cluster", "sentinel"):
        raise ValueError(
            f"unknown Redis URL scheme {scheme!r}: use redis://, rediss://, unix://, redis+cluster:// or"
            " redis+sentinel://"
        )
    parts = urlsplit(f"redis://{rest}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    default_port = SENTINEL_PORT if kind == "sentinel" else 6379
    nodes = tuple(_address(entry, default_port) for entry in hosts.split(",") if entry)
    if not nodes:
        raise ValueError(f"{scheme}:// needs at least one host:port")
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    path = [segment for segment in parts.path.split("/") if segment]
    common: dict[str, Any] = {
        "nodes": nodes,
        "username": unquote(username) or None,
        "password": unquote(password) or None,
        "tls": base == "rediss",
    }
    if kind == "cluster":
        if path:
            raise ValueError("a Redis Cluster has only database 0: remove the path from redis+cluster://")
        return RedisTarget("cluster", url, **common)
    if not path or len(path) > 2:
        raise ValueError("redis+sentinel:// needs the service name as its path: .../<service>[/<db>]")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ValueError(f"redis+sentinel://: database {path[1]!r} is not a number") from None
    return RedisTarget(
        "sentinel",
        url,
        service=unquote(path[0]),
        db=db,
        sentinel_password=query.get("sentinel_password"),
        **common,
    )


def _address(entry: str, default_port: int) -> tuple[str, int]:
    host, _, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
    try:
        return (host.strip("[]") or "localhost", int(port) if port else default_port)
    except ValueError:
        raise ValueError(f"bad host:port {entry!r} in the Redis URL") from None


def client_for(target: RedisTarget) -> Any:
    """redis-py's asyncio client for `target` (operations off the hot path)."""
    if target.mode == "single":
        return aioredis.Redis.from_url(target.url, decode_responses=False, health_check_interval=30)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.mode == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            ssl=target.tls,
            decode_responses=False,
            require_full_coverage=True,
            **auth,
        )
    return sentinel_for(target).master_for(
        target.service, db=target.db, ssl=target.tls, decode_responses=False, **auth
    )


def sentinel_for(target: RedisTarget) -> Sentinel:
    sentinel_auth = {"password": target.sentinel_password} if target.sentinel_password else {}
    return Sentinel(
        list(target.nodes),
        sentinel_kwargs={"socket_timeout": 1.0, **sentinel_auth},
        socket_timeout=5.0,
    )
