"""`python -m bench.compare REF [REF ...] [--baseline] [--rounds N]`: git refs and this working tree,
side by side in one run.

Figures from two benchmark runs are not comparable on a shared VM: the machine's own noise between runs
is larger than most changes. This runs every side's gateway at once instead (each REF from a temporary
worktree, each on its own database and Redis prefix, so none one's ledger or caches touch another's) and
interleaves their rounds with direct ones, changing the order every round: time to first token on the
paced stream at c=1 and c=16, then wrk at c=1 and c=32 (JSON and SSE) with CPU per request.

Each side after the first is compared with the first round by round (bench/paired.py): the change of
its CPU per request, with a 90 % interval, and whether that stands outside the run's noise.
Before them, each side's instructions per request under callgrind (bench/instructions.py), which do not
move with the VM's speed. `--baseline` makes the recorded baseline (bench/baseline) the first side and
runs `BASELINE_ROUNDS` wrk rounds beside the instruction rounds; a 3 % change stands out in the
instruction count (the README's Performance section has the noise these were chosen from).
`--no-tree` leaves this working tree out (to compare two commits).
"""

from __future__ import annotations

import argparse
import contextlib
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
from bench import instructions, rawstream, wrk
from bench.paired import paired_change
from bench.payloads import chat_body
from bench.procs import cpu_seconds, tree
from bench.suite import CHAT, Plan, Results, Suite, log
from bench.tools import ToolError, ensure_tools

ROOT = Path(__file__).resolve().parent.parent
BASELINE_FILE = Path(__file__).resolve().parent / "baseline"
# The guard's figure is the instruction count (spread of one commit between runs <= 0.6 %: a 3 % change
# stands out with 2 rounds); wrk's CPU per request beside it cannot show 3 % here in any affordable
# number of rounds (README, Performance, "Reading bench.compare"): 6 rounds give its 90 % interval.
BASELINE_ROUNDS = 6
LOADS = (("json", 1), ("json", 32), ("sse", 32))
TREE = "this tree"


@dataclass
class Side:
    name: str
    gateway: gw.Gateway
    backing: gw.Backing
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
        "--pin",
        action="store_true",
        help="the gateways on the second CPU, the load generator and upstreams on the first",
    )
    parser.add_argument(
        "--same-processes",
        action="store_true",
        help="keep each side's gateway process for every round (default: fresh processes each round)",
    )
    parser.add_argument(
        "--only",
        choices=("ttft", "wrk", "instructions"),
        help="only time to first token, the wrk runs, or the instruction counts (default: all)",
    )
    parser.add_argument(
        "--instruction-rounds",
        type=int,
        default=2,
        help="fresh processes per side for the instruction counts (default 2)",
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
            name = ref if ref not in refs[:n] else f"{ref}#{refs[:n].count(ref) + 1}"
            sides.append(Side(name, gateway, backing))
            log(f"{name} on :{gateway.port}")
        if not args.no_tree:
            assert suite.backing is not None
            sides.append(Side(TREE, suite.start_gateway(1), suite.backing))
        if args.pin:
            _pin_all(suite, sides)
        if args.only in (None, "instructions"):
            _instructions(sides, args.instruction_rounds)
        if args.only in (None, "ttft"):
            _ttft(suite, sides, rounds)
        if args.only in (None, "wrk"):
            _wrk(suite, sides, rounds, args.seconds, restart=not args.same_processes)
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


def _instructions(sides: list[Side], rounds: int) -> None:
    """Instructions per request (bench/instructions.py), a fresh process per side and round, the sides
    one after another (rotated each round)."""
    if not instructions.available():
        log("no valgrind (apt-get install valgrind): instruction counts skipped")
        return
    counts: dict[str, dict[str, list[float]]] = {side.name: {} for side in sides}
    for round_ in range(rounds):
        shift = round_ % len(sides)
        for side in sides[shift:] + sides[:shift]:
            label = "".join(c if c.isalnum() else "-" for c in side.name)
            figures = instructions.measure(side.backing, f"{label}-r{round_}")
            log(f"instructions {side.name}: " + ", ".join(f"{k} {_count(k, v)}" for k, v in figures.items()))
            for figure, value in figures.items():
                counts[side.name].setdefault(figure, []).append(value)
    first = sides[0].name
    for figure in (*instructions.FIGURES, *instructions.SYSCALLS):
        for n, side in enumerate(sides):
            values = counts[side.name][figure]
            what = "read/write calls" if figure in instructions.SYSCALLS else "instructions"
            line = (
                f"{what}/request {figure.removesuffix(' syscalls')} {side.name}:"
                f" {_count(figure, statistics.median(values))}"
                f" (rounds: {', '.join(_count(figure, v) for v in values)})"
            )
            if n:
                change = paired_change(values, counts[first][figure])
                line += f"; vs {first} {change.describe()}"
            print(line, flush=True)


def _count(figure: str, value: float) -> str:
    return f"{value:.2f}" if figure.endswith("syscalls") else f"{value / 1e6:.3f} M"


def _ttft(suite: Suite, sides: list[Side], rounds: int) -> None:
    assert suite.paced is not None
    body = chat_body("bench-paced")
    roots = {"direct": (suite.paced.root, suite.key)} | {
        s.name: (s.gateway.root, s.backing.key) for s in sides
    }
    for concurrency, count in ((1, 40), (16, 480)):

        def run(name: str, concurrency: int = concurrency, count: int = count) -> float:
            root, key = roots[name]
            return statistics.median(uvloop.run(rawstream.ttft(root + CHAT, key, body, concurrency, count)))

        medians = _interleaved(rounds, list(roots), run)
        direct = medians["direct"]
        added = ", ".join(f"{s.name} +{(medians[s.name] - direct) * 1000:.3f} ms" for s in sides)
        print(f"time to first token c={concurrency}: {added} (direct {direct * 1000:.2f} ms)", flush=True)


def _wrk(suite: Suite, sides: list[Side], rounds: int, seconds: float, restart: bool) -> None:
    """Every load, every side, each round; every round but the first on fresh gateway processes.

    Two processes of the same code differ by several per cent of CPU per request for the whole of their
    lives (hash seeds, memory layout: `bench.compare HEAD` with one process per side measured +6.6 %,
    its interval +1.9 .. +12.8 %, for identical trees), a difference no number of rounds averages out.
    With a fresh process per round, that luck is drawn anew each round and lands in the interval."""
    for round_ in range(rounds):
        if restart or not round_:
            for side in sides:
                if round_:
                    _restart(suite, side)
                _warm(suite, side)
        shift = round_ % len(sides)
        for kind, connections in LOADS:
            for side in sides[shift:] + sides[:shift]:
                _run_wrk(suite, side, kind, connections, seconds)
    for kind, connections in LOADS:
        print(report_lines(f"{kind} c={connections}", sides), flush=True)


def _restart(suite: Suite, side: Side) -> None:
    """A fresh gateway process for the side (on the gateways' CPU when they are pinned)."""
    suite.stop_gateway(side.gateway)
    side.gateway = gw.start_gateway(side.backing, 1)
    suite.gateways.append(side.gateway)
    if PINNED:
        _pin(side.gateway.pid, PINNED[1])


PINNED: list[set[int]] = []  # [the load's CPUs, the gateways' CPUs] once --pin applied them


def _pin_all(suite: Suite, sides: list[Side]) -> None:
    """The gateways on the last CPU; this process (so wrk, which it starts), the upstreams on the rest:
    the gateway's CPU per request no longer depends on where the scheduler put it this second."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        log("--pin needs two CPUs: not pinned")
        return
    PINNED[:] = [set(cpus[:-1]), {cpus[-1]}]
    os.sched_setaffinity(0, PINNED[0])
    for upstream in (suite.nginx, suite.paced, suite.relay):
        if upstream is not None:
            _pin(upstream.process.pid, PINNED[0])
    for side in sides:
        _pin(side.gateway.pid, PINNED[1])
    log(f"pinned: gateways on CPU {cpus[-1]}, load and upstreams on {sorted(PINNED[0])}")


def _pin(pid: int, cpus: set[int]) -> None:
    for member in tree(pid):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(member, cpus)


def _warm(suite: Suite, side: Side) -> None:
    """A second of load first: the key cached, the upstream pool open, the code paths run once."""
    wrk.run(
        suite.wrk_path, side.gateway.root + CHAT, side.backing.key, "bench-json", stream=False,
        connections=8, duration_s=1, label="warm-up",
    )  # fmt: skip


def _run_wrk(suite: Suite, side: Side, kind: str, connections: int, seconds: float) -> None:
    before = cpu_seconds(side.gateway.pid)
    result = wrk.run(
        suite.wrk_path, side.gateway.root + CHAT, side.backing.key, f"bench-{kind}", stream=kind == "sse",
        connections=connections, duration_s=seconds, label=side.name,
    )  # fmt: skip
    cpu = (cpu_seconds(side.gateway.pid) - before) / max(1, result.requests) * 1000
    side.samples.setdefault(f"{kind} c={connections}", []).append((result.rps, result.p50_ms, cpu))
    log(f"{kind} c={connections} {side.name}: {result.rps:,.0f} req/s, CPU {cpu:.4f} ms/request")


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
