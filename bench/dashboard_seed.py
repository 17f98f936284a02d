"""The dashboard benchmark's data: accounts, keys and usage records shaped like a busy gateway's ledger,
written fast, then rolled up, charged and analysed as the ledger writer and the database leave them.

The shape: one large account with 80 % of the records and 20 keys (one revoked 60 days ago, its traffic
moved to another), five smaller ones (40 keys in all, some with budgets), 8 models (one retired 75 days
ago, its traffic moved to its successor: the request log's hardest filter), 90 days of history whose
traffic grows threefold to today, 3.5 % failed requests (free), costs in nano-USD from per-token prices, a
quarter of the requests with the client's own request id. Records are made in time order, as the
ledger writes them (ids follow time, within a couple of seconds of jitter), from a fixed seed and `now`.

Writing: COPY on PostgreSQL (asyncpg; generation here overlaps ingestion on the server), with the table's
secondary indexes and constraints rebuilt after it (so they come out freshly packed, where a live ledger's
would have grown by insertions); one executemany per 100,000 rows on SQLite. Then `usage_daily` from
the records with migration 0005's INSERT ... SELECT ... GROUP BY (the ledger writer keeps exactly those
sums up to date), a top-up per account, `balance = credits - usage`, and ANALYZE (VACUUM ANALYZE on
PostgreSQL, as autovacuum would).
`Store.ledger()` (what `bastion ledger check` runs) then checks balances and rollups against the records.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import text, update
from sqlalchemy.engine import make_url

from bastion.db import migrate
from bastion.db.models import ApiKey
from bastion.db.store import Store

HISTORY = timedelta(days=90)
JITTER_S = 2.0  # records reach the ledger slightly out of order
ERROR_RATE = 0.035
SEED = 20261203
SQLITE_BATCH = 100_000
Row = tuple[Any, ...]
COLUMNS = (
    "request_id",
    "account_id",
    "key_id",
    "model",
    "endpoint",
    "prompt_tokens",
    "completion_tokens",
    "cost_nano",
    "status",
    "latency_ms",
    "estimated",
    "created_at",
    "quantity",
    "unit",
    "client_request_id",
)


@dataclass(frozen=True)
class AccountShape:
    name: str
    share: float  # of all records
    keys: int
    revoked_key: int | None = None  # this key was revoked REVOKED_KEY_DAYS ago; its traffic moved on


@dataclass(frozen=True)
class ModelShape:
    id: str
    kind: str  # tokens | embeddings | audio
    weight: float
    input_nano: int = 0  # per token (USD per 1M tokens x 1,000)
    output_nano: int = 0
    audio_ms_nano: int = 0  # per millisecond of audio
    max_output: int = 1500


ACCOUNTS = (
    AccountShape("bench-big", 0.80, 20, revoked_key=2),
    AccountShape("bench-acme", 0.08, 6),
    AccountShape("bench-globex", 0.05, 5),
    AccountShape("bench-initech", 0.04, 4),
    AccountShape("bench-umbrella", 0.02, 3),
    AccountShape("bench-hooli", 0.01, 2),
)
MODELS = (
    ModelShape("gpt-oss-120b", "tokens", 30, 80, 400, max_output=2000),
    ModelShape("gpt-oss-20b", "tokens", 18, 40, 150),
    ModelShape("llama-3.3-70b-instruct", "tokens", 14, 600, 600),
    ModelShape("qwen3-32b", "tokens", 10, 100, 300),
    ModelShape("deepseek-r1-distill-llama-70b", "tokens", 5, 500, 800, max_output=6000),
    ModelShape("bge-m3", "embeddings", 19, 10),
    ModelShape("whisper-large-v3", "audio", 4, audio_ms_nano=100),
)
# Before RETIRED_AFTER_DAYS ago, what is now the successor's traffic went to the retired model: a model
# in the log's filter whose newest record is 75 days old (the request log's hardest filter).
RETIRED = ModelShape("llama-3.1-70b-instruct", "tokens", 0, 600, 600)
SUCCESSOR = "llama-3.3-70b-instruct"
RETIRED_AFTER_DAYS = 75.0
REVOKED_KEY_DAYS = 60.0
# Budgets of some keys (every account's key of this rank): (USD, period). The keys page shows their spend
# in the current period.
BUDGETS = {0: (5_000, "monthly"), 1: (20_000, "total"), 3: (100, "daily")}
ERRORS = ((502, 55), (400, 20), (429, 15), (503, 7), (504, 3))
ENDPOINTS = (("chat", 88), ("responses", 8), ("completions", 4))


def _cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


def _pick(cumulative: list[float], rng: random.Random) -> int:
    return bisect.bisect(cumulative, rng.random() * cumulative[-1])


_MODEL_CUM = _cumulative([m.weight for m in MODELS])
_ERROR_CUM = _cumulative([w for _, w in ERRORS])
_ENDPOINT_CUM = _cumulative([w for _, w in ENDPOINTS])


@dataclass
class SeededAccount:
    id: str
    name: str
    share: float
    key_ids: list[str]
    key_names: list[str]
    revoked_key: int | None = None
    key_cum: list[float] = field(default_factory=list)  # a few keys carry most of the traffic

    def __post_init__(self) -> None:
        self.key_cum = _cumulative([1 / (rank + 1) for rank in range(len(self.key_ids))])

    @property
    def revoked_key_id(self) -> str | None:
        return self.key_ids[self.revoked_key] if self.revoked_key is not None else None


@dataclass
class Seeded:
    """What a seeding made, and how long each step took."""

    backend: str
    url: str
    records: int
    accounts: list[SeededAccount]
    first: datetime
    now: datetime
    seconds: dict[str, float] = field(default_factory=dict)
    rollup_rows: int = 0

    @property
    def big(self) -> SeededAccount:
        return self.accounts[0]

    def as_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "accounts": len(self.accounts),
            "keys": sum(len(a.key_ids) for a in self.accounts),
            "big_account_records_share": self.big.share,
            "models": len(MODELS) + 1,
            "rollup_rows": self.rollup_rows,
            "history_days": HISTORY.days,
            "seconds": self.seconds,
        }


class Records:
    """The usage records, in time order, the same for a given seed, count and `now`."""

    def __init__(
        self, accounts: Sequence[SeededAccount], count: int, now: datetime, seed: int = SEED
    ) -> None:
        self.accounts = list(accounts)
        self.account_cum = _cumulative([a.share for a in accounts])
        self.count = count
        self.now = now
        self.seed = seed

    def rows(self, stamp: Callable[[datetime], Any]) -> Iterator[Row]:
        rng = random.Random(self.seed)
        random_, pick, sqrt, count = rng.random, _pick, math.sqrt, self.count
        accounts, account_cum = self.accounts, self.account_cum
        span = HISTORY.total_seconds()
        start = self.now.timestamp() - span
        retired_until = span - RETIRED_AFTER_DAYS * 86400
        revoked_at = span - REVOKED_KEY_DAYS * 86400
        for i in range(count):
            # Records per second grow linearly from 0.5x to 1.5x the average over the history:
            # position p = (s + s^2) / 2 at time fraction s, inverted.
            offset = (sqrt(1 + 8 * (i + 0.5) / count) - 1) / 2 * span + random_() * JITTER_S
            offset = min(offset, span - 0.001)
            account = accounts[pick(account_cum, rng)]
            model = MODELS[pick(_MODEL_CUM, rng)]
            if offset < retired_until and model.id == SUCCESSOR:
                model = RETIRED
            key = pick(account.key_cum, rng)
            if key == account.revoked_key and offset >= revoked_at:
                key = 0
            created = stamp(datetime.fromtimestamp(start + offset, UTC))
            yield _record(rng, model, account.id, account.key_ids[key], created)


def _record(rng: random.Random, model: ModelShape, account_id: str, key_id: str, created: Any) -> Row:
    random_ = rng.random
    prompt = completion = quantity = cost = 0
    unit: str | None = None
    if model.kind == "audio":
        endpoint, unit = "transcription", "audio_ms"
        quantity = 3_000 + int(random_() * 597_000)
        latency = 200 + quantity // 40
        cost = quantity * model.audio_ms_nano
    elif model.kind == "embeddings":
        endpoint = "embeddings"
        prompt = int(math.exp(2.0 + random_() * 6.3))
        latency = 15 + int(random_() * 235)
        cost = prompt * model.input_nano
    else:
        endpoint = ENDPOINTS[_pick(_ENDPOINT_CUM, rng)][0]
        prompt = int(math.exp(3.0 + random_() * 6.0))
        completion = int(math.exp(1.6 + random_() * (math.log(model.max_output) - 1.6)))
        latency = 150 + completion * (8 + int(random_() * 18))
        cost = prompt * model.input_nano + completion * model.output_nano
    status = 200
    if random_() < ERROR_RATE:
        status = ERRORS[_pick(_ERROR_CUM, rng)][0]
        prompt = completion = quantity = cost = 0  # a request the upstream failed costs nothing
        latency = 3 + int(random_() * 30_000)
    estimated = status == 200 and model.kind == "tokens" and random_() < 0.01
    client_id = "job-" + rng.randbytes(6).hex() if random_() < 0.25 else None
    return (
        "req_" + rng.randbytes(12).hex(),
        account_id,
        key_id,
        model.id,
        endpoint,
        prompt,
        completion,
        cost,
        status,
        latency,
        estimated,
        created,
        quantity,
        unit,
        client_id,
    )


def _as_is(moment: datetime) -> datetime:
    return moment


def _sqlite_text(moment: datetime) -> str:
    """How SQLAlchemy stores a DateTime in SQLite (naive UTC, always six digits of microseconds): the
    log's range conditions compare these strings."""
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")


# ------------------------------------------------------------------------------------------- accounts


async def create_population(store: Store, now: datetime) -> list[SeededAccount]:
    """The accounts and their keys, through the store (as the CLI creates them)."""
    made = []
    for shape in ACCOUNTS:
        account = await store.create_account(shape.name, 0, actor="bench")
        ids, names = [], []
        for n in range(shape.keys):
            name = f"{shape.name.removeprefix('bench-')}-{('prod', 'staging', 'batch', 'dev')[n % 4]}-{n:02d}"
            budget, period = BUDGETS.get(n, (None, None))
            view, _ = await store.create_key(
                account.id,
                name=name,
                budget_nano=budget * 10**9 if budget else None,
                budget_period=period,
                actor="bench",
            )
            ids.append(view.id)
            names.append(name)
        if shape.revoked_key is not None:
            await _revoke(store, ids[shape.revoked_key], now - timedelta(days=REVOKED_KEY_DAYS))
        made.append(SeededAccount(account.id, account.name, shape.share, ids, names, shape.revoked_key))
    return made


async def _revoke(store: Store, key_id: str, when: datetime) -> None:
    await store.revoke_key(key_id, "bench")
    async with store.engine.begin() as connection:
        await connection.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=when))


# -------------------------------------------------------------------------------------------- records


async def write_postgres(url: str, records: Records) -> None:
    """COPY, in one transaction with the table's secondary indexes and constraints dropped before and
    rebuilt after (PostgreSQL's advice for a bulk load: one sorted build per index instead of a million
    random insertions into the request_id index)."""
    connection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL maintenance_work_mem = '512MB'")
            indexes = await connection.fetch(_SECONDARY_INDEXES)
            constraints = await connection.fetch(_CONSTRAINTS)
            for row in constraints:
                await connection.execute(f'ALTER TABLE usage_records DROP CONSTRAINT "{row["name"]}"')
            for row in indexes:
                await connection.execute(f'DROP INDEX "{row["name"]}"')
            await connection.copy_records_to_table(
                "usage_records", records=records.rows(_as_is), columns=list(COLUMNS)
            )
            for row in indexes:
                await connection.execute(row["definition"])
            for row in constraints:
                await connection.execute(
                    f'ALTER TABLE usage_records ADD CONSTRAINT "{row["name"]}" {row["definition"]}'
                )
    finally:
        await connection.close()


_CONSTRAINTS = """
SELECT conname AS name, pg_get_constraintdef(oid) AS definition FROM pg_constraint
WHERE conrelid = 'usage_records'::regclass AND contype <> 'p'
"""
_SECONDARY_INDEXES = """
SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS definition FROM pg_index
WHERE indrelid = 'usage_records'::regclass AND NOT indisprimary
  AND indexrelid NOT IN (SELECT conindid FROM pg_constraint WHERE conrelid = 'usage_records'::regclass)
"""


def write_sqlite(path: str, records: Records) -> None:
    connection = sqlite3.connect(path)
    try:
        # This connection only: the file's durability settings are left as Bastion sets them.
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")  # 256 MiB: the unique request_id index is random
        rows = records.rows(_sqlite_text)
        while batch := list(itertools.islice(rows, SQLITE_BATCH)):
            with connection:
                connection.executemany(_SQLITE_INSERT, batch)
    finally:
        connection.close()


_SQLITE_INSERT = f"INSERT INTO usage_records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def sqlite_path(url: str) -> str:
    database = make_url(url).database
    assert database, url
    return database


# ------------------------------------------------------------------------------- rollups and balances


def rollup_sql(dialect: str) -> str:
    """Migration 0005's backfill of `usage_daily` (bastion/db/migrations/versions/0005_dashboard.py)."""
    day = "(created_at AT TIME ZONE 'UTC')::date" if dialect == "postgresql" else "date(created_at)"
    return (
        "INSERT INTO usage_daily (account_id, day, key_id, model, requests, errors, prompt_tokens,"
        " completion_tokens, cost_nano)"
        f" SELECT account_id, {day}, key_id, model, count(*),"
        " sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), sum(prompt_tokens), sum(completion_tokens),"
        f" sum(cost_nano) FROM usage_records GROUP BY account_id, {day}, key_id, model"
    )


BALANCES_SQL = """
UPDATE accounts SET balance_nano =
    (SELECT coalesce(sum(amount_nano), 0) FROM credit_transactions c WHERE c.account_id = accounts.id)
  - (SELECT coalesce(sum(cost_nano), 0) FROM usage_daily d WHERE d.account_id = accounts.id)
"""


async def roll_up(store: Store) -> int:
    dialect = store.engine.dialect.name
    async with store.engine.begin() as connection:
        if dialect == "postgresql":
            # The default 4 MB spills the million-row aggregation to disk: 5 s instead of 1.
            await connection.execute(text("SET LOCAL work_mem = '256MB'"))
        await connection.execute(text(rollup_sql(dialect)))
        return int((await connection.execute(text("SELECT count(*) FROM usage_daily"))).scalar_one())


async def credit_and_charge(store: Store, accounts: Sequence[SeededAccount]) -> None:
    """A top-up per account of its usage plus a quarter (so every balance stays positive), then
    balance = credits - usage, which is what the ledger writer's charges leave."""
    async with store.engine.connect() as connection:
        usage = dict(
            (
                await connection.execute(
                    text("SELECT account_id, sum(cost_nano) FROM usage_daily GROUP BY account_id")
                )
            ).all()
        )
    for account in accounts:
        spent = int(usage.get(account.id) or 0)
        await store.add_credits(account.id, spent + spent // 4 + 50 * 10**9, "bench top-up", "bench")
    async with store.engine.begin() as connection:
        await connection.execute(text(BALANCES_SQL))


async def analyze(url: str, backend: str) -> None:
    if backend == "postgresql":
        connection = await asyncpg.connect(_asyncpg_dsn(url))
        try:
            await connection.execute("VACUUM ANALYZE")
        finally:
            await connection.close()
        return
    await asyncio.to_thread(_analyze_sqlite, sqlite_path(url))


def _analyze_sqlite(path: str) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.execute("ANALYZE")
        connection.commit()
    finally:
        connection.close()


async def check_ledger(store: Store) -> None:
    """What `bastion ledger check` verifies: balance = credits - usage and rollups = records, per account."""
    wrong = [line.name for line in await store.ledger() if not line.ok]
    if wrong:
        raise RuntimeError(f"seeded ledger does not balance for {', '.join(wrong)}")


# ------------------------------------------------------------------------------------------ the whole


async def seed(url: str, backend: str, count: int, now: datetime | None = None) -> Seeded:
    """Migrate a fresh database and fill it (see the module's docstring)."""
    now = now or datetime.now(UTC)
    store = Store.from_url(url)
    try:
        await migrate.upgrade(store.engine)
        accounts = await create_population(store, now)
        seeded = Seeded(backend, url, count, accounts, now - HISTORY, now)
        records = Records(accounts, count, now)
        started = time.perf_counter()
        if backend == "postgresql":
            await write_postgres(url, records)
        else:
            await asyncio.to_thread(write_sqlite, sqlite_path(url), records)
        seeded.seconds["records"] = _since(started)
        seeded.rollup_rows = await roll_up(store)
        seeded.seconds["rollups"] = _since(started) - seeded.seconds["records"]
        await credit_and_charge(store, accounts)
        mark = time.perf_counter()
        await analyze(url, backend)
        seeded.seconds["analyze"] = _since(mark)
        seeded.seconds["total"] = _since(started)
        mark = time.perf_counter()
        await check_ledger(store)
        seeded.seconds["ledger_check"] = _since(mark)
        return seeded
    finally:
        await store.close()


def _since(started: float) -> float:
    return time.perf_counter() - started
