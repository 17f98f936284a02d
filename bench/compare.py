"""`python -m bench.compare REF [REF ...] [--baseline] [--rounds N]`: git refs and this working tree,
side by side in one run.

Figures from two benchmark runs are not comparable on a shared VM: the machine's own noise between runs
is larger than most changes. This runs every side's gateway at once instead (each REF from a temporary
worktree, each on its own database and Redis prefix, so none one's ledger or caches touch another's) and
interleaves their rounds with direct ones, changing the order every round: time to first token on the
paced stream at c=1 and c=16, then wrk at c=1 and c=32 (JSON and SSE) with CPU per request.

Each side after the first is compared with the first round by round (bench/paired.py): the change of
its CPU per request, with a 90 % interval, and whether that stands outside the run's noise.
`--baseline` makes the recorded baseline (bench/baseline) the first side and runs `BASELINE_ROUNDS`
rounds, enough for a 3 % change of CPU per request to stand out (the README's Performance section has
the noise these were chosen from). `--no-tree` leaves this working tree out (to compare two commits).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from bench import gateway as gw
from bench import rawstream, wrk
from bench.paired import paired_change
from bench.payloads import chat_body
from bench.procs import cpu_seconds
from bench.suite import CHAT, Plan, Results, Suite, log
from bench.tools import ToolError, ensure_tools

ROOT = Path(__file__).resolve().parent.parent
BASELINE_FILE = Path(__file__).resolve().parent / "baseline"
BASELINE_ROUNDS = 12  # bench.compare HEAD against itself: see README, Performance, "Reading bench.compare"
LOADS = (("json", 1), ("json", 32), ("sse", 32))
TREE = "this tree"


@dataclass
class Side:
    name: str
    gateway: gw.Gateway
    key: str
    samples: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)  # rps, p50, CPU


def baseline_ref(path: Path = BASELINE_FILE) -> str:
    """The recorded baseline commit: the first word of the file's first line that is not a comment."""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line.split()[0]
    raise ValueError(f"{path} names no commit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("refs", nargs="*", help="git commits, branches or tags to run beside this tree")
    parser.add_argument(
        "--baseline", action="store_true", help="the recorded baseline (bench/baseline) first"
    )
    parser.add_argument("--no-tree", action="store_true", help="leave this working tree out")
    parser.add_argument(
        "--rounds", type=int, help=f"rounds per figure (default 4; --baseline {BASELINE_ROUNDS})"
    )
    parser.add_argument("--seconds", type=float, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument(
        "--only",
        choices=("ttft", "wrk"),
        help="only time to first token, or only the wrk runs (default: both)",
    )
    args = parser.parse_args(argv)
    refs = ([baseline_ref()] if args.baseline else []) + list(args.refs)
    if len(refs) + (0 if args.no_tree else 1) < 2:
        parser.error("name a REF (or --baseline): there must be two sides to compare")
    rounds = args.rounds or (BASELINE_ROUNDS if args.baseline else 4)
    try:
        tools = ensure_tools()
    except ToolError as exc:
        print(f"bench.compare: {exc}", file=sys.stderr)
        return 2
    worktrees: list[Path] = []
    backings: list[gw.Backing] = []
    suite = Suite(tools, Plan.for_mode(True), Results("compare"))
    try:
        suite.setup()
        sides = []
        for n, ref in enumerate(refs):
            worktree = Path(tempfile.mkdtemp(prefix="bastion-compare-"))
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), ref],
                check=True,
                capture_output=True,
            )
            worktrees.append(worktree)
            backing = gw.new_backing(suite.workdir / f"ref{n}", _models(suite), {"PYTHONPATH": str(worktree)})
            backings.append(backing)
            gw.provision(backing)
            gateway = gw.start_gateway(backing, 1)
            suite.gateways.append(gateway)
            sides.append(Side(ref, gateway, backing.key))
            log(f"{ref} on :{gateway.port}")
        if not args.no_tree:
            sides.append(Side(TREE, suite.start_gateway(1), suite.key))
        if args.only != "wrk":
            _ttft(suite, sides, rounds)
        if args.only != "ttft":
            for kind, connections in LOADS:
                _wrk(suite, sides, kind, connections, rounds, args.seconds)
    finally:
        suite.cleanup()
        for backing in backings:
            gw.teardown(backing)
        for worktree in worktrees:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)],
                check=False,
                capture_output=True,
            )
            shutil.rmtree(worktree, ignore_errors=True)
    return 0


def _models(suite: Suite) -> dict[str, object]:
    assert suite.nginx is not None and suite.paced is not None
    return gw.models_file(
        f"{suite.nginx.root}/json/v1", f"{suite.nginx.root}/sse/v1", f"{suite.paced.root}/v1"
    )


def _interleaved(rounds: int, names: list[str], run: Callable[[str], float]) -> dict[str, float]:
    """Every round runs every side once, in an order rotated by one each round (two sides take turns
    going first), so no side keeps the place after another's load or after a pause; the medians."""
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(run(name))
    return {name: statistics.median(values) for name, values in samples.items()}


def _ttft(suite: Suite, sides: list[Side], rounds: int) -> None:
    assert suite.paced is not None
    body = chat_body("bench-paced")
    roots = {"direct": (suite.paced.root, suite.key)} | {s.name: (s.gateway.root, s.key) for s in sides}
    for concurrency, count in ((1, 40), (16, 480)):

        def run(name: str, concurrency: int = concurrency, count: int = count) -> float:
            root, key = roots[name]
            return statistics.median(uvloop.run(rawstream.ttft(root + CHAT, key, body, concurrency, count)))

        medians = _interleaved(rounds, list(roots), run)
        direct = medians["direct"]
        added = ", ".join(f"{s.name} +{(medians[s.name] - direct) * 1000:.3f} ms" for s in sides)
        print(f"time to first token c={concurrency}: {added} (direct {direct * 1000:.2f} ms)", flush=True)


def _wrk(suite: Suite, sides: list[Side], kind: str, connections: int, rounds: int, seconds: float) -> None:
    by_name = {side.name: side for side in sides}
    figure = f"{kind} c={connections}"

    def run(name: str) -> float:
        side = by_name[name]
        before = cpu_seconds(side.gateway.pid)
        result = wrk.run(
            suite.wrk_path, side.gateway.root + CHAT, side.key, f"bench-{kind}", stream=kind == "sse",
            connections=connections, duration_s=seconds, label=name,
        )  # fmt: skip
        cpu = (cpu_seconds(side.gateway.pid) - before) / max(1, result.requests) * 1000
        side.samples.setdefault(figure, []).append((result.rps, result.p50_ms, cpu))
        return result.rps

    _interleaved(rounds, list(by_name), run)
    print(report_lines(figure, sides), flush=True)


def report_lines(figure: str, sides: list[Side]) -> str:
    """One line per side: its medians, and for each side after the first its paired change of CPU per
    request against the first (samples are in round order, so pairs are one round's)."""
    reference = [sample[2] for sample in sides[0].samples[figure]]
    lines = []
    for n, side in enumerate(sides):
        rows = side.samples[figure]
        rps, p50, cpu = (statistics.median(row[i] for row in rows) for i in range(3))
        line = f"{figure} {side.name}: {rps:,.0f} req/s, p50 {p50:.3f} ms, CPU {cpu:.3f} ms/request"
        if n:
            change = paired_change([row[2] for row in rows], reference)
            line += f"; CPU vs {sides[0].name} {change.describe()}: {change.verdict()}"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
