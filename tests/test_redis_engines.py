"""The Redis harnesses of tests/redis_engines.py against real engines: a 3-master cluster covering every
slot, a live slot move under reads and writes (values kept, the source answering MOVED), a Sentinel
failover to the replica with acknowledged writes intact, and teardown even when the test fails."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import MovedError
from redis_engines import (
    HOST,
    RedisCluster,
    RedisProcess,
    redis_cli_binary,
    redis_cluster,
    redis_sentinel,
    redis_server_binary,
)

# CI installs Redis and sets BASTION_REQUIRE_ENGINES=1, so there a missing one fails rather than skips.
pytestmark = pytest.mark.skipif(
    (redis_server_binary() is None or redis_cli_binary() is None)
    and not os.environ.get("BASTION_REQUIRE_ENGINES"),
    reason="redis-server / redis-cli are not installed (apt-get install redis-server)",
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with redis_cluster(masters=3) as started:
        yield started


def listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def torn_down(processes: list[RedisProcess]) -> bool:
    return all(p.process is not None and p.process.poll() is not None for p in processes) and not any(
        listening(p.port) for p in processes
    )


def test_cluster_has_every_slot_on_three_masters(cluster: RedisCluster) -> None:
    ports = cluster.ports
    assert len(set(ports)) == 3
    assert all(port < 55535 for port in ports)
    assert cluster.url == f"redis+cluster://127.0.0.1:{ports[0]}"
    assert cluster.seed_urls == [f"redis://127.0.0.1:{port}" for port in ports]
    assert cluster.nodes == [("127.0.0.1", port) for port in ports]
    for port in ports:
        owners = cluster.slot_map(port)
        assert sorted(owners) == list(range(16384))
        assert set(owners.values()) == set(ports)
        info = cluster.connection(port).execute_command("CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert "cluster_known_nodes:3" in info
        assert "cluster_size:3" in info
        assert listening(port + 10000)  # the bus port
    assert cluster.node_for_slot(0) == cluster.slot_map()[0]
    assert cluster.node_for_slot(16383) == cluster.slot_map()[16383]


def test_slot_of_follows_hash_tags() -> None:
    assert RedisCluster.slot_of("foo") == 12182  # the cluster specification's example
    assert RedisCluster.slot_of("{user1000}.following") == RedisCluster.slot_of("{user1000}.followers")
    assert RedisCluster.slot_of("{user1000}.following") == key_slot(b"user1000")
    assert RedisCluster.slot_of(b"{}x") == key_slot(b"{}x")  # an empty tag is no tag


def test_cluster_client_reads_what_it_wrote_on_every_node(cluster: RedisCluster) -> None:
    client = cluster.client()
    keys: dict[int, str] = {}
    index = 0
    while len(keys) < 3:
        key = f"engines-selftest:{index}"
        keys.setdefault(cluster.node_for_key(key), key)
        index += 1
    try:
        for port, key in keys.items():
            assert client.set(key, f"value-{port}")
        for port, key in keys.items():
            assert client.get(key) == f"value-{port}".encode()
            assert cluster.connection(port).get(key) == f"value-{port}"  # on the node owning its slot
    finally:
        assert cluster.delete_all("engines-selftest:*") == 3
    assert all(client.get(key) is None for key in keys.values())


def test_move_slot_moves_a_slot_with_its_keys_under_traffic(cluster: RedisCluster) -> None:
    tag = "{engines-move}"
    slot = cluster.slot_of(tag)
    source = cluster.node_for_slot(slot)
    target = next(port for port in cluster.ports if port != source)
    client = cluster.client()
    values = {f"{tag}:{i}": f"v{i}" for i in range(25)}
    for key, value in values.items():
        client.set(key, value)
    half_migrated: list[tuple[bool, bool]] = []

    def during() -> None:
        # The slot is migrating on the source and importing on the target; a client still reads every
        # key (ASK for those already moved) and writes new ones (they go to the target).
        source_nodes = cluster.connection(source).execute_command("CLUSTER", "NODES")
        target_nodes = cluster.connection(target).execute_command("CLUSTER", "NODES")
        half_migrated.append((f"[{slot}->-" in source_nodes, f"[{slot}-<-" in target_nodes))
        # (One GET each: a multi-key command over keys split between the two nodes gets TRYAGAIN.)
        assert [client.get(key) for key in values] == [v.encode() for v in values.values()]
        client.set(f"{tag}:new:{len(half_migrated)}", "fresh")

    try:
        moved = cluster.move_slot(slot, target, keys_batch=4, between_batches=during)
        assert moved == 25  # the keys written during the move were created on the target
        assert half_migrated == [(True, True)] * 8  # before the first batch, then after each of 7
        assert cluster.node_for_slot(slot) == target
        assert all(cluster.slot_map(port)[slot] == target for port in cluster.ports)
        assert "->-" not in cluster.connection(source).execute_command("CLUSTER", "NODES")
        direct = cluster.connection(target)
        assert direct.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 25 + 8
        for key, value in values.items():
            assert direct.get(key) == value
            assert client.get(key) == value.encode()
        with pytest.raises(MovedError) as moved_error:
            cluster.connection(source).get(next(iter(values)))
        assert (moved_error.value.slot_id, moved_error.value.port) == (slot, target)
        assert cluster.connection(source).execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        assert cluster.move_slot(slot, target) == 0  # already there: nothing to do
    finally:
        cluster.delete_all(f"{tag}*")


def test_move_slot_back_and_a_failing_callback_still_completes_the_move(cluster: RedisCluster) -> None:
    tag = "{engines-back}"
    slot = cluster.slot_of(tag)
    home = cluster.node_for_slot(slot)
    away = next(port for port in cluster.ports if port != home)
    client = cluster.client()
    for i in range(5):
        client.set(f"{tag}:{i}", i)

    def broken() -> None:
        raise RuntimeError("the test's callback failed")

    try:
        with pytest.raises(RuntimeError, match="callback failed"):
            cluster.move_slot(slot, away, keys_batch=2, between_batches=broken)
        assert cluster.node_for_slot(slot) == away  # not left half migrated
        assert cluster.move_slot(slot, home, keys_batch=100) == 5
        assert cluster.node_for_slot(slot) == home
        assert [client.get(f"{tag}:{i}") for i in range(5)] == [str(i).encode() for i in range(5)]
    finally:
        cluster.delete_all(f"{tag}*")


def test_flushall_empties_every_node(cluster: RedisCluster) -> None:
    client = cluster.client()
    for i in range(30):
        client.set(f"engines-flush:{i}", i)
    cluster.flushall()
    assert all(cluster.connection(port).dbsize() == 0 for port in cluster.ports)


def test_cluster_is_torn_down_when_the_test_fails() -> None:
    with pytest.raises(ZeroDivisionError), redis_cluster(masters=3) as failing:
        processes, workdir = list(failing.processes), failing.workdir
        assert workdir.is_dir() and all(listening(port) for port in failing.ports)
        _ = 1 / 0
    assert torn_down(processes)
    assert not workdir.exists()


def test_sentinel_fails_over_to_the_replica_with_acknowledged_writes() -> None:
    with redis_sentinel() as service:
        s1, s2, s3 = service.sentinel_ports
        assert service.service == "bastion"
        assert service.url == f"redis+sentinel://127.0.0.1:{s1},127.0.0.1:{s2},127.0.0.1:{s3}/bastion"
        assert service.primary_url == f"redis://127.0.0.1:{service.primary_port}"
        assert service.current_primary() == ("127.0.0.1", service.primary_port)
        for port in service.sentinel_ports:
            sentinel = service.connection(port)
            assert len(sentinel.execute_command("SENTINEL", "sentinels", "bastion")) == 2
            replicas = sentinel.execute_command("SENTINEL", "replicas", "bastion")
            assert [dict(zip(r[::2], r[1::2], strict=True))["port"] for r in replicas] == [
                str(service.replica_port)
            ]
        primary = redis.Redis(host="127.0.0.1", port=service.primary_port, decode_responses=True)
        for i in range(100):
            primary.set(f"engines-failover:{i}", i)
        assert primary.execute_command("WAIT", 1, 1000) == 1
        primary.close()
        processes, workdir = [*service.sentinels, service.primary, service.replica], service.workdir

        started = time.monotonic()
        assert service.kill_primary() == service.primary_port
        assert not listening(service.primary_port)
        new_primary = service.wait_for_failover(timeout=10)
        elapsed = time.monotonic() - started
        assert elapsed < 10, elapsed
        assert new_primary == service.replica_port
        assert service.current_primary() == ("127.0.0.1", service.replica_port)
        promoted = service.client()
        assert promoted.info("replication")["role"] == "master"
        assert [promoted.get(f"engines-failover:{i}") for i in range(100)] == [str(i) for i in range(100)]
        assert promoted.set("engines-failover:after", "written")

        service.restart(service.primary_port)  # back on its port, with its append-only file
        restarted = service.connection(service.primary_port)
        assert restarted.get("engines-failover:99") == "99"
    assert torn_down(processes)
    assert not workdir.exists()
