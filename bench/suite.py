"""The benchmark's sequence: start everything, interleave direct / through-Bastion runs, measure, clean up."""

from __future__ import annotations

import asyncio
import math
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import gateway as gw
from bench import streams, wrk
from bench.procs import cpu_seconds, rss_bytes
from bench.upstreams import Upstream, start_nginx, start_paced

CHAT = "/v1/chat/completions"


@dataclass(frozen=True)
class Plan:
    rounds: int
    duration_s: float
    warmup_s: float
    ttft_requests: dict[int, int]
    held_streams: int
    leak_checkpoints: tuple[int, int]

    @staticmethod
    def for_mode(quick: bool) -> Plan:
        if quick:
            return Plan(2, 2, 1, {1: 12, 16: 64}, 100, (5_000, 20_000))
        return Plan(3, 5, 2, {1: 40, 16: 320}, 1_000, (50_000, 500_000))


@dataclass
class Results:
    mode: str
    started: float = field(default_factory=time.time)
    runs: list[wrk.WrkResult] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "started_unix": self.started,
            "figures": self.figures,
            "runs": [run.as_json() for run in self.runs],
        }


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else float("nan")


class Suite:
    def __init__(self, tools: dict[str, str], plan: Plan, results: Results) -> None:
        self.wrk_path = tools["wrk"]
        self.nginx_path = tools["nginx"]
        self.plan = plan
        self.results = results
        self.workdir = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
        self.nginx: Upstream | None = None
        self.paced: Upstream | None = None
        self.backing: gw.Backing | None = None
        self.gateways: list[gw.Gateway] = []

    # -- lifecycle -------------------------------------------------------------------------------------

    def setup(self) -> None:
        log(f"workdir {self.workdir}")
        self.nginx = start_nginx(self.nginx_path, self.workdir, workers=1)
        self.paced = start_paced(self.workdir)
        log(f"nginx on :{self.nginx.port}, paced server on :{self.paced.port}")
        models = gw.models_file(
            f"{self.nginx.root}/json/v1", f"{self.nginx.root}/sse/v1", f"{self.paced.root}/v1"
        )
        self.backing = gw.new_backing(self.workdir, models)
        gw.provision(self.backing)
        log(f"database {self.backing.database}, redis prefix {self.backing.redis_prefix}")

    def cleanup(self, keep_logs: Path | None = None) -> list[str]:
        """Stop every process, drop the database and Redis keys, remove the workdir (logs copied first)."""
        problems: list[str] = []
        for gateway in self.gateways:
            try:
                gateway.stop()
            except Exception as exc:
                problems.append(f"stopping bastion: {exc}")
        self.gateways.clear()
        for upstream in (self.paced, self.nginx):
            if upstream is not None:
                try:
                    upstream.stop()
                except Exception as exc:
                    problems.append(f"stopping {upstream.name}: {exc}")
        if self.backing is not None:
            problems += gw.teardown(self.backing)
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log_file in [*self.workdir.glob("*.log"), *self.workdir.glob("nginx/*.log")]:
                shutil.copy(log_file, keep_logs / log_file.name)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return problems

    def start_gateway(self, workers: int) -> gw.Gateway:
        assert self.backing is not None
        gateway = gw.start_gateway(self.backing, workers)
        self.gateways.append(gateway)
        log(f"bastion with {workers} worker(s) on :{gateway.port} (pid {gateway.pid})")
        return gateway

    def stop_gateway(self, gateway: gw.Gateway) -> None:
        gateway.stop()
        self.gateways.remove(gateway)

    # -- helpers ---------------------------------------------------------------------------------------

    @property
    def key(self) -> str:
        assert self.backing is not None
        return self.backing.key

    def direct_url(self, kind: str) -> str:
        assert self.nginx is not None
        return f"{self.nginx.root}/{kind}{CHAT}"

    def wrk(self, label: str, url: str, kind: str, connections: int, duration: float) -> wrk.WrkResult:
        result = wrk.run(
            self.wrk_path,
            url,
            self.key,
            f"bench-{kind}",
            stream=kind == "sse",
            connections=connections,
            duration_s=duration,
            label=label,
        )
        self.results.runs.append(result)
        note = ""
        if result.non2xx or result.socket_errors:
            note = f"  non-2xx {result.non2xx}, socket errors {result.socket_errors}"
        log(
            f"  {label:<34} {result.rps:9.0f} req/s  p50 {result.p50_ms:7.3f} ms  "
            f"p99 {result.p99_ms:7.3f} ms{note}"
        )
        return result

    def warm(self, gateway: gw.Gateway) -> None:
        for kind in ("json", "sse"):
            self.wrk(f"warmup direct {kind}", self.direct_url(kind), kind, 8, self.plan.warmup_s)
            self.wrk(f"warmup bastion {kind}", gateway.root + CHAT, kind, 8, self.plan.warmup_s)

    # -- measurements ----------------------------------------------------------------------------------

    def latency_c1(self, gateway: gw.Gateway) -> None:
        log("latency and CPU per request at c=1 (1 worker)")
        direct, through, cpu = [], [], []
        for round_ in range(self.plan.rounds):
            direct.append(
                self.wrk(f"r{round_} direct json c=1", self.direct_url("json"), "json", 1, self.dur)
            )
            before = cpu_seconds(gateway.pid)
            result = self.wrk(f"r{round_} bastion json c=1", gateway.root + CHAT, "json", 1, self.dur)
            spent = cpu_seconds(gateway.pid) - before
            through.append(result)
            cpu.append(spent / result.requests * 1000)
        d50, d99 = median([r.p50_ms for r in direct]), median([r.p99_ms for r in direct])
        b50, b99 = median([r.p50_ms for r in through]), median([r.p99_ms for r in through])
        self.results.figures["c1"] = {
            "direct_p50_ms": d50,
            "direct_p99_ms": d99,
            "bastion_p50_ms": b50,
            "bastion_p99_ms": b99,
            "added_p50_ms": b50 - d50,
            "added_p99_ms": b99 - d99,
            "cpu_ms_per_request": median(cpu),
            "cpu_ms_per_request_rounds": cpu,
            "direct_rps": median([r.rps for r in direct]),
            "bastion_rps": median([r.rps for r in through]),
        }

    def throughput_c32(self, gateway: gw.Gateway) -> None:
        log(f"throughput at c=32 ({gateway.workers} worker(s))")
        figures: dict[str, Any] = {}
        for kind in ("json", "sse"):
            direct, through = [], []
            for round_ in range(self.plan.rounds):
                direct.append(
                    self.wrk(f"r{round_} direct {kind} c=32", self.direct_url(kind), kind, 32, self.dur)
                )
                through.append(
                    self.wrk(
                        f"r{round_} bastion w{gateway.workers} {kind} c=32",
                        gateway.root + CHAT,
                        kind,
                        32,
                        self.dur,
                    )
                )
            figures[kind] = {
                "direct_rps": median([r.rps for r in direct]),
                "direct_p99_ms": median([r.p99_ms for r in direct]),
                "bastion_rps": median([r.rps for r in through]),
                "bastion_p99_ms": median([r.p99_ms for r in through]),
            }
        self.results.figures[f"c32_w{gateway.workers}"] = figures

    def ttft(self, gateway: gw.Gateway) -> None:
        assert self.paced is not None
        log("time to first token on the paced stream")
        figures: dict[str, Any] = {}
        for concurrency, count in self.plan.ttft_requests.items():
            direct, through = [], []
            for _ in range(self.plan.rounds):
                for target, sink in ((self.paced.root + CHAT, direct), (gateway.root + CHAT, through)):
                    samples = asyncio.run(streams.ttft(target, self.key, "bench-paced", concurrency, count))
                    sink.append(median(samples) * 1000)
            figures[f"c{concurrency}"] = {
                "direct_p50_ms": median(direct),
                "bastion_p50_ms": median(through),
                "added_p50_ms": median(through) - median(direct),
                "requests_per_round": count,
            }
            log(
                f"  c={concurrency}: direct {median(direct):.2f} ms, bastion {median(through):.2f} ms, "
                f"added {median(through) - median(direct):.2f} ms"
            )
        self.results.figures["ttft"] = figures

    def held_streams(self, gateway: gw.Gateway) -> None:
        assert self.paced is not None
        count = self.plan.held_streams
        log(f"RSS idle and with {count} streams held open")
        time.sleep(1)
        idle = rss_bytes(gateway.pid)
        release_url = self.paced.root + "/release"

        def release() -> None:
            with urllib.request.urlopen(urllib.request.Request(release_url, method="POST"), timeout=10):
                pass

        held = asyncio.run(
            streams.hold_streams(
                gateway.root + CHAT, self.key, "bench-hold", count, lambda: rss_bytes(gateway.pid), release
            )
        )
        # Per stream actually open: streams refused before their first chunk hold no upstream state.
        per_stream = (held.rss_held - idle) / max(1, held.first_chunks)
        self.results.figures["rss"] = {
            "idle_bytes": idle,
            "held_bytes": held.rss_held,
            "streams": count,
            "per_stream_bytes": per_stream,
            "first_chunks": held.first_chunks,
            "completed": held.completed,
            "errors": len(held.errors),
            "error_samples": held.errors[:5],
            "seconds_to_open_all": held.seconds_to_open,
        }
        log(
            f"  idle {idle / 2**20:.1f} MiB, held {held.rss_held / 2**20:.1f} MiB, "
            f"{per_stream / 1024:.1f} KiB per stream, {len(held.errors)} errors, "
            f"all open after {held.seconds_to_open:.2f} s"
        )

    def leak(self, gateway: gw.Gateway) -> None:
        first, second = self.plan.leak_checkpoints
        log(f"leak check: RSS after {first:,} and {second:,} requests (JSON, c=32, 1 worker)")
        estimate = self.results.figures.get("c32_w1", {}).get("json", {}).get("bastion_rps") or 1000.0
        served = 0
        samples: dict[str, int] = {}
        non2xx = errors = 0
        for checkpoint in (first, second):
            while served < checkpoint:
                duration = min(60.0, max(1.0, math.ceil((checkpoint - served) / estimate)))
                result = self.wrk(
                    f"leak {served:,}/{checkpoint:,}", gateway.root + CHAT, "json", 32, duration
                )
                served += result.requests
                estimate = max(100.0, result.rps)
                non2xx += result.non2xx
                errors += result.socket_errors
            time.sleep(0.5)
            samples[str(checkpoint)] = rss_bytes(gateway.pid)
            log(f"  after {served:,} requests: RSS {samples[str(checkpoint)] / 2**20:.1f} MiB")
        low, high = samples[str(first)], samples[str(second)]
        self.results.figures["leak"] = {
            "checkpoints": [first, second],
            "rss_bytes": samples,
            "requests_served": served,
            "growth_percent": (high - low) / low * 100,
            "non2xx": non2xx,
            "socket_errors": errors,
        }

    @property
    def dur(self) -> float:
        return self.plan.duration_s

    # -- the whole sequence ----------------------------------------------------------------------------

    def run(self) -> None:
        self.setup()
        one = self.start_gateway(1)
        self.results.figures["rss_start_bytes"] = rss_bytes(one.pid)
        self.warm(one)
        self.latency_c1(one)
        # Before the c=32 load grows the allocator's arenas, which would hide the streams' memory.
        self.held_streams(one)
        self.throughput_c32(one)
        self.ttft(one)
        self.leak(one)
        self.stop_gateway(one)

        two = self.start_gateway(2)
        self.warm(two)
        self.throughput_c32(two)
        self.stop_gateway(two)
