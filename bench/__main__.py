"""`python -m bench [--quick] [--out DIR]`: run the benchmark, print the table, write JSON and markdown."""

from __future__ import annotations

import argparse
import contextlib
import resource
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from bench.dashboard import broken
from bench.report import write_report
from bench.suite import FIGURES, GATEWAY_FIGURES, Plan, Results, Suite, log
from bench.tools import ToolError, ensure_tools

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def raise_fd_limit(wanted: int = 65_536) -> None:
    """1,000 held streams need ~3 descriptors each across client, gateway and upstream."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (about 1-2 minutes), for CI")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results directory ({DEFAULT_OUT})")
    parser.add_argument(
        "--only",
        type=lambda text: frozenset(text.split(",")),
        help=f"comma-separated measurements to run, of {','.join(FIGURES)} (default: all)",
    )
    args = parser.parse_args(argv)
    if args.only and not args.only <= set(FIGURES):
        parser.error(f"--only: unknown {','.join(sorted(args.only - set(FIGURES)))}")

    try:
        # The dashboard step needs neither nginx nor wrk.
        gateways = args.only is None or bool(args.only & set(GATEWAY_FIGURES))
        tools = ensure_tools() if gateways else {}
    except ToolError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    raise_fd_limit()
    signal.signal(signal.SIGTERM, on_sigterm)

    mode = "quick" if args.quick else "full"
    results = Results(mode)
    suite = Suite(tools, Plan.for_mode(args.quick), results)
    started = time.monotonic()
    status = 0
    try:
        suite.run(args.only)
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    except Exception as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        status = 1
    finally:
        problems = suite.cleanup(keep_logs=args.out / f"logs-{mode}")
        for problem in problems:
            log(f"cleanup: {problem}")
    if status == 0:
        results.figures["elapsed_s"] = time.monotonic() - started
        table = write_report(results, args.out)
        print(table)
        log(f"done in {results.figures['elapsed_s']:.0f} s; results in {args.out}")
        # A dashboard page that answered wrongly fails the run (its timing would mean nothing).
        for problem in broken(results.figures["dashboard"]) if "dashboard" in results.figures else []:
            log(f"BROKEN dashboard page: {problem}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
