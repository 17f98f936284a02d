"""Bastion on a Redis primary watched by Sentinel (a primary, a replica and three sentinels started on free
ports), two gateway processes: the primary is killed in the middle of traffic, the replica promoted, and
requests are served again within 10 s with no settled usage lost."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from conftest import gateway_models_file
from provision import create_postgres_database, drop_postgres_database, migrated
from redis_engines import RedisSentinel, redis_sentinel, redis_server_binary
from stacks import Stack, poll

HELLO = [{"role": "user", "content": "hi"}]
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
def watched(
    sentinel: RedisSentinel, upstream: Any, blackhole_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("watched")
    config = workdir / "bastion.yaml"
    config.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    database = create_postgres_database()
    asyncio.run(migrated(database))
    stack = Stack("shared", database, sentinel.url, f"test-{secrets.token_hex(4)}:", config, workdir)
    stack.start()
    stack.start()
    yield stack
    stack.stop()
    drop_postgres_database(database)


def test_a_failover_mid_traffic_is_served_again_within_10_s_and_loses_no_usage(
    sentinel: RedisSentinel, watched: Stack
) -> None:
    account_id, _, key = watched.account(USD, rpm=1_000_000, tpm=100_000_000)
    served: list[float] = []  # when each 200 arrived
    refused: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic(index: int) -> None:
        url = f"{watched.gateways[index % 2].base_url}/chat/completions"
        with httpx.Client(timeout=20) as http:
            while not stop.is_set():
                answer = http.post(
                    url,
                    json={"model": "m-echo", "messages": HELLO},
                    headers={"Authorization": f"Bearer {key}"},
                )
                if answer.status_code == 200:
                    served.append(time.monotonic())
                else:
                    refused.append((answer.status_code, answer.json()["error"]["type"]))
                    time.sleep(0.05)  # a client's back-off, not a synchronisation

    workers = [threading.Thread(target=traffic, args=(i,)) for i in range(4)]
    for worker in workers:
        worker.start()
    try:
        assert poll(lambda: len(served) >= 40, 20), "no traffic"
        old_primary = sentinel.primary_port
        killed_at = time.monotonic()
        sentinel.kill_primary()
        assert poll(lambda: any(t > killed_at + 0.5 for t in served), 10), "not served again within 10 s"
        again = next(t for t in served if t > killed_at + 0.5)
        new_primary = sentinel.wait_for_failover()
        assert new_primary != old_primary
        after = len(served)
        assert poll(lambda: len(served) >= after + 40, 20), "traffic stopped after the failover"
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert again - killed_at < 10
    # While no primary answered, requests were refused with the envelope's 503 (nothing was forwarded).
    assert {status for status, _ in refused} <= {503}, refused
    print(
        f"served again {again - killed_at:.2f} s after the kill: {len(served)} served, {len(refused)} refused"
    )
    records = watched.wait_records(account_id, len(served), timeout=30)
    assert len({r.request_id for r in records}) == len(served)
    assert watched.balance(account_id) == USD - len(served) * ONE_REQUEST
    assert watched.bastion("ledger", "check").returncode == 0
    for gateway in watched.gateways:
        assert poll(lambda g=gateway: httpx.get(g.root + "/readyz", timeout=3).status_code == 200, 10)
