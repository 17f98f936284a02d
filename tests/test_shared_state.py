"""What must hold across processes and on the hot path: global limits and revocation, request cost in
queries and round trips, usage records surviving shutdowns and crashes."""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import yaml
from conftest import PROVIDER_KEY, gateway_models_file
from provision import REDIS_URL, account_with_key, create_postgres_database, drop_postgres_database, migrated
from sqlalchemy import event
from stacks import Stack, delete_redis_keys, drop_stack, make_stack, poll
from upstream import MockUpstream

from bastion.api.app import BastionApp
from bastion.billing.channel import RedisChannel
from bastion.config import Settings, load_catalog
from bastion.db.store import UsageRow
from bastion.money import NANO_PER_USD

HELLO = [{"role": "user", "content": "hi"}]


def _models_file(upstream: MockUpstream, blackhole_port: int, directory: Path) -> Path:
    path = directory / "bastion.yaml"
    path.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    return path


@pytest.fixture(scope="module")
def pair(
    upstream: MockUpstream, blackhole_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Two gateway processes sharing one PostgreSQL database and one Redis."""
    workdir = tmp_path_factory.mktemp("pair")
    stack = make_stack("shared", _models_file(upstream, blackhole_port, workdir), workdir)
    stack.start()
    stack.start()
    yield stack
    drop_stack(stack)


def _post(gateway_url: str, key: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        gateway_url + "/chat/completions",
        json={"model": "m-echo", "messages": HELLO, **extra},
        headers={"Authorization": f"Bearer {key}"},
    )


def test_the_rate_limit_is_global_across_processes(pair: Stack) -> None:
    _, _, key = pair.account(NANO_PER_USD, rpm=6)
    urls = [g.base_url for g in pair.gateways]
    statuses = [_post(urls[i % 2], key).status_code for i in range(12)]
    assert statuses.count(200) == 6, statuses
    assert statuses[:6] == [200] * 6 and set(statuses[6:]) == {429}


def test_revocation_reaches_every_process_within_5_seconds(pair: Stack) -> None:
    _, key_id, key = pair.account(NANO_PER_USD)
    for gateway in pair.gateways:  # both have the key warm in their caches
        assert _post(gateway.base_url, key).status_code == 200
    assert pair.bastion("keys", "revoke", key_id).returncode == 0
    started = time.monotonic()
    for gateway in pair.gateways:
        assert poll(lambda url=gateway.base_url: _post(url, key).status_code == 401, 5)
    assert time.monotonic() - started < 5


def test_credit_is_shared_across_processes(pair: Stack) -> None:
    # One account, two processes: spending through one is visible to the other at once.
    account_id, _, key = pair.account(4 * 25_000)  # four worst cases of max_tokens=10
    urls = [g.base_url for g in pair.gateways]
    statuses = [_post(urls[i % 2], key, max_tokens=10).status_code for i in range(10)]
    served = statuses.count(200)
    assert served == 5  # 100,000 nano covers five requests at their real 17,000 each, not more
    records = pair.wait_records(account_id, served)
    assert pair.balance(account_id) == 4 * 25_000 - sum(r.cost_nano for r in records) >= 0


def test_a_record_settled_by_a_crashed_instance_is_still_written(pair: Stack) -> None:
    # Settlement appends the record to the Redis stream atomically with the charge; an instance that
    # dies before writing it leaves it there, and any live instance writes it.
    account_id, key_id, _ = pair.account(NANO_PER_USD)
    row = UsageRow(
        request_id=f"crashed-{secrets.token_hex(4)}",
        account_id=account_id,
        key_id=key_id,
        model="m-echo",
        endpoint="chat",
        prompt_tokens=11,
        completion_tokens=3,
        cost_nano=17_000,
        status=200,
        latency_ms=5,
        estimated=False,
        created_at=__import__("datetime").datetime.now(__import__("datetime").UTC),
    )
    client = redis.Redis.from_url(REDIS_URL)
    client.xadd(f"{pair.redis_prefix}ledger", {"r": orjson.dumps(row)})
    (record,) = pair.wait_records(account_id, 1)
    assert record.request_id == row.request_id and record.cost_nano == 17_000
    assert pair.balance(account_id) == NANO_PER_USD - 17_000


@pytest.mark.parametrize("kind", ["embedded", "shared"])
def test_graceful_shutdown_writes_every_pending_record(
    upstream: MockUpstream, blackhole_port: int, tmp_path: Path, kind: str
) -> None:
    # A flush interval of an hour: only the shutdown flush can write these records.
    stack = make_stack(kind, _models_file(upstream, blackhole_port, tmp_path), tmp_path)
    gateway = stack.start({"BASTION_LEDGER_FLUSH_SECONDS": "3600"})
    try:
        account_id, _, key = stack.account(NANO_PER_USD)
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: _post(gateway.base_url, key).status_code, range(40)))
        assert statuses == [200] * 40
        # Embedded: nothing is written before the interval. With Redis, an idle writer wakes for the
        # first record, then waits its step (1/25 of the interval): the rest wait for the shutdown.
        written_before = len(stack.records(account_id))
        assert written_before == 0 if kind == "embedded" else written_before < 40
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises it once shut down
        assert "Application shutdown complete" in gateway.log_text()
        assert len(stack.records(account_id)) == 40
        assert stack.balance(account_id) == NANO_PER_USD - 40 * 17_000
    finally:
        drop_stack(stack)


async def test_a_warm_key_costs_no_sql_and_two_redis_round_trips(
    upstream: MockUpstream, blackhole_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_TEST_UPSTREAM_KEY", PROVIDER_KEY)
    prefix = f"hot-{secrets.token_hex(4)}:"
    try:
        await measure_warm_key(REDIS_URL, prefix, _models_file(upstream, blackhole_port, tmp_path))
    finally:
        delete_redis_keys(REDIS_URL, prefix)


async def measure_warm_key(redis_url: str, prefix: str, config: Path) -> None:
    """A Bastion in this process on a fresh PostgreSQL database and `redis_url`: a warm key's requests
    cost no SQL and exactly one script before forwarding and one after."""
    database = create_postgres_database()
    try:
        await migrated(database)
        _, _, key = await account_with_key(database, "hot", NANO_PER_USD)
        settings = Settings(config=config, database_url=database, redis_url=redis_url, redis_prefix=prefix)
        app = BastionApp(settings, load_catalog(config))
        await app.startup()
        try:
            await _measure(app, key)
        finally:
            await app.shutdown()
    finally:
        drop_postgres_database(database)


async def _measure(app: BastionApp, key: str) -> None:
    # Background work (ledger writer, database sync) is stopped: whatever is counted, a request did.
    await app.services.sync.close()
    ledger_task = app.services.ledger._task
    assert ledger_task is not None
    ledger_task.cancel()
    statements: list[str] = []
    event.listen(
        app.services.store.engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2])
    )
    # Every command either Redis client sends: the hot path's channel (each server's connection, on a
    # cluster each node's), and redis-py (none expected).
    live = app.services.live
    commands: list[str] = []
    call, submit = RedisChannel.call, RedisChannel.submit
    execute = live.redis.execute_command  # type: ignore[attr-defined]

    async def counted_call(self: RedisChannel, command: tuple[Any, ...], *args: Any, **kwargs: Any) -> Any:
        commands.append(str(command[0]))
        return await call(self, command, *args, **kwargs)

    def counted_submit(self: RedisChannel, command: tuple[Any, ...]) -> Any:  # sent now, awaited later
        commands.append(str(command[0]))
        return submit(self, command)

    async def counted_execute(*args: Any, **kwargs: Any) -> Any:
        commands.append(f"redis-py {args[0]}")
        return await execute(*args, **kwargs)

    RedisChannel.call, RedisChannel.submit = counted_call, counted_submit  # type: ignore[method-assign]
    live.redis.execute_command = counted_execute  # type: ignore[attr-defined]
    try:
        await _requests(app, key, statements, commands)
    finally:
        RedisChannel.call, RedisChannel.submit = call, submit  # type: ignore[method-assign]


async def _requests(app: BastionApp, key: str, statements: list[str], commands: list[str]) -> None:
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://bastion/v1", headers=headers) as http:
        body = {"model": "m-echo", "messages": HELLO}
        assert (
            await http.post("/chat/completions", json=body)
        ).status_code == 200  # cold: key and account load
        assert statements, "the cold request should have read the key from the database"
        statements.clear()
        commands.clear()
        for i in range(10):
            response = await http.post("/chat/completions", json={**body, "stream": i % 2 == 1})
            assert response.status_code == 200
        assert statements == []
        assert commands == ["EVALSHA"] * 20  # admit + settle, per request
        commands.clear()
        for _ in range(3):  # what a key asks about itself: one script, no SQL either
            assert (await http.get("/key")).status_code == 200
    assert statements == []
    assert commands == ["EVALSHA"] * 3


async def test_the_hot_redis_connection_selects_the_database_of_its_url() -> None:
    """`redis://host:port/N` with N > 0: the pipelined channel's handshake (SELECT) before any command."""
    key = f"test-select-{secrets.token_hex(4)}"
    channel = RedisChannel(REDIS_URL.rsplit("/", 1)[0] + "/3")
    other = redis.Redis.from_url(REDIS_URL.rsplit("/", 1)[0] + "/3")
    try:
        assert await channel.call(("SET", key, "in-db-3")) == b"OK"
        assert other.get(key) == b"in-db-3"
        assert redis.Redis.from_url(REDIS_URL).get(key) is None  # not in database 0
    finally:
        other.delete(key)
        other.close()
        await channel.close()
