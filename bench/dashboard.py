"""`python -m bench.dashboard [--records N] [--backend postgresql|sqlite|both] [--quick] [--out DIR]`:
the dashboard's speed over a large ledger, against the dashboard issue's targets: with a million usage
records the overview renders in under 200 ms and a page of the request log in under 100 ms (p50 and p95,
client side).

For each database: a fresh one (PostgreSQL: a new database on 127.0.0.1:5432, dropped at the end; SQLite:
a temporary file), migrated and seeded (bench/dashboard_seed.py), a real `bastion serve` on a free port
(PostgreSQL with Redis under a fresh key prefix, deleted at the end; SQLite with in-process limits), an
owner of the large account and an operator signed in through the sign-in form, then each page timed on
the client's clock after warm-up requests, every answer checked against the database (status 200, the
right rows, the right figures), and the plans of the queries behind the pages (bench/dashboard_plans.py).
Results: a table on stdout, JSON and markdown in --out (default bench/results/). It is also the
`dashboard` step of `python -m bench` (with fewer records in --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from bastion.dashboard.usage import PAGE_SIZE
from bastion.db.request_log import Cursor, UsageFilter
from bastion.db.store import Store
from bench import dashboard_report
from bench import gateway as gw
from bench.dashboard_expected import (
    FILTER_MODEL,
    FOLLOWED,
    Anchors,
    Expected,
    People,
    expectations,
    invite_people,
    log_views,
)
from bench.dashboard_pages import Page, Timing, card_is, contains, every, follow, measure, rows_are, sign_in
from bench.dashboard_plans import Case, QueryPlan, explain_cases
from bench.dashboard_seed import RETIRED, Seeded, seed
from bench.procs import free_port, stop, wait_http

BACKENDS = ("postgresql", "sqlite")
OVERVIEW_MS = 200.0
LOG_PAGE_MS = 100.0
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
# A models file is required to serve; the seeded records name models it need not know.
MODELS_FILE: dict[str, object] = {
    "providers": [{"name": "mock", "type": "mock"}],
    "models": [
        {
            "id": "gpt-oss-120b",
            "category": "LLM",
            "deployments": [{"provider": "mock", "model": "mock"}],
            "price": {"input": 0.08, "output": 0.40},
        }
    ],
}


@dataclass(frozen=True)
class Settings:
    records: int
    samples: int  # timed requests per page
    warmup: int  # untimed requests per page before them

    @staticmethod
    def for_mode(quick: bool, records: int | None = None) -> Settings:
        if quick:
            return Settings(records or 50_000, 5, 2)
        return Settings(records or 1_000_000, 20, 3)


def log(message: str) -> None:
    print(f"bench.dashboard: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ database


@dataclass
class Database:
    """A fresh database of one backend, its Redis prefix and models file (bench/gateway.py's Backing)."""

    backend: str
    backing: gw.Backing

    @classmethod
    def create(cls, backend: str, workdir: Path) -> Database:
        backing = gw.new_backing(workdir, MODELS_FILE)
        if backend == "postgresql":
            gw.psql(f'CREATE DATABASE "{backing.database}"')
            backing.created_database = True
        return cls(backend, backing)

    @property
    def url(self) -> str:
        if self.backend == "postgresql":
            return f"{gw.POSTGRES}/{self.backing.database}"
        return f"sqlite+aiosqlite:///{self.backing.workdir / 'bastion-dashboard.db'}"

    def env(self) -> dict[str, str]:
        """bench/gateway.py's production shape; SQLite serves with in-process limits (no Redis)."""
        env = self.backing.env(workers=1) | {"BASTION_DATABASE_URL": self.url}
        if self.backend == "sqlite":
            del env["BASTION_REDIS_URL"], env["BASTION_REDIS_PREFIX"]
        return env

    def drop(self) -> list[str]:
        """Drop the PostgreSQL database and the Redis keys under the prefix (a SQLite file goes with the
        workdir)."""
        return gw.teardown(self.backing)


def start_server(database: Database) -> gw.Gateway:
    workdir = database.backing.workdir
    (workdir / "metrics-w1").mkdir(exist_ok=True)
    port, log_path = free_port(), workdir / "bastion.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bastion", "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=database.env(),
            cwd=workdir,
            start_new_session=True,
        )
    server = gw.Gateway(1, port, process, log_path)
    try:
        wait_http(server.root + "/healthz", process, log_path, timeout=60)
    except BaseException:
        stop(process, grace=15)
        raise
    return server


# ---------------------------------------------------------------------------------------- the pages


def pages(seeded: Seeded, expected: Expected, deep_path: str) -> list[Page]:
    big = seeded.big
    base = f"/dashboard/a/{big.id}"
    spend = card_is("spend-30d", *expected.cards["spend-30d"])
    overviews = [
        Page("overview, 30 days", "owner", f"{base}/?days=30", OVERVIEW_MS, spend),
        Page(
            "overview, 90 days",
            "owner",
            f"{base}/?days=90",
            OVERVIEW_MS,
            every(spend, card_is("requests", *expected.cards["requests-90d"])),
        ),
    ]
    logs = [
        Page(view.title, view.who, view.path or deep_path, LOG_PAGE_MS, rows_are(*expected.rows[view.title]))
        for view in log_views(seeded, expected.anchors)
    ]
    others = [
        Page("keys", "owner", f"{base}/keys", None, contains(*big.key_names)),
        Page(
            "operator: accounts",
            "operator",
            "/dashboard/accounts",
            OVERVIEW_MS,  # the operators' overview: every account's totals from the rollups
            contains(*(f'data-account-id="{a.id}"' for a in seeded.accounts)),
        ),
    ]
    return [*overviews, *logs, *others]


def time_pages(
    root: str, people: People, seeded: Seeded, expected: Expected, settings: Settings
) -> tuple[list[Timing], list[float]]:
    """Every page's timing, and the time of each step following the log's "Older" links."""
    clients = {"owner": sign_in(root, people.owner, people.password)}
    try:
        clients["operator"] = sign_in(root, people.operator, people.password)
        deep_path, followed = follow(clients["owner"], f"/dashboard/a/{seeded.big.id}/usage", FOLLOWED)
        timings = []
        for page in pages(seeded, expected, deep_path):
            timing = measure(clients[page.who], page, settings.samples, settings.warmup)
            timings.append(timing)
            problems = f"  {'; '.join(timing.problems)}" if timing.problems else ""
            log(
                f"  {seeded.backend:<10} {page.name:<62} p50 {timing.p50_ms:7.1f} ms  "
                f"p95 {timing.p95_ms:7.1f} ms{problems}"
            )
        return timings, followed
    finally:
        for client in clients.values():
            client.close()


# ---------------------------------------------------------------------------------------- the plans


def cases(store: Store, seeded: Seeded, anchors: Anchors, today: date) -> list[Case]:
    reports, log, big = store.reports, store.log, seeded.big
    cursor = Cursor(*anchors.half_way)
    overview_labels = ("sums per day and model (usage_daily)", "top keys (usage_daily)")

    def log_page(account: str | None, where: UsageFilter, after: Cursor | None = None) -> Callable[[], Any]:
        return lambda: log.log_page(account, where, after, PAGE_SIZE)

    return [
        Case("overview, 30 days", lambda: reports.overview(big.id, 30, today), overview_labels),
        Case("overview, 90 days", lambda: reports.overview(big.id, 90, today), overview_labels),
        Case("request log, first page", log_page(big.id, UsageFilter())),
        Case("request log, cursor half way back", log_page(big.id, UsageFilter(), cursor)),
        Case(f"request log, model={FILTER_MODEL}", log_page(big.id, UsageFilter(model=FILTER_MODEL))),
        Case("request log, status=error", log_page(big.id, UsageFilter(status="error"))),
        Case(f"request log, model={RETIRED.id}", log_page(big.id, UsageFilter(model=RETIRED.id))),
        Case(
            "request log, key revoked 60 days ago", log_page(big.id, UsageFilter(key_id=big.revoked_key_id))
        ),
        Case("request log, its model filter", lambda: log.models_used(big.id, today - timedelta(days=90))),
        Case(
            "request log of the smallest account (1 %), status=error",
            log_page(seeded.accounts[-1].id, UsageFilter(status="error")),
        ),
        Case("operator: all usage, first page", log_page(None, UsageFilter())),
        Case(f"operator: all usage, model={RETIRED.id}", log_page(None, UsageFilter(model=RETIRED.id))),
        Case("operator: accounts", lambda: reports.accounts(today), ("spend per account, 30 days",)),
        Case(
            "operator: accounts, every account's totals",
            lambda: reports.overview(None, 30, today),
            overview_labels,
        ),
        Case(
            "keys",
            lambda: reports.keys(big.id, today),
            ("last use per key", "spend per key", "spend per key, 30 days"),
        ),
        Case(
            "keys: a budgeted key's spend this month (UTC periods)",
            lambda: store.key_spend(big.key_ids[0], datetime(today.year, today.month, 1, tzinfo=UTC)),
        ),
        Case(
            "request path: an account's live state loaded (Store.credit_state)",
            lambda: store.credit_state(big.id),
            ("usage sum",),
            dashboard=False,
        ),
        Case(
            "request path: a key's spend in a total budget (Store.key_spend)",
            lambda: store.key_spend(big.key_ids[0], None),
            dashboard=False,
        ),
    ]


# ------------------------------------------------------------------------------------- one backend


@dataclass
class Prepared:
    seeded: Seeded
    people: People
    expected: Expected


async def prepare(database: Database, records: int) -> Prepared:
    seeded = await seed(database.url, database.backend, records)
    store = Store.from_url(database.url)
    try:
        people = await invite_people(store, seeded.big.id)
        return Prepared(seeded, people, await expectations(store, seeded, datetime.now(UTC).date()))
    finally:
        await store.close()


async def explain(database: Database, prepared: Prepared) -> list[QueryPlan]:
    store = Store.from_url(database.url)
    try:
        today = datetime.now(UTC).date()
        return await explain_cases(store, cases(store, prepared.seeded, prepared.expected.anchors, today))
    finally:
        await store.close()


def run_backend(backend: str, settings: Settings, workdir: Path) -> dict[str, Any]:
    database = Database.create(backend, workdir / backend)
    try:
        log(f"{backend}: seeding {settings.records:,} usage records")
        prepared = asyncio.run(prepare(database, settings.records))
        seconds = prepared.seeded.seconds
        log(
            f"{backend}: seeded in {seconds['total']:.1f} s (records {seconds['records']:.1f} s, rollups "
            f"{seconds['rollups']:.1f} s, analyze {seconds['analyze']:.1f} s); "
            f"{prepared.seeded.rollup_rows:,} rollup rows"
        )
        server = start_server(database)
        try:
            timings, followed = time_pages(
                server.root, prepared.people, prepared.seeded, prepared.expected, settings
            )
        finally:
            server.stop()
        plans = asyncio.run(explain(database, prepared))
    finally:
        with shielded():
            problems = database.drop()
        for problem in problems:
            log(f"cleanup: {problem}")
    return {
        "backend": backend,
        "seed": prepared.seeded.as_json(),
        "pages": [t.as_json() for t in timings],
        "followed_ms": followed,
        "plans": [p.as_json() for p in plans],
    }


@contextmanager
def shielded() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while cleaning up: an interrupted cleanup leaks a database."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(backends: Sequence[str], settings: Settings, workdir: Path | None = None) -> dict[str, Any]:
    """Every backend's figures (what `python -m bench` stores as figures["dashboard"])."""
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="bastion-bench-dashboard-")) if workdir is None else workdir
    started = time.time()
    try:
        figures = {backend: run_backend(backend, settings, root) for backend in backends}
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "records": settings.records,
        "samples": settings.samples,
        "warmup": settings.warmup,
        "page_size": PAGE_SIZE,
        "started_unix": started,
        "targets_ms": {"overview": OVERVIEW_MS, "log_page": LOG_PAGE_MS},
        "backends": figures,
    }


def broken(figures: dict[str, Any]) -> list[str]:
    """Pages that answered wrongly (not merely slowly)."""
    return [
        f"{backend}: {page['name']}: {'; '.join(page['problems'])}"
        for backend, found in figures["backends"].items()
        for page in found["pages"]
        if page["problems"]
    ]


# ----------------------------------------------------------------------------------------------- CLI


def write(figures: dict[str, Any], out: Path, mode: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(figures["started_unix"]))
    text = dashboard_report.markdown(figures, mode)
    for name in (f"bench-dashboard-{mode}-{stamp}", f"latest-dashboard-{mode}"):
        (out / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
        (out / f"{name}.md").write_text(text)
    return "\n".join([*dashboard_report.table(figures), *dashboard_report.verdict_lines(figures)])


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--records", type=int, help="usage records to seed (default 1,000,000; --quick 50,000)"
    )
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="fewer records and requests (CI)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results directory ({DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.records is not None and args.records < 2 * PAGE_SIZE * (FOLLOWED + 1):
        parser.error(f"--records: at least {2 * PAGE_SIZE * (FOLLOWED + 1)}")
    signal.signal(signal.SIGTERM, on_sigterm)
    settings = Settings.for_mode(args.quick, args.records)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    try:
        figures = run(backends, settings)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (RuntimeError, httpx.HTTPError, OSError) as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        return 1
    print(write(figures, args.out, "quick" if args.quick else "full"))
    log(f"results in {args.out}")
    for problem in broken(figures):
        log(f"BROKEN {problem}")
    return 1 if broken(figures) else 0


if __name__ == "__main__":
    sys.exit(main())
