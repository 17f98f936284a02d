"""A crash is settled by whoever is left: streams' running usage is checkpointed beside their
reservations, and when an instance dies (kill -9) another one (or its own next start) settles its
streams from their last checkpoints, each exactly once, and releases what they held.

Shared stack: two instances on one PostgreSQL and one Redis. Embedded stack: SQLite and the in-process
live state, settled by the next start. The windows are short here (checkpoints every 0.3 s, a heartbeat
window of 1.5 s); the defaults are 1 s and 10 s.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
import redis
import yaml
from conftest import Gateway, gateway_models_file
from dashboard_client import person
from stacks import Stack, drop_stack, make_stack, poll
from upstream import MockUpstream

from bastion.billing.estimate import completion_tokens_from_chars, text_chars
from bastion.db.store import UsageRow
from bastion.money import NANO_PER_USD

HELLO = [{"role": "user", "content": "hello"}]
FAST = {"BASTION_CHECKPOINT_SECONDS": "0.3", "BASTION_HEARTBEAT_WINDOW_SECONDS": "1.5"}
CREDIT = 10 * NANO_PER_USD


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


def redis_figures(stack: Stack, account_id: str) -> tuple[int, int, int]:
    """The account in Redis: (credit, spent, reserved)."""
    client = redis.Redis.from_url(stack.redis_url or "")
    try:
        credit, spent, reserved = client.hmget(
            f"{stack.redis_prefix}account:{account_id}", "credit", "spent", "reserved"
        )
        return int(credit or 0), int(spent or 0), int(reserved or 0)
    finally:
        client.close()


def redis_checkpoints(stack: Stack) -> dict[str, dict[bytes, bytes]]:
    """Every instance's checkpoints: instance id -> member -> checkpoint."""
    client = redis.Redis.from_url(stack.redis_url or "")
    try:
        runners = [r.decode() for r in client.zrange(f"{stack.redis_prefix}runners", 0, -1)]
        return {i: client.hgetall(f"{stack.redis_prefix}running:{i}") for i in runners}
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


@pytest.mark.parametrize("restarted", [False, True], ids=["survivor-sweeps", "restarted-at-once"])
def test_kill_9_of_one_of_two_instances_settles_each_of_its_streams_once(
    shared: Stack, restarted: bool
) -> None:
    account_id, _, key = shared.account(CREDIT)
    survivor, victim = shared.start(), shared.start()
    kept, _ = start_streams(survivor, key, 10, "kept")
    lost, _ = start_streams(victim, key, 10, "lost")
    victim_id = instance_of(shared, victim)
    assert poll(lambda: len(checkpoint_costs(redis_checkpoints(shared).get(victim_id, {}))) == 10, 5)
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
    assert all(s.ended in ("(cut)", s.lines[-1]) for s in lost)
    assert_settled_from_checkpoints(records, lost, held)
    assert not any(s.name in records for s in kept)  # the survivor's streams run on, untouched
    for stream in kept:
        stream.stop.set()
    records = by_name(shared.wait_records(account_id, 20))
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
    operator = person(embedded, "--operator", root=second.root)
    try:
        record = records[streams[0].name]
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
