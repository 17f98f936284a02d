"""The markdown table (with the performance issue's targets) and the JSON results file."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import dashboard_report
from bench.suite import CLUSTER_LOADS, Results


@dataclass(frozen=True)
class Row:
    figure: str
    direct: str
    bastion: str
    value: str
    target: str
    met: bool | None  # None: no target for this row


def _n(value: Any, digits: int = 2) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def _get(figures: dict[str, Any], *path: str) -> Any:
    node: Any = figures
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return float("nan")
        node = node[part]
    return node


def _check(value: Any, ok: Callable[[float], bool]) -> bool | None:
    if not isinstance(value, int | float) or math.isnan(value):
        return None
    return ok(value)


def _mib(value: Any) -> str:
    return _n(value / 2**20, 1) if isinstance(value, int | float) else "n/a"


CLI_TARGET_MS = 300.0


def _signed(value: Any) -> str:
    return f"{value:+,.0f}" if isinstance(value, int | float) and not math.isnan(value) else "n/a"


def cli_rows(f: dict[str, Any]) -> list[Row]:
    """The CLI's start (bench/cli_start.py): direct is the floor (Python alone; for keys list, Python
    importing the store and the settings), Bastion the command, value what the command adds to it."""
    if "cli" not in f:
        return []
    out = []
    for name, key, floor in (
        ("bastion --version", "version_ms", "python_ms"),
        ("bastion --help", "help_ms", "python_ms"),
        ("bastion keys list, SQLite", "keys_list_ms", "keys_list_floor_ms"),
    ):
        took, under = _get(f, "cli", key), _get(f, "cli", floor)
        out.append(
            Row(
                f"CLI start: {name} (ms)",
                _n(under, 0),
                _n(took, 0),
                _signed(took - under),
                f"< {CLI_TARGET_MS:.0f} ms",
                _check(took, lambda v: v < CLI_TARGET_MS),
            )
        )
    return out


def latency_rows(f: dict[str, Any]) -> list[Row]:
    added50, added99 = _get(f, "c1", "added_p50_ms"), _get(f, "c1", "added_p99_ms")
    cpu = _get(f, "c1", "cpu_ms_per_request")
    return [
        Row(
            "p50 latency @ c=1, 1 worker (ms)",
            _n(_get(f, "c1", "direct_p50_ms"), 3),
            _n(_get(f, "c1", "bastion_p50_ms"), 3),
            f"+{_n(added50, 3)}",
            "added <= 0.5 ms",
            _check(added50, lambda v: v <= 0.5),
        ),
        Row(
            "p99 latency @ c=1, 1 worker (ms)",
            _n(_get(f, "c1", "direct_p99_ms"), 3),
            _n(_get(f, "c1", "bastion_p99_ms"), 3),
            f"+{_n(added99, 3)}",
            "added <= 2 ms",
            _check(added99, lambda v: v <= 2),
        ),
        Row(
            "CPU per request @ c=1, 1 worker (ms)",
            "",
            "",
            _n(cpu, 3),
            "<= 0.5 ms",
            _check(cpu, lambda v: v <= 0.5),
        ),
    ]


def throughput_rows(f: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for workers in (2, 1):
        for kind, target_rps, name in (("json", 3000.0, "JSON req/s"), ("sse", 2500.0, "streams/s")):
            base = f"c32_w{workers}"
            rps, direct = _get(f, base, kind, "bastion_rps"), _get(f, base, kind, "direct_rps")
            targeted = workers == 2
            out.append(
                Row(
                    f"{name} @ c=32, {workers} worker(s)",
                    _n(direct, 0),
                    _n(rps, 0),
                    f"CPU {_n(_get(f, base, kind, 'cpu_ms_per_request'), 3)} ms/request",
                    f">= {target_rps:,.0f}" if targeted else "",
                    _check(rps, lambda v, t=target_rps: v >= t) if targeted else None,
                )
            )
            out.append(
                Row(
                    f"{kind.upper()} p99 @ c=32, {workers} worker(s) (ms)",
                    _n(_get(f, base, kind, "direct_p99_ms")),
                    _n(_get(f, base, kind, "bastion_p99_ms")),
                    "",
                    "",
                    None,
                )
            )
    return out


CLUSTER_SIDES = {"redis": "Bastion (Redis)", "cluster": "Bastion (Redis Cluster)"}


def cluster_rows(f: dict[str, Any]) -> list[Row]:
    """The Redis Cluster run (bench/figures.py redis_cluster): each load through the gateway on one
    Redis and through the one on a 3-master cluster, a row each, the cluster's change beside it."""
    found = f.get("cluster")
    if not found:
        return []
    out = []
    for kind, connections in CLUSTER_LOADS:
        load = f"{kind}_c{connections}"
        single = found["redis"].get(load, {})
        for side, title in CLUSTER_SIDES.items():
            figures = found[side].get(load, {})
            rps = figures.get("rps", math.nan)
            value = (
                f"p50 / p99 {_n(figures.get('p50_ms'), 3)} / {_n(figures.get('p99_ms'), 3)} ms, "
                f"CPU {_n(figures.get('cpu_ms_per_request'), 3)} ms/request"
            )
            redis_cpu = figures.get("redis_cpu_ms_per_request", math.nan)
            if not math.isnan(redis_cpu):
                value += f" (Redis {_n(redis_cpu, 3)})"
            base = single.get("rps", math.nan)
            if side != "redis" and base and not math.isnan(base) and not math.isnan(rps):
                value += f"; {(rps / base - 1) * 100:+.1f} % req/s vs Redis"
            name = "JSON req/s" if kind == "json" else "streams/s"
            out.append(Row(f"{name} @ c={connections}, 1 worker, {title}", "", _n(rps, 0), value, "", None))
    return out


def stream_rows(f: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for concurrency in (1, 16):
        added = _get(f, "ttft", f"c{concurrency}", "added_p50_ms")
        out.append(
            Row(
                f"time to first token p50 @ c={concurrency}, paced stream (ms)",
                _n(_get(f, "ttft", f"c{concurrency}", "direct_p50_ms")),
                _n(_get(f, "ttft", f"c{concurrency}", "bastion_p50_ms")),
                f"+{_n(added)}",
                "added <= 1 ms",
                _check(added, lambda v: v <= 1),
            )
        )
        out.append(
            Row(
                f"time to first token p50 @ c={concurrency}, a bare TCP relay instead of Bastion (ms)",
                _n(_get(f, "ttft", f"c{concurrency}", "direct_p50_ms")),
                _n(_get(f, "ttft", f"c{concurrency}", "relay_p50_ms")),
                f"+{_n(_get(f, 'ttft', f'c{concurrency}', 'relay_added_p50_ms'))}",
                "",
                None,
            )
        )
    rss = f.get("rss", {})
    per_stream, errors = rss.get("per_stream_bytes", math.nan), rss.get("errors", 0)
    out += [
        Row("RSS idle, 1 worker (MiB)", "", "", _mib(rss.get("idle_bytes")), "", None),
        Row(
            f"RSS holding {rss.get('streams', '?')} paced streams (MiB)",
            "",
            "",
            f"{_mib(rss.get('held_bytes'))} ({rss.get('open', 0)} open, {rss.get('completed', 0)} completed)",
            "",
            None,
        ),
        Row(
            "RSS per open stream (KiB)",
            "",
            "",
            f"{_n(per_stream / 1024, 1)}, {errors} errors",
            "<= 40 KB, 0 errors",
            _check(per_stream, lambda v: v <= 40 * 1000 and errors == 0),
        ),
    ]
    return out


def leak_rows(f: dict[str, Any]) -> list[Row]:
    leak = f.get("leak")
    if not leak:
        return []
    first, second = leak["checkpoints"]
    samples, growth = leak["rss_bytes"], leak["growth_percent"]
    return [
        Row(
            f"RSS after {first:,} / {second:,} requests (MiB)",
            "",
            "",
            f"{_mib(samples[str(first)])} / {_mib(samples[str(second)])}",
            "",
            None,
        ),
        Row(
            f"RSS growth {first:,} -> {second:,} requests",
            "",
            "",
            f"{growth:+.2f} %",
            "<= 5 %",
            _check(growth, lambda v: v <= 5),
        ),
    ]


def dashboard_rows(f: dict[str, Any]) -> list[Row]:
    """A row per dashboard page and database (bench/dashboard.py); the value is client-side p50 / p95."""
    found = f.get("dashboard")
    if not found:
        return []
    out = []
    for backend, figures in found["backends"].items():
        name = dashboard_report.NAMES.get(backend, backend)
        for page in figures["pages"]:
            value = f"p50 {_n(page['p50_ms'], 1)} / p95 {_n(page['p95_ms'], 1)}"
            if page["problems"]:
                value += " BROKEN: " + "; ".join(page["problems"])
            out.append(
                Row(
                    f"dashboard, {name}, {found['records']:,} records: {page['name']} (ms)",
                    "",
                    "",
                    value,
                    dashboard_report.target(page),
                    page["met"],
                )
            )
    return out


def rows(figures: dict[str, Any]) -> list[Row]:
    return [
        *cli_rows(figures),
        *latency_rows(figures),
        *throughput_rows(figures),
        *cluster_rows(figures),
        *stream_rows(figures),
        *leak_rows(figures),
        *dashboard_rows(figures),
    ]


def scaling_lines(figures: dict[str, Any]) -> list[str]:
    scaling = figures.get("scaling")
    if not scaling:
        return []
    lines = [
        "",
        "Scaling: the same JSON load (1 worker) alone, beside idle keep-alive connections, "
        "beside held streams",
        "",
        "| condition | open | CPU ms/request c=1 | c=32 | p50 / p99 ms c=1 | req/s c=32 | RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, title in (
        ("baseline", "alone"),
        ("idle_connections", f"{scaling.get('idle_connections', {}).get('count', '?')} idle connections"),
        ("held_streams", f"{scaling.get('held_streams', {}).get('count', '?')} held streams"),
    ):
        row = scaling.get(name, {})
        change = ""
        if name != "baseline":
            change = (
                f" ({row.get('c1_cpu_change_percent', math.nan):+.1f} %, "
                f"{row.get('c32_cpu_change_percent', math.nan):+.1f} %)"
            )
        lines.append(
            f"| {title} | {row.get('open', '')} | {_n(row.get('c1_cpu_ms_per_request'), 3)} | "
            f"{_n(row.get('c32_cpu_ms_per_request'), 3)}{change} | "
            f"{_n(row.get('c1_p50_ms'), 3)} / {_n(row.get('c1_p99_ms'), 3)} | {_n(row.get('c32_rps'), 0)} | "
            f"{_mib(row.get('rss_bytes'))} |"
        )
    return lines


def probe_lines(f: dict[str, Any]) -> list[str]:
    """The machine's speed at the start and end of the run (bench/probe.py): read the figures by it."""
    found = f.get("probe", {})
    parts = []
    for when in ("start", "end"):
        p = found.get(when)
        if p:
            parts.append(
                f"{when}: warm {p['warm_us']:.0f} us, after 1 ms idle {p['after_1ms_idle_us']:.0f} us, "
                f"after 10 ms idle {p['after_10ms_idle_us']:.0f} us"
            )
    if not parts:
        return []
    return ["", "Machine probe (bench/probe.py; lower is faster): " + "; ".join(parts) + "."]


def markdown(results: Results) -> str:
    status = {True: "met", False: "NOT met", None: ""}
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(results.started))
    lines = [
        f"## Bastion benchmark ({results.mode} mode, {when})",
        "",
        "| figure | direct | Bastion | value | target | status |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows(results.figures):
        cells = [row.figure, row.direct, row.bastion, row.value, row.target, status[row.met]]
        lines.append("| " + " | ".join(cells) + " |")
    if "cluster" in results.figures:
        lines += [
            "",
            "Bastion (Redis) / Bastion (Redis Cluster): two fresh 1-worker gateways, one on the Redis at "
            f"127.0.0.1:6379, one on a {results.figures['cluster'].get('masters', 3)}-master Redis Cluster "
            "the benchmark starts (bench/redis_cluster.py), same database and key, their runs interleaved; "
            "Redis CPU is the Redis servers' CPU time per request.",
        ]
    if "cli" in results.figures:
        lines += [
            "",
            "CLI start: a fresh process each, the median of "
            f"{results.figures['cli'].get('runs', '?')}; direct is the floor: Python alone, and for keys "
            "list Python importing the store (SQLAlchemy, aiosqlite) and the settings (pydantic-settings).",
        ]
    lines += scaling_lines(results.figures)
    lines += probe_lines(results.figures)
    if "dashboard" in results.figures:
        lines += ["", "### Dashboard", *dashboard_report.sections(results.figures["dashboard"])]
    bastion_runs = [r for r in results.runs if "direct" not in r.label]
    lines += [
        "",
        f"Non-2xx answers through Bastion: {sum(r.non2xx for r in bastion_runs):,}; socket errors: "
        f"{sum(r.socket_errors for r in bastion_runs):,} (in {len(bastion_runs)} wrk runs, "
        f"{sum(r.requests for r in bastion_runs):,} requests).",
        "Medians of interleaved rounds (direct, Bastion, direct, Bastion, ...); added = Bastion - direct.",
        "",
        "| run | requests | req/s | p50 ms | p99 ms | non-2xx | socket errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in results.runs:
        lines.append(
            f"| {run.label} | {run.requests:,} | {run.rps:,.0f} | {run.p50_ms:.3f} | {run.p99_ms:.3f} "
            f"| {run.non2xx} | {run.socket_errors} |"
        )
    return "\n".join(lines) + "\n"


def write_report(results: Results, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(results.started))
    table = markdown(results)
    data = results.as_json() | {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "table": [row.__dict__ for row in rows(results.figures)],
    }
    for name in (f"bench-{results.mode}-{stamp}", f"latest-{results.mode}"):
        (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        (out / f"{name}.md").write_text(table)
    return table
