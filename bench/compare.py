"""`python -m bench.compare REF [--rounds N]`: this working tree against git REF, side by side.

Figures from two benchmark runs are not comparable on a shared VM: the machine's own noise between runs
is larger than most changes. This runs both gateways at once instead (REF from a temporary worktree,
each on its own database and Redis prefix, so neither one's ledger or caches touch the other's) and
interleaves their rounds with direct ones, changing the order every round: time to first token on the
paced stream at c=1 and c=16, then wrk at c=1 and c=32 (JSON and SSE) with CPU per request.
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
from pathlib import Path

import uvloop

from bench import gateway as gw
from bench import rawstream, wrk
from bench.payloads import chat_body
from bench.procs import cpu_seconds
from bench.suite import CHAT, Plan, Results, Suite, log
from bench.tools import ToolError, ensure_tools

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("ref", help="the git commit, branch or tag to compare this working tree with")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per figure (default 4)")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument(
        "--only",
        choices=("ttft", "wrk"),
        help="only time to first token, or only the wrk runs (default: both)",
    )
    args = parser.parse_args(argv)
    try:
        tools = ensure_tools()
    except ToolError as exc:
        print(f"bench.compare: {exc}", file=sys.stderr)
        return 2
    worktree = Path(tempfile.mkdtemp(prefix="bastion-compare-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.ref], check=True
    )
    suite = Suite(tools, Plan.for_mode(True), Results("compare"))
    other: gw.Backing | None = None
    gateways: list[gw.Gateway] = []
    try:
        suite.setup()
        ours = suite.start_gateway(1)
        other = gw.new_backing(suite.workdir / "ref", _models(suite), env={"PYTHONPATH": str(worktree)})
        gw.provision(other)
        theirs = gw.start_gateway(other, 1)
        gateways.append(theirs)
        log(f"{args.ref} on :{theirs.port}, this tree on :{ours.port}")
        sides = {"ref": (theirs, other.key), "tree": (ours, suite.key)}
        if args.only != "wrk":
            _ttft(suite, sides, args.rounds)
        if args.only != "ttft":
            for kind, connections in (("json", 1), ("json", 32), ("sse", 32)):
                _wrk(suite, sides, kind, connections, args.rounds, args.seconds)
    finally:
        for gateway in gateways:
            gateway.stop()
        if other is not None:
            gw.teardown(other)
        suite.cleanup()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
        shutil.rmtree(worktree, ignore_errors=True)
    return 0


def _models(suite: Suite) -> dict[str, object]:
    assert suite.nginx is not None and suite.paced is not None
    return gw.models_file(
        f"{suite.nginx.root}/json/v1", f"{suite.nginx.root}/sse/v1", f"{suite.paced.root}/v1"
    )


def _interleaved(rounds: int, names: list[str], run: Callable[[str], float]) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        order = names if round_ % 2 == 0 else [names[0], *reversed(names[1:])]
        for name in order:
            samples[name].append(run(name))
    return {name: statistics.median(values) for name, values in samples.items()}


def _ttft(suite: Suite, sides: dict[str, tuple[gw.Gateway, str]], rounds: int) -> None:
    assert suite.paced is not None
    body = chat_body("bench-paced")
    roots = {"direct": (suite.paced.root, suite.key)} | {n: (g.root, k) for n, (g, k) in sides.items()}
    for concurrency, count in ((1, 40), (16, 480)):

        def run(name: str, concurrency: int = concurrency, count: int = count) -> float:
            root, key = roots[name]
            return statistics.median(uvloop.run(rawstream.ttft(root + CHAT, key, body, concurrency, count)))

        medians = _interleaved(rounds, list(roots), run)
        direct = medians["direct"]
        print(
            f"time to first token c={concurrency}: ref +{(medians['ref'] - direct) * 1000:.3f} ms, "
            f"this tree +{(medians['tree'] - direct) * 1000:.3f} ms (direct {direct * 1000:.2f} ms)",
            flush=True,
        )


def _wrk(
    suite: Suite,
    sides: dict[str, tuple[gw.Gateway, str]],
    kind: str,
    connections: int,
    rounds: int,
    seconds: float,
) -> None:
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in sides}

    def run(name: str) -> float:
        gateway, key = sides[name]
        before = cpu_seconds(gateway.pid)
        result = wrk.run(
            suite.wrk_path, gateway.root + CHAT, key, f"bench-{kind}", stream=kind == "sse",
            connections=connections, duration_s=seconds, label=name,
        )  # fmt: skip
        cpu = (cpu_seconds(gateway.pid) - before) / max(1, result.requests) * 1000
        figures[name].append((result.rps, result.p50_ms, cpu))
        return result.rps

    _interleaved(rounds, list(sides), run)
    for name, rows in figures.items():
        rps, p50, cpu = (statistics.median(row[i] for row in rows) for i in range(3))
        print(
            f"{kind} c={connections} {'ref' if name == 'ref' else 'this tree'}: {rps:,.0f} req/s, "
            f"p50 {p50:.3f} ms, CPU {cpu:.3f} ms/request",
            flush=True,
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
