"""The dashboard benchmark's tables: page timings against the targets, seeding, and the query plans."""

from __future__ import annotations

import math
import time
from typing import Any

NAMES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}
_ACCESS = (  # plan nodes that read a table or an index
    "Seq Scan",
    "Parallel Seq Scan",
    "Index Scan",
    "Index Only Scan",
    "Parallel Index",
    "Bitmap Heap Scan",
    "Bitmap Index Scan",
    "SEARCH",
    "SCAN",
)


def _ms(value: Any) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "n/a"
    return f"{value:,.1f}"


def status(page: dict[str, Any]) -> str:
    if page["problems"]:
        return "BROKEN: " + "; ".join(page["problems"])
    return {True: "met", False: "NOT met", None: ""}[page["met"]]


def target(page: dict[str, Any]) -> str:
    return f"< {page['target_ms']:.0f} ms" if page["target_ms"] is not None else ""


def table(figures: dict[str, Any]) -> list[str]:
    lines = [
        f"Dashboard pages with {figures['records']:,} usage records: client wall clock over "
        f"{figures['samples']} requests each after {figures['warmup']} warm-up requests; "
        "server = Server-Timing gateway;dur (p50); first = the first request, before any warm-up.",
        "",
        "| database | page | p50 ms | p95 ms | max ms | server p50 ms | first (cold) ms "
        "| target (p50 and p95) | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, found in figures["backends"].items():
        for page in found["pages"]:
            lines.append(
                f"| {NAMES.get(backend, backend)} | {page['name']} | {_ms(page['p50_ms'])} | "
                f"{_ms(page['p95_ms'])} | {_ms(page['max_ms'])} | {_ms(page['server_p50_ms'])} | "
                f"{_ms(page['first_ms'])} | {target(page)} | {status(page)} |"
            )
    return lines


def followed_lines(figures: dict[str, Any]) -> list[str]:
    """The log's "Older" links followed one by one from the first page (one request each)."""
    lines = [""]
    for backend, found in figures["backends"].items():
        steps = ", ".join(_ms(ms) for ms in found["followed_ms"])
        lines.append(
            f"{NAMES.get(backend, backend)}: first page and the next ones by their 'Older' link: {steps} ms."
        )
    return lines


def seeding_lines(figures: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Seeding (records written by COPY / executemany, `usage_daily` rolled up by migration 0005's "
        "INSERT ... SELECT, balances set, ANALYZE; then the ledger check):",
        "",
        "| database | records | keys | rollup rows | records s | rollups s | analyze s | total s "
        "| ledger check s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, found in figures["backends"].items():
        seed, seconds = found["seed"], found["seed"]["seconds"]
        lines.append(
            f"| {NAMES.get(backend, backend)} | {seed['records']:,} | {seed['keys']} | "
            f"{seed['rollup_rows']:,} | "
            f"{seconds['records']:.1f} | {seconds['rollups']:.1f} | {seconds['analyze']:.1f} | "
            f"{seconds['total']:.1f} | {seconds['ledger_check']:.1f} |"
        )
    return lines


def plan_summary_lines(figures: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Query plans of the reads behind the pages (the statements `Reports` sends, captured in process "
        "and explained with their parameters; query ms = the statement alone, median of 5, from Python; "
        "rows read = PostgreSQL's rows of usage_records scanned, kept or filtered out):",
        "",
        "| database | query | how the usage tables are read | rows read | query ms "
        "| full scan of usage_records |",
        "|---|---|---|---|---|---|",
    ]
    for backend, found in figures["backends"].items():
        for plan in found["plans"]:
            rows = f"{plan['rows_read']:,}" if plan.get("rows_read") is not None else ""
            scan = "YES" if plan["full_scan"] else "no"
            lines.append(
                f"| {NAMES.get(backend, backend)} | {plan['name']} | {access(plan['plan'])} | {rows} | "
                f"{_ms(plan['query_ms'])} | {scan} |"
            )
    return lines


def plan_text_lines(figures: dict[str, Any]) -> list[str]:
    lines = []
    for backend, found in figures["backends"].items():
        explain = "EXPLAIN (ANALYZE, BUFFERS)" if backend == "postgresql" else "EXPLAIN QUERY PLAN"
        lines += ["", f"### {NAMES.get(backend, backend)}: {explain}"]
        for plan in found["plans"]:
            lines += ["", f"#### {plan['name']}", "", "```sql", plan["statement"], "```", "", "```"]
            lines += [*plan["plan"], "```"]
    return lines


def access(plan: list[str]) -> str:
    """How the plan reads its tables, in one line (index or scan nodes only)."""
    nodes = []
    for line in plan:
        text = line.strip().removeprefix("->").strip().split("  (cost=")[0]
        if text.startswith(_ACCESS):
            nodes.append(text)
    return "; ".join(dict.fromkeys(nodes)) or "(no table read)"


def verdict_lines(figures: dict[str, Any]) -> list[str]:
    pages = [(NAMES.get(b, b), page) for b, found in figures["backends"].items() for page in found["pages"]]
    wrong = [
        f"{name}: {page['name']} ({'; '.join(page['problems'])})" for name, page in pages if page["problems"]
    ]
    slow = [
        f"{name}: {page['name']} (p50 {_ms(page['p50_ms'])} ms, p95 {_ms(page['p95_ms'])} ms, {target(page)})"
        for name, page in pages
        if page["met"] is False and not page["problems"]
    ]
    plans = [(NAMES.get(b, b), plan) for b, found in figures["backends"].items() for plan in found["plans"]]
    scans = [f"{name}: {plan['name']}" for name, plan in plans if plan["full_scan"] and plan["dashboard"]]
    others = [
        f"{name}: {plan['name']}" for name, plan in plans if plan["full_scan"] and not plan["dashboard"]
    ]
    return [
        "",
        "Pages that answered wrongly: " + ("; ".join(wrong) or "none") + ".",
        "Pages that missed their target: " + ("; ".join(slow) or "none") + ".",
        "Dashboard queries with a full scan of usage_records: " + ("; ".join(scans) or "none") + ".",
        "Reads of the request path (not the dashboard's) with a full scan of usage_records: "
        + ("; ".join(others) or "none")
        + ".",
    ]


def sections(figures: dict[str, Any]) -> list[str]:
    """Everything but the timing table (which `python -m bench` folds into its own)."""
    return [
        *verdict_lines(figures),
        *followed_lines(figures),
        *seeding_lines(figures),
        *plan_summary_lines(figures),
        *plan_text_lines(figures),
    ]


def markdown(figures: dict[str, Any], mode: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(figures["started_unix"]))
    return (
        "\n".join(
            [f"## Bastion dashboard benchmark ({mode} mode, {when})", "", *table(figures), *sections(figures)]
        )
        + "\n"
    )
