"""The markdown table (with the performance issue's targets) and the JSON results file."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.suite import Results


@dataclass(frozen=True)
class Row:
    figure: str
    direct: str
    bastion: str
    value: str
    target: str
    met: bool | None  # None: no target for this row


def _n(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _get(figures: dict[str, Any], *path: str) -> Any:
    node: Any = figures
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return float("nan")
        node = node[part]
    return node


def _check(value: float, ok: Callable[[float], bool]) -> bool | None:
    return None if value is None or math.isnan(value) else ok(value)


def rows(figures: dict[str, Any]) -> list[Row]:
    f = figures
    out: list[Row] = []
    c1 = f.get("c1", {})
    added50, added99 = _get(f, "c1", "added_p50_ms"), _get(f, "c1", "added_p99_ms")
    out.append(
        Row(
            "p50 latency @ c=1, 1 worker (ms)",
            _n(_get(f, "c1", "direct_p50_ms"), 3),
            _n(_get(f, "c1", "bastion_p50_ms"), 3),
            f"+{_n(added50, 3)}",
            "added <= 0.5 ms",
            _check(added50, lambda v: v <= 0.5),
        )
    )
    out.append(
        Row(
            "p99 latency @ c=1, 1 worker (ms)",
            _n(_get(f, "c1", "direct_p99_ms"), 3),
            _n(_get(f, "c1", "bastion_p99_ms"), 3),
            f"+{_n(added99, 3)}",
            "added <= 2 ms",
            _check(added99, lambda v: v <= 2),
        )
    )
    cpu = c1.get("cpu_ms_per_request", float("nan"))
    out.append(
        Row(
            "CPU per request @ c=1, 1 worker (ms)",
            "",
            "",
            _n(cpu, 3),
            "<= 0.5 ms",
            _check(cpu, lambda v: v <= 0.5),
        )
    )
    for workers in (2, 1):
        for kind, target_rps, name in (("json", 3000.0, "JSON req/s"), ("sse", 2500.0, "streams/s")):
            base = f"c32_w{workers}"
            rps = _get(f, base, kind, "bastion_rps")
            direct = _get(f, base, kind, "direct_rps")
            share = rps / direct * 100 if direct and not math.isnan(direct) else float("nan")
            targeted = workers == 2
            out.append(
                Row(
                    f"{name} @ c=32, {workers} worker(s)",
                    _n(direct, 0),
                    _n(rps, 0),
                    f"{_n(share, 0)} % of direct",
                    f">= {target_rps:,.0f}" if targeted else "(info)",
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
    for concurrency in (1, 16):
        added = _get(f, "ttft", f"c{concurrency}", "added_p50_ms")
        out.append(
            Row(
                f"TTFT p50 @ c={concurrency}, paced stream (ms)",
                _n(_get(f, "ttft", f"c{concurrency}", "direct_p50_ms")),
                _n(_get(f, "ttft", f"c{concurrency}", "bastion_p50_ms")),
                f"+{_n(added)}",
                "added <= 1 ms",
                _check(added, lambda v: v <= 1),
            )
        )
    rss = f.get("rss", {})
    per_stream = rss.get("per_stream_bytes", float("nan"))
    errors = rss.get("errors", 0)
    out.append(
        Row("RSS idle, 1 worker (MiB)", "", "", _n(rss.get("idle_bytes", math.nan) / 2**20, 1), "", None)
    )
    out.append(
        Row(
            f"RSS with {rss.get('streams', '?')} streams requested (MiB)",
            "",
            "",
            f"{_n(rss.get('held_bytes', math.nan) / 2**20, 1)} "
            f"({rss.get('first_chunks', 0)} open, {errors} errors)",
            "",
            None,
        )
    )
    out.append(
        Row(
            "RSS per open stream (KiB)",
            "",
            "",
            _n(per_stream / 1024, 1),
            "<= 40 KB, 0 errors",
            _check(per_stream, lambda v: v <= 40 * 1024 and errors == 0),
        )
    )
    leak = f.get("leak", {})
    if leak:
        first, second = leak["checkpoints"]
        samples = leak["rss_bytes"]
        growth = leak["growth_percent"]
        out.append(
            Row(
                f"RSS after {first:,} / {second:,} requests (MiB)",
                "",
                "",
                f"{samples[str(first)] / 2**20:.1f} / {samples[str(second)] / 2**20:.1f}",
                "",
                None,
            )
        )
        out.append(
            Row(
                f"RSS growth {first:,} -> {second:,} requests",
                "",
                "",
                f"{growth:+.2f} %",
                "<= 5 %",
                _check(growth, lambda v: v <= 5),
            )
        )
    return out


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
    lines += [
        "",
        "Runs (wrk): non-2xx responses and socket errors",
        "",
        "| run | requests | req/s | p50 ms | p99 ms | non-2xx | socket errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in results.runs:
        lines.append(
            f"| {run.label} | {run.requests:,} | {run.rps:,.0f} | {run.p50_ms:.3f} | {run.p99_ms:.3f} "
            f"| {run.non2xx} | {run.socket_errors} |"
        )
    bad = [r for r in results.runs if r.non2xx or r.socket_errors]
    lines += ["", f"Runs with non-2xx or socket errors: {len(bad)} of {len(results.runs)}."]
    lines.append(
        "Medians of interleaved rounds (direct, Bastion, direct, Bastion, ...); added = Bastion - direct."
    )
    return "\n".join(lines) + "\n"


def write_report(results: Results, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(results.started))
    table = markdown(results)
    data = results.as_json() | {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "table": [row.__dict__ for row in rows(results.figures)],
    }
    for name in (f"bench-{results.mode}-{stamp}", f"latest-{results.mode}"):
        (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        (out / f"{name}.md").write_text(table)
    return table
