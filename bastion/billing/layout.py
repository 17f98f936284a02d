"""The names of Bastion's Redis keys.

On one Redis (or a Sentinel-watched primary) the names are `<prefix><kind>:<id>`, as they have always
been. On a Redis Cluster every key an admission or a settlement touches must live in one hash slot, so
each account is placed in one of `SHARDS` slot groups and every key of the account, and of its API
keys, carries that group's hash tag: `<prefix>{<tag>}<kind>:<id>`. The ledger stream the settlement
appends to is the group's own (`<prefix>{<tag>}ledger`), so each script stays in one slot; every
instance consumes all `SHARDS` streams. The tags are chosen so that their slots are spread evenly over
the 16384 (group n in slots n*1024 .. n*1024+1023), so that a cluster's masters share the groups.

Keys not tied to an account (the shared key cache, the sign-in throttle) are single-key operations and
keep plain names; the cluster client routes each one to its slot.
"""

from __future__ import annotations

import zlib
from functools import cache

from redis.crc import key_slot

SHARDS = 16
SLOTS = 16384


@cache
def shard_tags() -> tuple[str, ...]:
    """Tag n: the first `n.<i>` whose slot is in the n-th sixteenth of the slots (the same everywhere)."""
    span = SLOTS // SHARDS
    tags = []
    for shard in range(SHARDS):
        i = 0
        while key_slot(f"{{{shard}.{i}}}".encode()) // span != shard:
            i += 1
        tags.append(f"{shard}.{i}")
    return tuple(tags)


def shard_of(account_id: str) -> int:
    return zlib.crc32(account_id.encode()) % SHARDS


class KeyLayout:
    def __init__(self, prefix: str, tagged: bool) -> None:
        if tagged and ("{" in prefix or "}" in prefix):
            raise ValueError("BASTION_REDIS_PREFIX may not contain { or } on a Redis Cluster (hash tags)")
        self.prefix = prefix
        self.tagged = tagged
        if tagged:
            self._heads = tuple(f"{prefix}{{{tag}}}" for tag in shard_tags())
            self.streams = tuple(f"{head}ledger" for head in self._heads)
        else:
            self._heads = (prefix,)
            self.streams = (f"{prefix}ledger",)
        # Each slot group's refusal tallies (refusal_counts.lua), read and emptied by the ledger writer.
        self.refusal_tallies = tuple(f"{head}refusals" for head in self._heads)

    def _shard(self, account_id: str) -> int:
        """The account's index in `_heads` and `streams` (untagged: the one of each)."""
        return shard_of(account_id) if self.tagged else 0

    def head(self, account_id: str) -> str:
        """What begins the name of every key of this account (and of its API keys)."""
        return self._heads[self._shard(account_id)]

    def stream(self, account_id: str) -> str:
        return self.streams[self._shard(account_id)]

    # The hot path's two scripts: their keys in their order, built in one go (a call per name cost
    # ~0.6 us more per request).
    def admit_keys(self, account_id: str, key_id: str, period: str) -> list[str]:
        """admit.lua's KEYS."""
        shard = self._shard(account_id)
        h = self._heads[shard]
        return [
            f"{h}bucket:{key_id}",
            f"{h}account:{account_id}",
            f"{h}holds:{account_id}",
            f"{h}revoked:{key_id}",
            f"{h}keyver:{key_id}",
            f"{h}kspend:{key_id}:{period}",
            f"{h}kheld:{key_id}",
            f"{h}inflight:{key_id}",
            f"{h}refused:{key_id}",
            self.refusal_tallies[shard],
        ]

    def settle_keys(self, account_id: str, key_id: str, period: str) -> list[str]:
        """settle.lua's KEYS."""
        shard = self._shard(account_id)
        h = self._heads[shard]
        return [
            f"{h}bucket:{key_id}",
            f"{h}account:{account_id}",
            f"{h}holds:{account_id}",
            self.streams[shard],
            f"{h}kspend:{key_id}:{period}",
            f"{h}kheld:{key_id}",
            f"{h}inflight:{key_id}",
        ]

    # The names below take `head` (from `head(account_id)`, computed once per operation).
    @staticmethod
    def account(head: str, account_id: str) -> str:
        return f"{head}account:{account_id}"

    @staticmethod
    def holds(head: str, account_id: str) -> str:
        return f"{head}holds:{account_id}"

    @staticmethod
    def bucket(head: str, key_id: str) -> str:
        return f"{head}bucket:{key_id}"

    @staticmethod
    def revoked(head: str, key_id: str) -> str:
        return f"{head}revoked:{key_id}"

    @staticmethod
    def key_version(head: str, key_id: str) -> str:
        return f"{head}keyver:{key_id}"

    @staticmethod
    def key_spend(head: str, key_id: str, period: str) -> str:
        return f"{head}kspend:{key_id}:{period}"

    @staticmethod
    def key_holds(head: str, key_id: str) -> str:
        return f"{head}kheld:{key_id}"

    @staticmethod
    def in_flight(head: str, key_id: str) -> str:
        return f"{head}inflight:{key_id}"

    @staticmethod
    def refused(head: str, key_id: str) -> str:
        return f"{head}refused:{key_id}"

    # Running usage (bastion/billing/checkpoints.py): per slot group, the instances that checkpoint there
    # (with their last heartbeat) and each one's checkpoints.
    @property
    def heads(self) -> tuple[str, ...]:
        return self._heads

    @staticmethod
    def runners(head: str) -> str:
        return f"{head}runners"

    @staticmethod
    def running(head: str, instance_id: str) -> str:
        return f"{head}running:{instance_id}"

    def tallies(self, account_id: str) -> str:
        return self.refusal_tallies[self._shard(account_id)]

    def key_cache(self, key_hash: str) -> str:
        return f"{self.prefix}key:{key_hash}"
