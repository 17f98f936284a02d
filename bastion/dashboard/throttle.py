"""Failed sign-ins, counted per email and per client address over a window: past the limit, sign-in
answers 429 with `Retry-After` until the window of the first failure ends.

With Redis the counts are shared by every instance (a counter per email hash and per address, expiring
with its window); without it they are kept in this process, which is then the only one.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Limits:
    per_email: int
    per_address: int
    window_seconds: int


class Throttle(Protocol):
    async def retry_after(self, email: str, address: str) -> int:
        """Seconds until a sign-in for this email from this address may be tried; 0: now."""
        ...

    async def failed(self, email: str, address: str) -> None: ...

    async def succeeded(self, email: str) -> None: ...


def _email_key(email: str) -> str:
    # The email as typed is not kept in Redis: a hash names its counter.
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


class MemoryThrottle:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._counts: dict[str, tuple[int, float]] = {}  # name -> (failures, window ends at)

    def _count(self, name: str, now: float) -> tuple[int, float]:
        count = self._counts.get(name)
        if count is None or count[1] <= now:
            self._counts.pop(name, None)
            return 0, now + self.limits.window_seconds
        return count

    async def retry_after(self, email: str, address: str) -> int:
        now = time.monotonic()
        waits = [0.0]
        for name, limit in (
            (f"e:{_email_key(email)}", self.limits.per_email),
            (f"a:{address}", self.limits.per_address),
        ):
            failures, ends = self._count(name, now)
            if failures >= limit:
                waits.append(ends - now)
        return math.ceil(max(waits))

    async def failed(self, email: str, address: str) -> None:
        now = time.monotonic()
        if len(self._counts) > 100_000:  # forget finished windows rather than grow without bound
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        for name in (f"e:{_email_key(email)}", f"a:{address}"):
            failures, ends = self._count(name, now)
            self._counts[name] = (failures + 1, ends)

    async def succeeded(self, email: str) -> None:
        self._counts.pop(f"e:{_email_key(email)}", None)


# One counter per call: the email's and the address's may live in different slots of a Redis Cluster.
_FAIL = """
if redis.call('INCR', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
"""


class RedisThrottle:
    def __init__(self, redis: Any, prefix: str, limits: Limits) -> None:
        self.redis = redis
        self.prefix = prefix
        self.limits = limits
        self._fail = redis.register_script(_FAIL)

    def _names(self, email: str, address: str) -> tuple[str, str]:
        return f"{self.prefix}signin:e:{_email_key(email)}", f"{self.prefix}signin:a:{address}"

    async def retry_after(self, email: str, address: str) -> int:
        by_email, by_address = self._names(email, address)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(by_email).ttl(by_email).get(by_address).ttl(by_address)
            email_count, email_ttl, address_count, address_ttl = await pipe.execute()
        waits = [0]
        if int(email_count or 0) >= self.limits.per_email:
            waits.append(max(int(email_ttl), 1))
        if int(address_count or 0) >= self.limits.per_address:
            waits.append(max(int(address_ttl), 1))
        return max(waits)

    async def failed(self, email: str, address: str) -> None:
        window = [self.limits.window_seconds]
        await asyncio.gather(*(self._fail(keys=[name], args=window) for name in self._names(email, address)))

    async def succeeded(self, email: str) -> None:
        await self.redis.delete(self._names(email, "")[0])
