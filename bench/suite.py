"""The benchmark's sequence: start everything, run the measurements (bench/figures.py), clean up."""

from __future__ import annotations

import math
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import gateway as gw
from bench import wrk
from bench.dashboard import Settings as DashboardSettings
from bench.probe import probe
from bench.redis_cluster import RedisCluster
from bench.upstreams import Upstream, start_nginx, start_paced, start_relay

CHAT = "/v1/chat/completions"
CLUSTER_LOADS = (("json", 1), ("json", 32), ("sse", 32))  # the Redis Cluster run's: c1's and c32's
LOG_TAIL_BYTES = 1 << 20  # of each log kept with the results (a full run's access log is ~300 MB)


@dataclass(frozen=True)
class Plan:
    rounds: int
    duration_s: float
    warmup_s: float
    ttft_requests: dict[int, int]
    held_streams: int
    leak_checkpoints: tuple[int, int]
    idle_connections: int
    scaling_streams: int
    dashboard: DashboardSettings  # records seeded, requests per page
    cluster_duration_s: float  # of each wrk run of the Redis Cluster step (2 sides x 3 loads a round)
    cli_runs: int  # starts of each CLI command timed (bench/cli_start.py)

    @staticmethod
    def for_mode(quick: bool) -> Plan:
        dashboard = DashboardSettings.for_mode(quick)
        if quick:
            return Plan(2, 2, 1, {1: 12, 16: 64}, 100, (5_000, 20_000), 1_000, 200, dashboard, 1, 5)
        return Plan(3, 5, 2, {1: 60, 16: 480}, 1_000, (50_000, 500_000), 10_000, 2_000, dashboard, 5, 15)


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
        self.wrk_path = tools.get("wrk", "wrk")  # absent when only the dashboard step runs
        self.nginx_path = tools.get("nginx", "nginx")
        self.plan = plan
        self.results = results
        self.workdir = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
        self.nginx: Upstream | None = None
        self.paced: Upstream | None = None
        self.relay: Upstream | None = None  # a bare TCP relay in front of the paced server
        self.backing: gw.Backing | None = None
        self.gateways: list[gw.Gateway] = []
        self.cluster: RedisCluster | None = None  # the Redis Cluster run's, while it runs

    # -- lifecycle -------------------------------------------------------------------------------------

    def setup(self) -> None:
        log(f"workdir {self.workdir}")
        self.nginx = start_nginx(self.nginx_path, self.workdir, workers=1)
        self.paced = start_paced(self.workdir)
        self.relay = start_relay(self.workdir, self.paced)
        log(
            f"nginx on :{self.nginx.port}, paced server on :{self.paced.port}, "
            f"bare relay on :{self.relay.port}"
        )
        models = gw.models_file(
            f"{self.nginx.root}/json/v1", f"{self.nginx.root}/sse/v1", f"{self.paced.root}/v1"
        )
        self.backing = gw.new_backing(self.workdir, models)
        gw.provision(self.backing)
        log(f"database {self.backing.database}, redis prefix {self.backing.redis_prefix}")

    def cleanup(self, keep_logs: Path | None = None) -> list[str]:
        """Stop every process, drop the database and Redis keys, remove the workdir (log tails kept).
        A second Ctrl-C or SIGTERM while this runs is ignored: an interrupted cleanup leaks processes."""
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._cleanup(keep_logs)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _cleanup(self, keep_logs: Path | None) -> list[str]:
        problems: list[str] = []
        for gateway in self.gateways:
            try:
                gateway.stop()
            except Exception as exc:
                problems.append(f"stopping bastion: {exc}")
        self.gateways.clear()
        if self.cluster is not None:
            problems += self.cluster.stop()  # its data (the gateway's keys there) goes with it
            self.cluster = None
        for upstream in (self.relay, self.paced, self.nginx):
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
                _copy_tail(log_file, keep_logs / log_file.name)
            for log_file in self.workdir.glob("redis-cluster/*.log"):
                _copy_tail(log_file, keep_logs / f"cluster-{log_file.name}")
            for log_file in self.workdir.glob("dashboard/*/*.log"):  # the dashboard step's gateways
                _copy_tail(log_file, keep_logs / f"dashboard-{log_file.parent.name}-{log_file.name}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        return problems

    def start_gateway(self, workers: int, redis_url: str = gw.REDIS_URL, name: str = "") -> gw.Gateway:
        assert self.backing is not None
        gateway = gw.start_gateway(self.backing, workers, redis_url, name)
        self.gateways.append(gateway)
        on = "" if redis_url == gw.REDIS_URL else f" on {redis_url}"
        log(f"bastion with {workers} worker(s) on :{gateway.port} (pid {gateway.pid}){on}")
        return gateway

    def stop_gateway(self, gateway: gw.Gateway) -> None:
        gateway.stop()
        self.gateways.remove(gateway)

    def start_cluster(self) -> RedisCluster:
        """A 3-master Redis Cluster on free ports (bench/redis_cluster.py), stopped by cleanup() at the
        latest."""
        started = time.monotonic()
        self.cluster = RedisCluster(self.workdir / "redis-cluster")
        self.cluster.start()
        took = time.monotonic() - started
        log(f"redis cluster of {len(self.cluster.ports)} masters, {self.cluster.url} ({took:.1f} s)")
        return self.cluster

    def stop_cluster(self) -> None:
        if self.cluster is not None:
            for problem in self.cluster.stop():
                log(f"cluster: {problem}")
            self.cluster = None

    # -- helpers ---------------------------------------------------------------------------------------

    @property
    def key(self) -> str:
        assert self.backing is not None
        return self.backing.key

    @property
    def dur(self) -> float:
        return self.plan.duration_s

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
            f"  {label:<40} {result.rps:9.0f} req/s  p50 {result.p50_ms:7.3f} ms  "
            f"p99 {result.p99_ms:7.3f} ms{note}"
        )
        return result

    def warm(self, gateway: gw.Gateway) -> None:
        for kind in ("json", "sse"):
            self.wrk(f"warmup direct {kind}", self.direct_url(kind), kind, 8, self.plan.warmup_s)
            self.wrk(f"warmup bastion {kind}", gateway.root + CHAT, kind, 8, self.plan.warmup_s)

    # -- the whole sequence ----------------------------------------------------------------------------

    def run(self, only: frozenset[str] | None = None) -> None:
        """Every measurement, or only the named ones (FIGURES) while working on one of them."""
        from bench import figures

        def wanted(name: str) -> bool:
            return only is None or name in only

        self.results.figures["probe"] = {"start": probe()}
        if wanted("cli"):
            figures.cli_start(self)  # first: nothing else is running yet
        if any(wanted(name) for name in GATEWAY_FIGURES):
            self._gateway_figures(wanted)
        if wanted("dashboard"):
            # Last: it seeds its own databases (a million rows in the full run) and starts its own
            # gateways, which would disturb the figures above.
            figures.dashboard(self)
        self.results.figures["probe"]["end"] = probe()

    def _one_worker_figures(self, wanted: Callable[[str], bool]) -> None:
        from bench import figures

        one = self.start_gateway(1)
        self.results.figures["rss_start_bytes"] = figures.rss_of(one)
        self.warm(one)
        if wanted("c1"):
            figures.latency_c1(self, one)
        if wanted("held"):
            # Before the c=32 load grows the allocator's arenas, which would hide the streams' memory.
            figures.held_streams(self, one)
        if wanted("c32"):
            figures.throughput_c32(self, one)
        if wanted("ttft"):
            figures.ttft(self, one)
        if wanted("scaling"):
            figures.scaling(self, one)
        if wanted("leak"):
            figures.leak(self, one)
        self.stop_gateway(one)

    def _gateway_figures(self, wanted: Callable[[str], bool]) -> None:
        from bench import figures

        self.setup()
        if any(wanted(name) for name in ONE_WORKER_FIGURES):
            self._one_worker_figures(wanted)
        if wanted("cluster"):
            # Two fresh gateways of its own (one Redis, the cluster) once `one` is gone: same age, same
            # warm-up, nothing else running.
            figures.redis_cluster(self)
        if wanted("w2"):
            two = self.start_gateway(2)
            self.warm(two)
            figures.throughput_c32(self, two)
            self.stop_gateway(two)


ONE_WORKER_FIGURES = ("c1", "held", "c32", "ttft", "scaling", "leak")  # on one 1-worker gateway, in order
# On the suite's gateways; `cluster`: c1's and c32's loads through a gateway on one Redis and one on a
# Redis Cluster, interleaved.
GATEWAY_FIGURES = (*ONE_WORKER_FIGURES, "cluster", "w2")
FIGURES = ("cli", *GATEWAY_FIGURES, "dashboard")


def _copy_tail(source: Path, target: Path) -> None:
    with source.open("rb") as reader:
        reader.seek(max(0, source.stat().st_size - LOG_TAIL_BYTES))
        target.write_bytes(reader.read())
