"""The daily rollups the dashboard reads: written with the usage records, in the same transaction, equal
to them per UTC day, account, key and model, on both databases; a redelivered batch counts once; the
migration fills them from the records already written; `ledger check` catches a rollup that drifted."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from provision import migrated, run
from sqlalchemy import select, text

from bastion.db import migrate
from bastion.db.models import UsageDaily
from bastion.db.store import Store, UsageRow


def _row(
    n: int, account: str, key: str, model: str, when: datetime, cost: int, status: int = 200
) -> UsageRow:
    return UsageRow(
        request_id=f"req_{n}",
        account_id=account,
        key_id=key,
        model=model,
        endpoint="chat",
        prompt_tokens=10 + n,
        completion_tokens=n,
        cost_nano=cost,
        status=status,
        latency_ms=5,
        estimated=False,
        created_at=when,
    )


async def _rollups(store: Store) -> dict[tuple[str, str, str, str], tuple[int, ...]]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(select(UsageDaily))
        return {
            (r.account_id, str(r.day), r.key_id, r.model): (
                r.requests,
                r.errors,
                r.prompt_tokens,
                r.completion_tokens,
                r.cost_nano,
            )
            for r in rows
        }


def _expected(rows: list[UsageRow]) -> dict[tuple[str, str, str, str], tuple[int, ...]]:
    sums: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for r in rows:
        figures = sums[(r.account_id, str(r.created_at.astimezone(UTC).date()), r.key_id, r.model)]
        for i, value in enumerate(
            (1, int(r.status >= 400), r.prompt_tokens, r.completion_tokens, r.cost_nano)
        ):
            figures[i] += value
    return {k: tuple(v) for k, v in sums.items()}


async def _accounts(store: Store) -> tuple[str, str]:
    a = await store.create_account("a", 10**12, "tests")
    b = await store.create_account("b", 10**12, "tests")
    return a.id, b.id


def test_rollups_follow_the_records_and_count_a_redelivered_batch_once(database: str) -> None:
    async def go() -> None:
        await migrated(database)
        store = Store.from_url(database)
        try:
            a, b = await _accounts(store)
            midnight = datetime(2026, 12, 2, tzinfo=UTC)
            # Either side of a UTC midnight.
            rows = [
                _row(1, a, "key_1", "m1", midnight - timedelta(seconds=1), 1_000_000_007),
                _row(2, a, "key_1", "m1", midnight, 3),
                _row(3, a, "key_1", "m1", midnight + timedelta(hours=5), 5, status=502),
                _row(4, a, "key_2", "m1", midnight, 7),
                _row(5, a, "key_1", "m2", midnight, 11),
                _row(6, b, "key_3", "m1", midnight - timedelta(minutes=30), 13),
            ]
            assert await store.record_usage(rows[:4]) == 4
            assert await store.record_usage(rows[2:]) == 2  # rows 3 and 4 again: skipped
            assert await store.record_usage(rows) == 0
            assert await _rollups(store) == _expected(rows)
            assert (await _rollups(store))[(a, "2026-12-02", "key_1", "m1")] == (2, 1, 25, 5, 8)
            assert (await _rollups(store))[(b, "2026-12-01", "key_3", "m1")][4] == 13
            assert all(line.ok for line in await store.ledger())
        finally:
            await store.close()

    run(go())


def test_the_migration_fills_rollups_from_existing_records_and_ledger_check_sees_drift(database: str) -> None:
    async def go() -> list[UsageRow]:
        store = Store.from_url(database)
        try:
            await migrate.upgrade(store.engine, "0004")
            a, b = "acct_a", "acct_b"
            async with store.engine.begin() as connection:  # as 0004 wrote them (no audit log yet)
                for ident in (a, b):
                    await connection.execute(
                        text(
                            "INSERT INTO accounts (id, name, balance_nano, created_at) VALUES (:i, :n, 0, :t)"
                        ),
                        {"i": ident, "n": ident[-1], "t": datetime.now(UTC).replace(tzinfo=None)},
                    )
            day = datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC)
            rows = [
                _row(n, (a, b)[n % 2], f"key_{n % 3}", f"m{n % 2}", day + timedelta(minutes=n), n * 1000)
                for n in range(1, 9)
            ]
            async with store.engine.begin() as connection:
                for row in rows:  # as 0004's ledger writer wrote them: no rollups
                    await connection.execute(
                        text(
                            "INSERT INTO usage_records (request_id, account_id, key_id, model, endpoint,"
                            " prompt_tokens, completion_tokens, cost_nano, status, latency_ms, estimated,"
                            " created_at, quantity) VALUES (:r, :a, :k, :m, 'chat', :p, :c, :cost, :s, 1,"
                            " false, :t, 0)"
                        ),
                        {
                            "r": row.request_id,
                            "a": row.account_id,
                            "k": row.key_id,
                            "m": row.model,
                            "p": row.prompt_tokens,
                            "c": row.completion_tokens,
                            "cost": row.cost_nano,
                            "s": row.status,
                            "t": row.created_at
                            if "postgresql" in database
                            else row.created_at.replace(tzinfo=None),
                        },
                    )
                    await connection.execute(
                        text("UPDATE accounts SET balance_nano = balance_nano - :c WHERE id = :a"),
                        {"c": row.cost_nano, "a": row.account_id},
                    )
            await migrate.upgrade(store.engine)
            assert await _rollups(store) == _expected(rows)
            async with store.engine.begin() as connection:
                await connection.execute(
                    text("UPDATE usage_daily SET cost_nano = cost_nano + 1 WHERE account_id = :a"), {"a": a}
                )
            return rows
        finally:
            await store.close()

    run(go())
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")} | {
        "BASTION_DATABASE_URL": database
    }
    check = subprocess.run(
        [sys.executable, "-m", "bastion", "ledger", "check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert check.returncode == 1
    assert [line.split()[0] for line in check.stdout.splitlines() if "MISMATCH" in line] == ["a"]


def test_a_keys_spend_since_any_moment_is_exact_from_rollups_and_the_partial_day(database: str) -> None:
    async def go() -> None:
        await migrated(database)
        store = Store.from_url(database)
        try:
            a, _ = await _accounts(store)
            paris = ZoneInfo("Europe/Paris")
            start = datetime(2026, 12, 3, tzinfo=paris)  # 2026-12-02 23:00 UTC: inside a UTC day
            moments = [start - timedelta(seconds=1), start, start + timedelta(minutes=59, seconds=59)]
            moments += [start + timedelta(hours=1), start + timedelta(days=3)]
            rows = [_row(n, a, "key_p", "m", m.astimezone(UTC), 10**n) for n, m in enumerate(moments, 1)]
            rows.append(_row(9, a, "key_other", "m", start.astimezone(UTC), 7))
            await store.record_usage(rows)
            expected = sum(10**n for n in range(2, 6))
            assert await store.key_spend("key_p", start) == expected
            assert await store.key_spend("key_p", start.astimezone(UTC) + timedelta(hours=1)) == 10**4 + 10**5
            assert await store.key_spend("key_p", None) == expected + 10
            assert await store.key_spend("key_p", datetime(2026, 12, 5, tzinfo=UTC)) == 10**5
            assert await store.key_spend("key_p", datetime(2026, 12, 6, tzinfo=UTC)) == 0
        finally:
            await store.close()

    run(go())
