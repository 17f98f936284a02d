"""Key authentication with no database query on a warm key.

A verified key is kept in a bounded in-process cache and shared through Redis (`key:<hash>`, 5 minutes),
so each instance asks the database once per key. Revocation takes effect everywhere without waiting for
caches: the revoke operation sets a Redis marker that the admission script checks on every request (so
the next request is refused), and every instance also polls the database for revocations every
`bastion.sync.POLL_SECONDS` (2 s) and evicts them (this is what covers the in-process mode).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import redis.asyncio as aioredis

from bastion.auth import Principal
from bastion.auth.keys import hash_key, well_formed
from bastion.db.store import KeyView, Store
from bastion.errors import invalid_api_key

CACHE_SECONDS = 300.0
NEGATIVE_CACHE_SECONDS = 10.0
SHARED_CACHE_SECONDS = 300
MAX_CACHED_KEYS = 50_000


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal | None  # None: no such key (negative entry)
    expires_at: float | None  # the key's own expiry, epoch seconds
    revoked: bool
    cached_until: float  # monotonic


class KeyAuthenticator:
    def __init__(
        self,
        store: Store,
        default_rpm: int,
        default_tpm: int,
        redis: aioredis.Redis | None = None,
        redis_prefix: str = "bastion:",
    ) -> None:
        self.store = store
        self.default_rpm = default_rpm
        self.default_tpm = default_tpm
        self.redis = redis
        self.redis_prefix = redis_prefix
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._hash_by_key_id: dict[str, str] = {}
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        self.lookups = 0  # database lookups made (tests count them)

    async def authenticate(self, authorization: bytes | None) -> Principal:
        key = _bearer_key(authorization)
        if key is None:
            raise invalid_api_key()
        key_hash = hash_key(key)
        entry = self._cache.get(key_hash)
        if entry is None or entry.cached_until < time.monotonic():
            entry = await self._load(key_hash)
        if entry.principal is None or entry.revoked:
            raise invalid_api_key()
        if entry.expires_at is not None and entry.expires_at <= time.time():
            raise invalid_api_key()
        return entry.principal

    async def reload(self, key_id: str) -> Principal | None:
        found = await self.store.key(key_id)
        self.forget(key_id)
        if found is None:
            return None
        view, key_hash = found
        if self.redis is not None:
            await self.redis.delete(f"{self.redis_prefix}key:{key_hash}")
        self.lookups += 1
        entry = self._entry(view)
        self._remember(key_hash, entry)
        if entry.revoked or (entry.expires_at is not None and entry.expires_at <= time.time()):
            return None
        return entry.principal

    def forget(self, key_id: str) -> None:
        """Evict a key (revoked elsewhere); its next use re-reads it."""
        key_hash = self._hash_by_key_id.pop(key_id, None)
        if key_hash is not None:
            self._cache.pop(key_hash, None)

    async def _load(self, key_hash: str) -> _Entry:
        # Concurrent first uses of one key share one lookup.
        loading = self._loading.get(key_hash)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._loading[key_hash] = future
        try:
            entry = self._entry(await self._lookup(key_hash))
            self._remember(key_hash, entry)
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody logs it as lost
            raise
        finally:
            del self._loading[key_hash]

    async def _lookup(self, key_hash: str) -> KeyView | None:
        shared = f"{self.redis_prefix}key:{key_hash}"
        if self.redis is not None:
            cached = await self.redis.get(shared)
            if cached is not None:
                return _decode_view(cached)
        self.lookups += 1
        view = await self.store.find_key(key_hash)
        if view is not None and self.redis is not None:
            await self.redis.set(shared, orjson.dumps(view), ex=SHARED_CACHE_SECONDS)
        return view

    def _entry(self, view: KeyView | None) -> _Entry:
        now = time.monotonic()
        if view is None:
            return _Entry(None, None, False, now + NEGATIVE_CACHE_SECONDS)
        principal = Principal(
            key_id=view.id,
            account_id=view.account_id,
            key_prefix=view.prefix,
            allowed_models=frozenset(view.allowed_models) if view.allowed_models is not None else None,
            rpm=view.rpm or self.default_rpm,
            tpm=view.tpm or self.default_tpm,
            name=view.name,
            expires_at=view.expires_at.timestamp() if view.expires_at is not None else None,
            budget_nano=view.budget_nano,
            budget_period=view.budget_period or "total",
            max_parallel=view.max_parallel,
            version=view.version,
        )
        expires = principal.expires_at
        return _Entry(principal, expires, view.revoked_at is not None, now + CACHE_SECONDS)

    def _remember(self, key_hash: str, entry: _Entry) -> None:
        self._cache[key_hash] = entry
        self._cache.move_to_end(key_hash)
        if entry.principal is not None:
            self._hash_by_key_id[entry.principal.key_id] = key_hash
        while len(self._cache) > MAX_CACHED_KEYS:
            _, evicted = self._cache.popitem(last=False)
            if evicted.principal is not None:
                self._hash_by_key_id.pop(evicted.principal.key_id, None)


def _bearer_key(authorization: bytes | None) -> str | None:
    if authorization is None or len(authorization) > 512:
        return None
    scheme, _, credential = authorization.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    try:
        key = credential.strip().decode("ascii")
    except UnicodeDecodeError:
        return None
    return key if well_formed(key) else None


def _decode_view(data: bytes) -> KeyView:
    fields = orjson.loads(data)
    for name in ("expires_at", "revoked_at", "created_at"):
        if fields[name] is not None:
            fields[name] = datetime.fromisoformat(fields[name]).astimezone(UTC)
    if fields["allowed_models"] is not None:
        fields["allowed_models"] = tuple(fields["allowed_models"])
    known = KeyView.__dataclass_fields__  # a field a newer instance added is left out, not an error
    return KeyView(**{name: value for name, value in fields.items() if name in known})
