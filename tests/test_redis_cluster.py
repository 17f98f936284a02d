"""Bastion on a real 3-master Redis Cluster (started on free ports), two gateway processes sharing it and
one PostgreSQL: exact billing on every slot group, the global rate limit, no overspend with 50 concurrent
requests, revocation, a live resharding of an account's slot during traffic, the warm key's two round
trips, the sign-in throttle and live balances, and the one-line startup errors of a mismatched URL."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from conftest import PROVIDER_KEY, gateway_models_file
from dashboard_client import person
from metrics_scrape import scrape, value
from provision import REDIS_URL
from redis.crc import key_slot
from redis_engines import RedisCluster, redis_cluster, redis_server_binary
from stacks import Stack
from test_shared_state import measure_warm_key
from traffic import Traffic, shared_stack

from bastion.billing.layout import SHARDS, KeyLayout, shard_of, shard_tags
from bastion.billing.live import RedisLive
from bastion.dashboard.throttle import Limits, RedisThrottle
from bastion.db.views import CreditState

HELLO = [{"role": "user", "content": "hi"}]
ONE_REQUEST = 17_000  # 11 prompt + 3 completion tokens at $1 / $2 per 1M
USD = 10**9

pytestmark = pytest.mark.skipif(
    redis_server_binary() is None and not os.environ.get("BASTION_REQUIRE_ENGINES"),
    reason="redis-server is not installed",
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with redis_cluster(masters=3) as started:
        yield started


@pytest.fixture(scope="module")
def clustered(
    cluster: RedisCluster, upstream: Any, blackhole_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with shared_stack(cluster.url, upstream, blackhole_port, tmp_path_factory.mktemp("clustered")) as stack:
        yield stack


def _chat(stack: Stack, key: str, index: int, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{stack.gateways[index % len(stack.gateways)].base_url}/chat/completions",
        json={"model": "m-echo", "messages": HELLO, **extra},
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    )


def _account_in_shard(
    stack: Stack, shard: int, usd_nano: int = USD, **key_options: Any
) -> tuple[str, str, str]:
    for _ in range(400):
        account = stack.account(usd_nano, **key_options)
        if shard_of(account[0]) == shard:
            return account
    raise AssertionError(f"no account landed in slot group {shard}")


def test_every_key_of_an_account_lives_in_its_slot_group(cluster: RedisCluster, clustered: Stack) -> None:
    account_id, key_id, key = clustered.account(USD)
    assert _chat(clustered, key, 0).status_code == 200
    clustered.wait_records(account_id, 1)
    names = [name.decode() for name in cluster.client().scan_iter(match=f"{clustered.redis_prefix}*")]
    mine = [name for name in names if account_id in name or key_id in name]
    # account, bucket, key spend, key holds (the sets of holds and requests in flight are gone once
    # empty): all under the account's hash tag
    assert {name.split("}", 1)[1].split(":", 1)[0] for name in mine} >= {
        "account",
        "bucket",
        "kspend",
        "kheld",
    }
    tag = shard_tags()[shard_of(account_id)]
    assert {key_slot(name.encode()) for name in mine} == {key_slot(f"{{{tag}}}".encode())}


def test_two_gateways_bill_exactly_in_every_slot_group(clustered: Stack) -> None:
    # One account in each of the 16 slot groups: every group's ledger stream is consumed.
    accounts = [_account_in_shard(clustered, shard) for shard in range(SHARDS)]
    for n, (_, _, key) in enumerate(accounts):
        for i in range(2):
            answer = _chat(clustered, key, n + i)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-bastion-cost-usd"] == "0.000017"
    for account_id, _, _ in accounts:
        records = clustered.wait_records(account_id, 2)
        assert sum(r.cost_nano for r in records) == 2 * ONE_REQUEST
        assert clustered.balance(account_id) == USD - 2 * ONE_REQUEST
    check = clustered.bastion("ledger", "check", "--json")
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_rate_limit_is_global_across_processes(clustered: Stack) -> None:
    _, _, key = clustered.account(USD, rpm=6)
    statuses = [_chat(clustered, key, i).status_code for i in range(12)]
    assert statuses[:6] == [200] * 6 and set(statuses[6:]) == {429}, statuses


def test_no_overspend_with_50_concurrent_requests_on_two_gateways(clustered: Stack, upstream: Any) -> None:
    # Worst case (5 + 2 * 10) * 1,000 = 25,000 nano; the balance covers 5 of them.
    balance = 5 * 25_000
    account_id, _, key = clustered.account(balance)
    prefix = f"ovs-{account_id}-"
    clients = [
        openai.AsyncOpenAI(base_url=g.base_url, api_key=key, max_retries=0, timeout=30)
        for g in clustered.gateways
    ]

    async def one(i: int) -> int:
        try:
            await clients[i % 2].chat.completions.create(
                model="m-echo", messages=HELLO, max_tokens=10, extra_headers={"x-request-id": f"{prefix}{i}"}
            )
            return 200
        except openai.APIStatusError as exc:
            return exc.status_code

    async def all_of_them() -> list[int]:
        return list(await asyncio.gather(*(one(i) for i in range(50))))

    statuses = asyncio.run(all_of_them())
    served = statuses.count(200)
    assert set(statuses) <= {200, 402} and served >= 5, statuses
    reached = [r for r in upstream.requests if r.key.startswith(prefix)]
    assert len(reached) == served
    records = clustered.wait_records(account_id, served)
    assert len({r.request_id for r in records}) == served
    final = clustered.balance(account_id)
    assert final == balance - ONE_REQUEST * served >= 0


def test_revocation_reaches_both_gateways_at_once(clustered: Stack) -> None:
    _, key_id, key = clustered.account(USD)
    assert [_chat(clustered, key, i).status_code for i in range(2)] == [200, 200]  # warm in both caches
    assert clustered.bastion("keys", "revoke", key_id).returncode == 0
    # The marker is set in the key's slot by the CLI: the very next request on either gateway is refused.
    assert [_chat(clustered, key, i).status_code for i in range(2)] == [401, 401]


def test_resharding_the_accounts_slot_during_traffic_loses_nothing(
    cluster: RedisCluster, clustered: Stack
) -> None:
    account_id, _, key = clustered.account(USD, rpm=1_000_000, tpm=100_000_000)
    slot = key_slot(f"{{{shard_tags()[shard_of(account_id)]}}}".encode())
    source = cluster.node_for_slot(slot)
    target = next(port for port in cluster.ports if port != source)

    def half_way() -> None:
        # Not a synchronisation: the slot is held half migrated for a while, so that requests meet its
        # TRYAGAIN (the account's keys split between two nodes) and ASK replies, and must wait them out
        # rather than fail.
        time.sleep(0.25)

    with Traffic(clustered, key) as traffic:
        traffic.wait_for_more(40)
        cluster.move_slot(slot, target, keys_batch=2, between_batches=half_way)
        traffic.wait_for_more(40)
    assert traffic.refused == []
    assert cluster.node_for_slot(slot) == target
    # The gateways did meet the migration (and followed it): its replies are counted, never surfaced.
    followed = {
        reply: sum(
            value(scrape(g.root), "bastion_redis_redirects_total", reply=reply) for g in clustered.gateways
        )
        for reply in ("moved", "ask", "tryagain")
    }
    assert followed["tryagain"] + followed["ask"] > 0 and followed["moved"] > 0, followed
    traffic.assert_billed_once(account_id, USD, ONE_REQUEST)


def test_a_cluster_url_without_cluster_mode_is_one_clear_line(cluster: RedisCluster, tmp_path: Path) -> None:
    node = f"redis://127.0.0.1:{cluster.ports[0]}"
    for url, said in [
        (node, "names a Redis Cluster node: use redis+cluster://"),
        (f"redis+cluster://{REDIS_URL.split('://', 1)[1].split('/')[0]}", "is not a Redis Cluster node"),
        ("redis+cluster://127.0.0.1:6379/2", "a Redis Cluster has only database 0"),
        ("rediss+sentinel://127.0.0.1:26379", "needs the service name"),
    ]:
        for command in (("serve", "--port", "0"), ("accounts", "list")):
            done = _bastion(tmp_path, url, *command)
            assert done.returncode != 0, (url, command, done.stdout)
            assert said in done.stderr, (url, command, done.stderr)
            assert "Traceback" not in done.stderr, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def _bastion(workdir: Path, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env = inherited | {"BASTION_REDIS_URL": redis_url, "BASTION_DEMO": "1", "BASTION_DASHBOARD": "false"}
    env["BASTION_DATABASE_URL"] = f"sqlite+aiosqlite:///{workdir}/bastion.db"
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
        env=env,
    )


async def test_the_throttle_and_live_balances_work_on_the_cluster(cluster: RedisCluster) -> None:
    prefix = f"test-{secrets.token_hex(4)}:"
    live = RedisLive(cluster.url, prefix)
    await live.start()
    try:
        throttle = RedisThrottle(live.redis, prefix, Limits(per_email=2, per_address=3, window_seconds=60))
        # The email's and the address's counters hash to different slots: counted apart, read together.
        names = [f"{prefix}signin:e:x", f"{prefix}signin:a:203.0.113.9"]
        assert len({key_slot(n.encode()) for n in names}) == 2
        assert await throttle.retry_after("a@example.com", "203.0.113.9") == 0
        await throttle.failed("a@example.com", "203.0.113.9")
        assert await throttle.retry_after("a@example.com", "203.0.113.9") == 0
        await throttle.failed("a@example.com", "203.0.113.9")
        assert 0 < await throttle.retry_after("a@example.com", "203.0.113.9") <= 60
        assert await throttle.retry_after("b@example.com", "203.0.113.9") == 0  # address: 2 of 3
        await throttle.succeeded("a@example.com")
        assert await throttle.retry_after("a@example.com", "198.51.100.1") == 0
        account = f"acct-{secrets.token_hex(3)}"
        assert await live.balance(account) is None
        await live.load_account(account, CreditState(5 * USD, 1, USD))
        balance = await live.balance(account)
        assert balance is not None and (balance.balance_nano, balance.reserved_nano) == (4 * USD, 0)
    finally:
        await live.close()
        client = cluster.client()
        for name in client.scan_iter(match=f"{prefix}*"):
            client.delete(name)


def test_the_layout_spreads_slot_groups_over_the_slots() -> None:
    slots = [key_slot(f"{{{tag}}}".encode()) for tag in shard_tags()]
    assert [slot // 1024 for slot in slots] == list(range(SHARDS))
    layout = KeyLayout("bastion:", tagged=True)
    head = layout.head("acct-1")
    assert head.startswith("bastion:{") and layout.stream("acct-1") == f"{head}ledger"
    assert KeyLayout("bastion:", tagged=False).account("bastion:", "a") == "bastion:account:a"
    with pytest.raises(ValueError, match="may not contain"):
        KeyLayout("bastion:{x}:", tagged=True)
    # The scripts' key lists (built in one go on the hot path) name the same keys, in the scripts' order.
    for tagged in (False, True):
        layout = KeyLayout("p:", tagged)
        h = layout.head("acct-9")
        assert layout.admit_keys("acct-9", "k", "d1") == [
            *(layout.bucket(h, "k"), layout.account(h, "acct-9"), layout.holds(h, "acct-9")),
            *(layout.revoked(h, "k"), layout.key_version(h, "k"), layout.key_spend(h, "k", "d1")),
            *(layout.key_holds(h, "k"), layout.in_flight(h, "k")),
            *(layout.refused(h, "k"), layout.tallies("acct-9")),
        ]
        assert layout.tallies("acct-9") in layout.refusal_tallies
        assert layout.settle_keys("acct-9", "k", "d1") == [
            *(layout.bucket(h, "k"), layout.account(h, "acct-9"), layout.holds(h, "acct-9")),
            *(layout.stream("acct-9"), layout.key_spend(h, "k", "d1")),
            *(layout.key_holds(h, "k"), layout.in_flight(h, "k")),
        ]


async def test_a_warm_key_costs_two_round_trips_on_the_cluster(
    cluster: RedisCluster, upstream: Any, blackhole_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_TEST_UPSTREAM_KEY", PROVIDER_KEY)
    config = tmp_path / "bastion.yaml"
    config.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    prefix = f"hot-{secrets.token_hex(4)}:"
    try:
        await measure_warm_key(cluster.url, prefix, config)
    finally:
        cluster.delete_all(f"{prefix}*")


def test_a_masters_failover_mid_traffic_is_followed_and_loses_no_usage(
    upstream: Any, blackhole_port: int, tmp_path: Path
) -> None:
    # Three masters with a replica each: settlements wait for the replica (WAIT, on the same connection),
    # so the replica promoted when its master is killed holds every record the gateways counted as kept.
    with redis_cluster(masters=3, replicas=1) as cluster:
        # Every node as a seed: the CLI, started after the kill, must find the cluster without the dead one.
        seeds = "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in cluster.nodes)
        with shared_stack(seeds, upstream, blackhole_port, tmp_path) as stack:
            account_id, _, key = stack.account(USD, rpm=1_000_000, tpm=100_000_000)
            slot = key_slot(f"{{{shard_tags()[shard_of(account_id)]}}}".encode())
            with Traffic(stack, key) as traffic:
                traffic.wait_for_more(40)
                killed_at = time.monotonic()
                old = cluster.kill_master_of(slot)
                recovered = traffic.served_again_after(killed_at)
                assert cluster.wait_for_promotion(slot, old) != old
                traffic.wait_for_more(40)
            print(f"served again {recovered:.2f} s after the kill: {len(traffic.served)} served")
            assert recovered < 10
            assert {status for status, _ in traffic.refused} <= {503}, traffic.refused[:3]
            traffic.assert_billed_once(account_id, USD, ONE_REQUEST)


def test_the_dashboard_signs_in_and_shows_the_cluster(clustered: Stack) -> None:
    # Sessions are database rows; the sign-in throttle and live balances come from the cluster.
    operator = person(clustered, "--operator")
    try:
        page = operator.page("/dashboard/gateway")
        assert page.status_code == 200
        assert "Redis Cluster (shared)" in page.text and "Ready: database, Redis Cluster" in page.text
        account_id, _, key = clustered.account(USD)
        assert _chat(clustered, key, 0).status_code == 200
        clustered.wait_records(account_id, 1)
        overview = operator.page(f"/dashboard/a/{account_id}/")
        assert overview.status_code == 200 and "$0.999983" in overview.text, overview.text[:2000]
    finally:
        operator.close()
