"""Bastion on a Redis primary watched by Sentinel (a primary, a replica and three sentinels started on free
ports), two gateway processes: the primary is killed in the middle of traffic, the replica promoted, and
requests are served again within 10 s with no settled usage lost."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_engines import RedisSentinel, redis_sentinel, redis_server_binary
from stacks import Stack, poll
from traffic import Traffic, shared_stack

ONE_REQUEST = 17_000  # 11 prompt + 3 completion tokens at $1 / $2 per 1M
USD = 10**9

pytestmark = pytest.mark.skipif(
    redis_server_binary() is None and not os.environ.get("BASTION_REQUIRE_ENGINES"),
    reason="redis-server is not installed",
)


@pytest.fixture
def sentinel() -> Iterator[RedisSentinel]:
    with redis_sentinel() as started:
        yield started


@pytest.fixture
def watched(sentinel: RedisSentinel, upstream: Any, blackhole_port: int, tmp_path: Path) -> Iterator[Stack]:
    with shared_stack(sentinel.url, upstream, blackhole_port, tmp_path) as stack:
        yield stack


def test_a_failover_mid_traffic_is_served_again_within_10_s_and_loses_no_usage(
    sentinel: RedisSentinel, watched: Stack
) -> None:
    account_id, _, key = watched.account(USD, rpm=1_000_000, tpm=100_000_000)
    with Traffic(watched, key) as traffic:
        traffic.wait_for_more(40)
        old_primary = sentinel.primary_port
        killed_at = time.monotonic()
        sentinel.kill_primary()
        recovered = traffic.served_again_after(killed_at)
        assert sentinel.wait_for_failover() != old_primary
        traffic.wait_for_more(40)
    print(f"served again {recovered:.2f} s after the kill: {len(traffic.served)} served")
    assert recovered < 10
    # While no primary answered, requests were refused with the envelope's 503 (nothing was forwarded).
    assert {status for status, _ in traffic.refused} <= {503}, traffic.refused[:3]
    traffic.assert_billed_once(account_id, USD, ONE_REQUEST)
    for gateway in watched.gateways:
        assert poll(lambda g=gateway: httpx.get(g.root + "/readyz", timeout=3).status_code == 200, 10)
