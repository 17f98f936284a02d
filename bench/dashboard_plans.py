"""Query plans of the dashboard's reads, from the statements `bastion.db.reports.Reports` really sends.

Each case calls a `Reports` (or `Store`) method in this process on the seeded database; the statements
its engine sends are captured at the cursor, with their parameters, and explained with them:
`EXPLAIN (ANALYZE, BUFFERS)` on PostgreSQL, `EXPLAIN QUERY PLAN` on SQLite. Each statement is also run
alone a few times (the database's share of a page's time). A plan that reads `usage_records` without an
index (PostgreSQL's Seq Scan, SQLite's SCAN without USING) is flagged.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.db.store import Store

RUNS = 5
_PG_FULL_SCAN = re.compile(r"Seq Scan on usage_records\b")
_SQLITE_FULL_SCAN = re.compile(r"\bSCAN usage_records\b(?! USING)")
_PG_NODE = re.compile(r" on usage_records\b.*\(actual time=\S+ rows=(\d+) loops=(\d+)\)")
_PG_REMOVED = re.compile(r"Rows Removed by Filter: (\d+)")
_PG_EXECUTION = re.compile(r"Execution Time: ([\d.]+) ms")


@dataclass(frozen=True)
class Case:
    """A read to explain: `call` runs it; `labels` name its statements on the usage tables, in order."""

    name: str
    call: Callable[[], Awaitable[Any]]
    labels: Sequence[str] = ()
    dashboard: bool = True  # False: a read of the request path, shown for comparison


@dataclass
class QueryPlan:
    name: str
    dashboard: bool
    statement: str
    plan: list[str]
    query_ms: float  # median of RUNS runs of the statement alone, from this process
    full_scan: bool  # usage_records read without an index
    rows_read: int | None = None  # PostgreSQL: rows the usage_records scans returned or filtered out
    execution_ms: float | None = None  # PostgreSQL's own Execution Time under EXPLAIN ANALYZE
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def captured(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """The (statement, parameters) the engine sends to its cursors while the block runs."""
    seen: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


async def explain_cases(store: Store, cases: Sequence[Case]) -> list[QueryPlan]:
    plans: list[QueryPlan] = []
    for case in cases:
        with captured(store.engine) as seen:
            await case.call()
        usage = [(s, p) for s, p in seen if "usage_records" in s or "usage_daily" in s]
        for index, (statement, parameters) in enumerate(usage):
            label = case.labels[index] if index < len(case.labels) else f"statement {index + 1}"
            name = f"{case.name}: {label}" if len(usage) > 1 or case.labels else case.name
            plans.append(await explain(store.engine, name, case.dashboard, statement, parameters))
    return plans


async def explain(
    engine: AsyncEngine, name: str, dashboard: bool, statement: str, parameters: Any
) -> QueryPlan:
    postgres = engine.dialect.name == "postgresql"
    async with engine.connect() as connection:
        if postgres:
            result = await connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
            lines = [str(row[0]) for row in result]
        else:
            result = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            lines = _sqlite_tree([tuple(row) for row in result])
        timings = []
        for _ in range(RUNS):
            started = time.perf_counter()
            (await connection.exec_driver_sql(statement, parameters)).all()
            timings.append((time.perf_counter() - started) * 1000)
    text = "\n".join(lines)
    plan = QueryPlan(
        name,
        dashboard,
        " ".join(statement.split()),
        lines,
        statistics.median(timings),
        bool((_PG_FULL_SCAN if postgres else _SQLITE_FULL_SCAN).search(text)),
    )
    if postgres:
        plan.rows_read = _pg_rows_read(lines)
        found = _PG_EXECUTION.search(text)
        plan.execution_ms = float(found.group(1)) if found else None
    return plan


def _sqlite_tree(rows: list[tuple[Any, ...]]) -> list[str]:
    """EXPLAIN QUERY PLAN's (id, parent, notused, detail) rows, indented as the sqlite3 shell shows them."""
    depth: dict[int, int] = {0: -1}
    lines = []
    for ident, parent, _, detail in rows:
        depth[ident] = depth.get(parent, -1) + 1
        lines.append("  " * depth[ident] + str(detail))
    return lines


def _pg_rows_read(lines: list[str]) -> int | None:
    """Rows the scans of usage_records produced plus those their filters removed (per loop, times loops)."""
    total, loops, found = 0, 0, False
    for line in lines:
        node = _PG_NODE.search(line)
        if node:
            rows, loops = int(node.group(1)), int(node.group(2))
            total += rows * loops
            found = True
            continue
        if "->" in line:
            loops = 0  # another node: its filter is not a usage_records scan's
        removed = _PG_REMOVED.search(line)
        if removed and loops:
            total += int(removed.group(1)) * loops
    return total if found else None
