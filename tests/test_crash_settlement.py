"""A crash is settled by whoever is left: streams' running usage is checkpointed beside their
reservations, and when an instance dies (kill -9) another one (or its own next start) settles its
streams from their last checkpoints, each exactly once, and releases what they held.

Shared stack: two instances on one PostgreSQL and one Redis. Embedded stack: SQLite and the in-process
live state, settled by the next start. The windows are short here (checkpoints every 0.3 s, a heartbeat
window of 1.5 s); the defaults are 1 s and 10 s.
"""

from __future__ import annotations

import re
import secrets
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.cluster
import yaml
from conftest import Gateway, gateway_models_file
from dashboard_client import person
from metrics_scrape import scrape, value
from provision import create_postgres_database, drop_postgres_database, migrated, run
from redis_engines import RedisCluster, redis_cluster, redis_server_binary
from stacks import Stack, drop_stack, make_stack, poll
from upstream import MockUpstream

from bastion.billing.estimate import completion_tokens_from_chars, text_chars
from bastion.billing.layout import KeyLayout, shard_of
from bastion.db.store import UsageRow
from bastion.money import NANO_PER_USD

HELLO = [{"role": "user", "content": "hello"}]
FAST = {"BASTION_CHECKPOINT_SECONDS": "0.3", "BASTION_HEARTBEAT_WINDOW_SECONDS": "1.5"}
CREDIT = 10 * NANO_PER_USD
LOST = 70  # the killed instance's streams: more than one checkpoint write's slice (64)


@dataclass
class Stream:
    """One slow stream (a tick every 0.1 s) read on a thread; what it received, counted as Bastion does."""

    gateway: Gateway
    key: str
    name: str
    lines: list[str] = field(default_factory=list)
    chars: int = 0
    ended: str = ""  # the last data line, or "(cut)" if the connection broke
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        body = {"model": "m-slow", "messages": HELLO, "stream": True}
        headers = {"Authorization": f"Bearer {self.key}", "x-request-id": self.name}
        try:
            with httpx.stream(
                "POST", self.gateway.base_url + "/chat/completions", json=body, headers=headers, timeout=30
            ) as answer:
                for line in answer.iter_lines():
                    if line.startswith("data:"):
                        self.lines.append(line)
                        self.chars += text_chars(line[5:].encode())
                        self.ended = line
                    if self.stop.is_set():
                        return
        except httpx.HTTPError:
            self.ended = "(cut)"

    def ticks(self) -> int:
        return sum("tick " in line for line in self.lines)


def start_streams(
    gateway: Gateway, key: str, count: int, tag: str
) -> tuple[list[Stream], list[threading.Thread]]:
    streams = [Stream(gateway, key, f"{tag}-{n}") for n in range(count)]
    threads = [threading.Thread(target=s.run, daemon=True) for s in streams]
    for thread in threads:
        thread.start()
    assert poll(lambda: all(s.ticks() >= 8 for s in streams), 15), [s.ticks() for s in streams]
    return streams, threads


def by_name(records: list[UsageRow]) -> dict[str, UsageRow]:
    named = {r.client_request_id: r for r in records}
    assert len(named) == len(records), "a request has more than one record"
    return named  # type: ignore[return-value]


def completion_bound(stream: Stream) -> int:
    """The most a record of this stream may bill: what the client received, estimated as Bastion does."""
    return completion_tokens_from_chars(stream.chars)


def redis_client(stack: Stack) -> Any:
    if stack.redis_url and stack.redis_url.startswith("redis+cluster://"):
        host, port = stack.redis_url.split("://", 1)[1].split(":")
        return redis.cluster.RedisCluster(host=host, port=int(port))
    return redis.Redis.from_url(stack.redis_url or "")


def layout_of(stack: Stack) -> KeyLayout:
    return KeyLayout(stack.redis_prefix, bool(stack.redis_url and "cluster" in stack.redis_url))


def redis_figures(stack: Stack, account_id: str) -> tuple[int, int, int]:
    """The account in Redis: (credit, spent, reserved)."""
    client = redis_client(stack)
    try:
        name = KeyLayout.account(layout_of(stack).head(account_id), account_id)
        credit, spent, reserved = client.hmget(name, "credit", "spent", "reserved")
        return int(credit or 0), int(spent or 0), int(reserved or 0)
    finally:
        client.close()


def redis_checkpoints(stack: Stack) -> dict[str, dict[bytes, bytes]]:
    """Every instance's checkpoints, in every slot group: instance id -> member -> checkpoint."""
    client = redis_client(stack)
    found: dict[str, dict[bytes, bytes]] = {}
    try:
        for head in layout_of(stack).heads:
            for runner in client.zrange(KeyLayout.runners(head), 0, -1):
                instance = runner.decode()
                found.setdefault(instance, {}).update(client.hgetall(KeyLayout.running(head, instance)))
        return found
    finally:
        client.close()


def checkpoint_costs(checkpoints: dict[bytes, bytes]) -> dict[str, int]:
    """request id -> the cost its checkpoint held."""
    return {m.decode().rsplit("|", 1)[0]: int(v.split(b"|")[3]) for m, v in checkpoints.items() if v != b"~"}


def instance_of(stack: Stack, gateway: Gateway) -> str:
    """The instance id a gateway checkpoints under (its pid is in it)."""
    found = poll(
        lambda: [i for i in redis_checkpoints(stack) if i.split(":")[-3] == str(gateway.process.pid)], 10
    )
    assert found, redis_checkpoints(stack).keys()
    return found[0]


def ledger_checks(stack: Stack) -> None:
    stack.stop()
    check = stack.bastion("ledger", "check")
    assert check.returncode == 0, check.stdout + check.stderr


def stack_fixture(name: str, upstream: MockUpstream, blackhole_port: int, workdir: Path) -> Iterator[Stack]:
    config = workdir / "bastion.yaml"
    config.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    stack = make_stack(name, config, workdir)
    stack.settings = dict(FAST)
    yield stack
    drop_stack(stack)


@pytest.fixture
def shared(upstream: MockUpstream, blackhole_port: int, tmp_path: Path) -> Iterator[Stack]:
    yield from stack_fixture("shared", upstream, blackhole_port, tmp_path)


@pytest.fixture
def embedded(upstream: MockUpstream, blackhole_port: int, tmp_path: Path) -> Iterator[Stack]:
    yield from stack_fixture("embedded", upstream, blackhole_port, tmp_path)


def assert_settled_from_checkpoints(
    records: dict[str, UsageRow], streams: list[Stream], held: dict[str, int]
) -> None:
    """Each stream: one record, marked recovered, billed at least its checkpoint read before the crash and
    at most what its client received."""
    for stream in streams:
        record = records[stream.name]
        assert record.recovered and record.status == 500, record
        assert record.cost_nano >= held[record.request_id] > 0, (record, held[record.request_id])
        assert 0 < record.completion_tokens <= completion_bound(stream), (record, stream.chars)
    lost = sorted(completion_bound(s) - records[s.name].completion_tokens for s in streams)
    # What the crash cost (README: "What can still be lost"), shown with `pytest -s`.
    streamed = [completion_bound(s) for s in streams]
    print(f"\ntokens streamed after the last checkpoint, per stream: {lost} (of {streamed})")


@pytest.mark.parametrize("restarted", [False, True], ids=["survivor-sweeps", "restarted-at-once"])
def test_kill_9_of_one_of_two_instances_settles_each_of_its_streams_once(
    shared: Stack, restarted: bool
) -> None:
    account_id, _, key = shared.account(CREDIT)
    survivor, victim = shared.start(), shared.start()
    kept, _ = start_streams(survivor, key, 10, "kept")
    lost, _ = start_streams(victim, key, LOST, "lost")
    victim_id = instance_of(shared, victim)
    assert poll(lambda: len(checkpoint_costs(redis_checkpoints(shared).get(victim_id, {}))) == LOST, 5)
    held = checkpoint_costs(redis_checkpoints(shared)[victim_id])
    victim.process.kill()
    victim.process.wait(5)
    killed = time.monotonic()
    if restarted:
        shared.start()

    def settled() -> dict[str, UsageRow] | None:
        named = by_name(shared.records(account_id))
        return named if all(s.name in named for s in lost) else None

    records = poll(settled, 10)
    assert records, "the dead instance's streams were not settled"
    # The heartbeat window (1.5 s), one sweep interval (0.3 s), one ledger write (0.2 s), and slack.
    assert time.monotonic() - killed < 4.0
    assert all(s.ended == "(cut)" for s in lost), [s.ended for s in lost]  # cut, never ended cleanly
    assert_settled_from_checkpoints(records, lost, held)
    assert not any(s.name in records for s in kept)  # the survivor's streams run on, untouched
    swept = [scrape(g.root) for g in shared.gateways if g is not victim]
    settled_count = sum(value(m, "bastion_orphaned_requests_settled_total") for m in swept)
    billed = sum(value(m, "bastion_orphaned_billed_usd_total") for m in swept)
    assert settled_count == LOST
    assert billed == pytest.approx(sum(records[s.name].cost_nano for s in lost) / NANO_PER_USD)
    assert value(scrape(survivor.root), "bastion_checkpoint_writes_total") >= 10
    for stream in kept:
        stream.stop.set()
    records = by_name(shared.wait_records(account_id, LOST + 10))
    assert all(records[s.name].status == 499 and not records[s.name].recovered for s in kept)
    total = sum(r.cost_nano for r in records.values())
    assert poll(lambda: redis_figures(shared, account_id)[2] == 0, 5), redis_figures(shared, account_id)
    assert redis_figures(shared, account_id)[1] == total  # charged once in Redis too, not only in the ledger
    assert shared.balance(account_id) == CREDIT - total
    assert not checkpoint_costs(redis_checkpoints(shared).get(victim_id, {}))  # none left to settle again
    ledger_checks(shared)


def test_a_paused_instance_swept_while_paused_ends_its_swept_streams_and_bills_nothing_twice(
    shared: Stack,
) -> None:
    """SIGSTOP for longer than the window: from outside a paused process is a dead one, so the survivor
    settles its streams. On SIGCONT it learns so at its next checkpoint, ends them (an error event), and
    its own settlement of each charges nothing: one record each, charged once."""
    account_id, _, key = shared.account(CREDIT)
    shared.start()  # the survivor, which sweeps
    paused = shared.start()
    streams, threads = start_streams(paused, key, 5, "paused")
    paused_id = instance_of(shared, paused)
    assert poll(lambda: len(checkpoint_costs(redis_checkpoints(shared).get(paused_id, {}))) == 5, 5)
    held = checkpoint_costs(redis_checkpoints(shared)[paused_id])
    paused.process.send_signal(signal.SIGSTOP)
    try:
        records = poll(lambda: (r := by_name(shared.records(account_id))) and len(r) == 5 and r, 10)
        assert records, "the paused instance's streams were not settled while it was paused"
        assert_settled_from_checkpoints(records, streams, held)
    finally:
        paused.process.send_signal(signal.SIGCONT)
    for thread in threads:
        thread.join(10)
    for stream in streams:
        assert '"code":"service_unavailable"' in stream.ended and "settled by another" in stream.ended, (
            stream.ended
        )
    records = by_name(shared.wait_records(account_id, 5))
    total = sum(r.cost_nano for r in records.values())
    assert all(r.recovered for r in records.values())
    assert poll(lambda: redis_figures(shared, account_id)[2] == 0, 5)
    assert redis_figures(shared, account_id)[1] == total
    assert shared.balance(account_id) == CREDIT - total
    log = paused.log_text()
    assert "orphan sweep" in log and "Traceback" not in log, log[-3000:]
    ledger_checks(shared)


def test_embedded_kill_9_then_restart_settles_the_streams_from_their_checkpoints(embedded: Stack) -> None:
    account_id, _, key = embedded.account(CREDIT)
    gateway = embedded.start()
    streams, _ = start_streams(gateway, key, 10, "embedded")
    path = embedded.database.split("///", 1)[1]

    def rows() -> dict[str, int]:
        with sqlite3.connect(path) as db:
            found = db.execute("SELECT request_id, record FROM running_usage").fetchall()
        return {r: int(orjson.loads(record)["cost_nano"]) for r, record in found}

    assert poll(lambda: len(rows()) == 10, 5)
    held = rows()
    gateway.process.kill()
    gateway.process.wait(5)
    assert not embedded.records(account_id)  # unbilled until a start settles them
    embedded.gateways.clear()
    embedded.start()  # settles before it serves
    records = by_name(embedded.records(account_id))
    assert len(records) == 10
    assert_settled_from_checkpoints(records, streams, held)
    assert rows() == {}
    assert embedded.balance(account_id) == CREDIT - sum(r.cost_nano for r in records.values())
    second = embedded.start()  # a second start finds nothing more to settle
    assert len(embedded.records(account_id)) == 10
    record = records[streams[0].name]
    own = httpx.get(
        f"{second.base_url}/requests/{streams[0].name}", headers={"Authorization": f"Bearer {key}"}
    )
    assert own.status_code == 200 and own.json()["recovered"] is True and own.json()["status"] == 500
    operator = person(embedded, "--operator", root=second.root)
    try:
        page = operator.page(f"/dashboard/usage/{record.request_id}")
        assert page.status_code == 200
        assert re.search(r"<dd data-settled><span class=\"badge warn\">after a crash</span>", page.text), (
            page.text
        )
        listing = operator.page("/dashboard/usage").text
        assert listing.count(">crash</span>") == 10
    finally:
        operator.close()
    ledger_checks(embedded)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    with redis_cluster(masters=3) as started:
        yield started


def test_on_a_redis_cluster_the_survivor_settles_a_dead_instances_streams_in_every_slot_group(
    cluster: RedisCluster, upstream: MockUpstream, blackhole_port: int, tmp_path: Path
) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    database = create_postgres_database()
    run(migrated(database))
    stack = Stack("shared", database, cluster.url, f"test-{secrets.token_hex(4)}:", config, tmp_path)
    stack.settings = dict(FAST)
    try:
        accounts = []
        while len({shard_of(a[0]) for a in accounts}) < 3:  # three slot groups
            account = stack.account(CREDIT)
            if shard_of(account[0]) not in {shard_of(a[0]) for a in accounts}:
                accounts.append(account)
        stack.start()
        victim = stack.start()
        lost = [
            s for n, (_, _, key) in enumerate(accounts) for s in start_streams(victim, key, 3, f"c{n}")[0]
        ]
        victim_id = instance_of(stack, victim)
        assert poll(lambda: len(checkpoint_costs(redis_checkpoints(stack).get(victim_id, {}))) == 9, 5)
        held = checkpoint_costs(redis_checkpoints(stack)[victim_id])
        victim.process.kill()
        victim.process.wait(5)
        for n, (account_id, _, _) in enumerate(accounts):
            records = by_name(stack.wait_records(account_id, 3))
            assert_settled_from_checkpoints(records, [s for s in lost if s.name.startswith(f"c{n}-")], held)
            total = sum(r.cost_nano for r in records.values())
            assert poll(lambda a=account_id: redis_figures(stack, a)[2] == 0, 5)
            assert redis_figures(stack, account_id)[1] == total
            assert stack.balance(account_id) == CREDIT - total
        ledger_checks(stack)
    finally:
        stack.stop()
        drop_postgres_database(database)
