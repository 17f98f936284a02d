"""The dashboard benchmark's data: accounts, keys and usage records shaped like a busy gateway's ledger,
written fast, then rolled up, charged and analysed as the ledger writer and the database leave them.

The shape: one large account with 80 % of the records and 20 keys, five smaller ones (40 keys in all),
8 models (one retired 75 days ago, its traffic moved to its successor), 90 days of history whose traffic
grows threefold to today, 3.5 % failed requests (free), costs in nano-USD from per-token prices, a
quarter of the requests with the client's own request id. Records are made in time order, as the
ledger writes them (ids follow time, within a couple of seconds of jitter), from a fixed seed: both
databases get the same records.

Writing: COPY on PostgreSQL (asyncpg, generation on this side overlapping ingestion on the server's),
one executemany per 100,000 rows on SQLite. Then `usage_daily` from the records with migration 0005's
INSERT ... SELECT ... GROUP BY (the ledger writer keeps exactly those sums up to date), a top-up per
account, `balance = credits - usage`, and ANALYZE (VACUUM ANALYZE on PostgreSQL, as autovacuum would).
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
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bastion.db import migrate
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
    AccountShape("bench-big", 0.80, 20),
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
    key_cum: list[float] = field(default_factory=list)  # a few keys carry most of the traffic

    def __post_init__(self) -> None:
        self.key_cum = _cumulative([1 / (rank + 1) for rank in range(len(self.key_ids))])


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

    def __init__(self, accounts: Sequence[SeededAccount], count: int, now: datetime, seed: int = SEED) -> None:
        self.accounts = list(accounts)
        self.account_cum = _cumulative([a.share for a in accounts])
        self.count = count
        self.now = now.astimezone(UTC).replace(tzinfo=None)  # naive UTC, converted per database
        self.seed = seed

    def rows(self, stamp: Callable[[datetime], Any]) -> Iterator[Row]:
        rng = random.Random(self.seed)
        span = HISTORY.total_seconds()
        first = self.now - HISTORY
        for i in range(self.count):
            # Records per second grow linearly from 0.5x to 1.5x the average over the history:
            # position p = (s + s^2) / 2 at time fraction s, inverted.
            p = (i + 0.5) / self.count
            offset = min((math.sqrt(1 + 8 * p) - 1) / 2 * span + rng.random() * JITTER_S, span - 0.001)
            account = self.accounts[_pick(self.account_cum, rng)]
            key = account.key_ids[_pick(account.key_cum, rng)]
            model = MODELS[_pick(_MODEL_CUM, rng)]
            if model.id == SUCCESSOR and span - offset > RETIRED_AFTER_DAYS * 86400:
                model = RETIRED
            yield _record(rng, model, account.id, key, stamp(first + timedelta(seconds=offset)))


def _record(rng: random.Random, model: ModelShape, account_id: str, key_id: str, created: Any) -> Row:
    failed = rng.random() < ERROR_RATE
    prompt = completion = quantity = cost = 0
    unit: str | None = None
    if model.kind == "audio":
        endpoint, unit = "transcription", "audio_ms"
        quantity = rng.randint(3_000, 600_000)
        latency = 200 + quantity // 40
        cost = quantity * model.audio_ms_nano
    elif model.kind == "embeddings":
        endpoint = "embeddings"
        prompt = int(math.exp(rng.uniform(2.0, 8.3)))
        latency = rng.randint(15, 250)
        cost = prompt * model.input_nano
    else:
        endpoint = ENDPOINTS[_pick(_ENDPOINT_CUM, rng)][0]
        prompt = int(math.exp(rng.uniform(3.0, 9.0)))
        completion = int(math.exp(rng.uniform(1.6, math.log(model.max_output))))
        latency = 150 + completion * rng.randint(8, 25)
        cost = prompt * model.input_nano + completion * model.output_nano
    status = 200
    if failed:
        status = ERRORS[_pick(_ERROR_CUM, rng)][0]
        prompt = completion = quantity = cost = 0  # a request the upstream failed costs nothing
        latency = rng.randint(3, 30_000)
    estimated = not failed and model.kind == "tokens" and rng.random() < 0.01
    client_id = f"job-{rng.getrandbits(48):012x}" if rng.random() < 0.25 else None
    request_id = f"req_{rng.getrandbits(96):024x}"
    return (
        request_id,
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


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


def _sqlite_text(moment: datetime) -> str:
    """How SQLAlchemy stores a DateTime in SQLite (always six digits of microseconds): the log's range
    conditions compare these strings."""
    return moment.isoformat(" ", "microseconds")


# ------------------------------------------------------------------------------------------- accounts


async def create_population(store: Store) -> list[SeededAccount]:
    """The accounts and their keys, through the store (as the CLI creates them)."""
    made = []
    for shape in ACCOUNTS:
        account = await store.create_account(shape.name, 0, actor="bench")
        ids, names = [], []
        for n in range(shape.keys):
            name = f"{shape.name.removeprefix('bench-')}-{('prod', 'staging', 'batch', 'dev')[n % 4]}-{n:02d}"
            view, _ = await store.create_key(account.id, name=name, actor="bench")
            ids.append(view.id)
            names.append(name)
        made.append(SeededAccount(account.id, account.name, shape.share, ids, names))
    return made


# -------------------------------------------------------------------------------------------- records


async def write_postgres(url: str, records: Records) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await connection.copy_records_to_table(
            "usage_records", records=records.rows(_aware), columns=list(COLUMNS)
        )
    finally:
        await connection.close()


def write_sqlite(path: str, records: Records) -> None:
    connection = sqlite3.connect(path)
    try:
        # This connection only: the file's durability settings are left as Bastion sets them.
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")  # 256 MiB: the unique request_id index is random
        statement = f"INSERT INTO usage_records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        rows = records.rows(_sqlite_text)
        while batch := list(itertools.islice(rows, SQLITE_BATCH)):
            with connection:
                connection.executemany(statement, batch)
    finally:
        connection.close()


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
    async with store.engine.begin() as connection:
        await connection.execute(text(rollup_sql(store.engine.dialect.name)))
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
        accounts = await create_population(store)
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
