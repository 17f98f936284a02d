"""The measurements: each runs against a started gateway and stores its figures in the results.

Direct (nginx or the paced server) and through-Bastion runs alternate (A B A B ...) and the figures are
medians of the rounds; CPU time is read from /proc for every process of the gateway's tree.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis
import uvloop

from bench import cli_start as cli_start_times
from bench import dashboard as dashboard_bench
from bench import gateway as gw
from bench import rawstream, wrk
from bench.payloads import chat_body
from bench.procs import cpu_seconds, rss_bytes
from bench.suite import CHAT, CLUSTER_LOADS, Suite, log, median


def cli_start(suite: Suite) -> None:
    log(f"CLI start time: --version, --help, keys list on SQLite ({suite.plan.cli_runs} starts each)")
    found = cli_start_times.measure(suite.workdir, suite.plan.cli_runs)
    suite.results.figures["cli"] = found
    log(
        f"  --version {found['version_ms']:.0f} ms, --help {found['help_ms']:.0f} ms, keys list"
        f" {found['keys_list_ms']:.0f} ms (python alone {found['python_ms']:.0f} ms, with the store's"
        f" imports {found['keys_list_floor_ms']:.0f} ms)"
    )


def rss_of(gateway: gw.Gateway) -> int:
    return rss_bytes(gateway.pid)


def latency_c1(suite: Suite, gateway: gw.Gateway) -> None:
    log("latency and CPU per request at c=1 (1 worker)")
    direct, through, cpu = [], [], []
    for round_ in range(suite.plan.rounds):
        direct.append(suite.wrk(f"r{round_} direct json c=1", suite.direct_url("json"), "json", 1, suite.dur))
        before = cpu_seconds(gateway.pid)
        result = suite.wrk(f"r{round_} bastion json c=1", gateway.root + CHAT, "json", 1, suite.dur)
        cpu.append((cpu_seconds(gateway.pid) - before) / result.requests * 1000)
        through.append(result)
    d50, d99 = median([r.p50_ms for r in direct]), median([r.p99_ms for r in direct])
    b50, b99 = median([r.p50_ms for r in through]), median([r.p99_ms for r in through])
    suite.results.figures["c1"] = {
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


def throughput_c32(suite: Suite, gateway: gw.Gateway) -> None:
    log(f"throughput at c=32 ({gateway.workers} worker(s))")
    figures: dict[str, Any] = {}
    for kind in ("json", "sse"):
        direct, through, cpu = [], [], []
        for round_ in range(suite.plan.rounds):
            direct.append(
                suite.wrk(f"r{round_} direct {kind} c=32", suite.direct_url(kind), kind, 32, suite.dur)
            )
            before = cpu_seconds(gateway.pid)
            result = suite.wrk(
                f"r{round_} bastion w{gateway.workers} {kind} c=32", gateway.root + CHAT, kind, 32, suite.dur
            )
            cpu.append((cpu_seconds(gateway.pid) - before) / result.requests * 1000)
            through.append(result)
        figures[kind] = {
            "direct_rps": median([r.rps for r in direct]),
            "direct_p99_ms": median([r.p99_ms for r in direct]),
            "bastion_rps": median([r.rps for r in through]),
            "bastion_p99_ms": median([r.p99_ms for r in through]),
            "cpu_ms_per_request": median(cpu),
        }
    suite.results.figures[f"c32_w{gateway.workers}"] = figures


def ttft(suite: Suite, gateway: gw.Gateway) -> None:
    """Time to the first `data:` of the paced stream (first chunk at 50 ms), with a raw-socket client:
    direct, through a bare TCP relay (the floor of one more hop), through Bastion, interleaved."""
    assert suite.paced is not None and suite.relay is not None
    log("time to first token on the paced stream")
    body = chat_body("bench-paced")
    targets = {"direct": suite.paced.root, "relay": suite.relay.root, "bastion": gateway.root}
    figures: dict[str, Any] = {}
    for concurrency, count in suite.plan.ttft_requests.items():
        samples: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(suite.plan.rounds):
            for name, root in targets.items():
                run = uvloop.run(rawstream.ttft(root + CHAT, suite.key, body, concurrency, count))
                samples[name].append(median(run) * 1000)
        direct, relay, through = (median(samples[name]) for name in targets)
        figures[f"c{concurrency}"] = {
            "direct_p50_ms": direct,
            "relay_p50_ms": relay,
            "bastion_p50_ms": through,
            "added_p50_ms": through - direct,
            "relay_added_p50_ms": relay - direct,
            "requests_per_round": count,
        }
        log(
            f"  c={concurrency}: direct {direct:.2f} ms, bare relay +{relay - direct:.2f} ms, "
            f"bastion {through:.2f} ms, added {through - direct:.2f} ms"
        )
    suite.results.figures["ttft"] = figures


def _single_redis_pids() -> list[int]:
    """The shared Redis server's process (for its CPU time), when it says which it is."""
    try:
        client = redis.Redis.from_url(gw.REDIS_URL, socket_timeout=2)
        try:
            return [int(client.info("server")["process_id"])]
        finally:
            client.close()
    except (redis.RedisError, KeyError, ValueError):
        return []


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def redis_cluster(suite: Suite) -> None:
    """JSON at c=1 and c=32 and SSE at c=32 through two fresh 1-worker gateways, one on the single Redis
    and one on a 3-master Redis Cluster started here, their runs interleaved (Redis, cluster, cluster,
    Redis, ...); medians of the rounds. Same database, key prefix and key: on the cluster the account's
    scripts go to the master owning its slot group, and the ledger reads all 16 streams on every master."""
    log("Redis Cluster: the same loads through a gateway on one Redis and one on a 3-master cluster")
    cluster = suite.start_cluster()
    single = suite.start_gateway(1, name="redis")
    other = suite.start_gateway(1, redis_url=cluster.url, name="cluster")
    for name, gateway in (("redis", single), ("cluster", other)):
        for kind in ("json", "sse"):
            suite.wrk(f"warmup bastion {name} {kind}", gateway.root + CHAT, kind, 8, suite.plan.warmup_s)
    sides = {"redis": (single, _single_redis_pids()), "cluster": (other, cluster.pids)}
    figures: dict[str, Any] = {"masters": len(cluster.ports), "redis": {}, "cluster": {}}
    duration = suite.plan.cluster_duration_s
    for kind, connections in CLUSTER_LOADS:
        load = f"{kind}_c{connections}"
        runs: dict[str, list[tuple[wrk.WrkResult, float, float]]] = {name: [] for name in sides}
        for round_ in range(suite.plan.rounds):
            for name in sides if round_ % 2 == 0 else reversed(sides):
                gateway, redis_pids = sides[name]
                before, redis_before = cpu_seconds(gateway.pid), _cpu(redis_pids)
                label = f"r{round_} bastion {name} {kind} c={connections}"
                result = suite.wrk(label, gateway.root + CHAT, kind, connections, duration)
                cpu = (cpu_seconds(gateway.pid) - before) / result.requests * 1000
                redis_cpu = (_cpu(redis_pids) - redis_before) / result.requests * 1000
                runs[name].append((result, cpu, redis_cpu if redis_pids else math.nan))
        for name, found in runs.items():
            figures[name][load] = {
                "rps": median([r.rps for r, _, _ in found]),
                "p50_ms": median([r.p50_ms for r, _, _ in found]),
                "p99_ms": median([r.p99_ms for r, _, _ in found]),
                "cpu_ms_per_request": median([cpu for _, cpu, _ in found]),
                "redis_cpu_ms_per_request": median([cpu for _, _, cpu in found]),
            }
        alone, spread = figures["redis"][load], figures["cluster"][load]
        log(
            f"  {kind} c={connections}: Redis {alone['rps']:.0f} req/s p50 {alone['p50_ms']:.3f} ms, "
            f"cluster {spread['rps']:.0f} req/s p50 {spread['p50_ms']:.3f} ms "
            f"({(spread['rps'] / alone['rps'] - 1) * 100:+.1f} % req/s)"
        )
    # The account's state, its key's and its group's ledger stream: proof the gateway ran on the cluster.
    figures["keys_on_cluster"] = cluster.keys()
    if not figures["keys_on_cluster"]:
        raise RuntimeError("the gateway on the Redis Cluster left no key there: it did not use it")
    suite.stop_gateway(other)
    suite.stop_gateway(single)
    suite.stop_cluster()
    suite.results.figures["cluster"] = figures


class Holder:
    """`python -m bench.hold ...` in its own process: connections or streams held open meanwhile."""

    def __init__(self, *args: str, timeout: float = 300) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = os.environ | {"PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.hold", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.opened = self._line(timeout)

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.process.kill()
            raise RuntimeError(f"bench.hold {self.process.args[3:]} reported nothing within {timeout:.0f} s")
        return dict(json.loads(line))

    def finish(self, timeout: float = 180) -> dict[str, Any]:
        """Let go (streams are read to their end first); what the holder reports last."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            return self._line(timeout)
        finally:
            self.process.wait(10)


def _release_paced(suite: Suite) -> None:
    assert suite.paced is not None
    request = urllib.request.Request(suite.paced.root + "/release", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def held_streams(suite: Suite, gateway: gw.Gateway) -> None:
    count = suite.plan.held_streams
    log(f"RSS idle and with {count} streams held open")
    time.sleep(1)
    idle = rss_of(gateway)
    holder = Holder("streams", gateway.root, suite.key, "bench-hold", str(count))
    opened = holder.opened
    held = rss_of(gateway)
    _release_paced(suite)
    finished = holder.finish()
    errors = opened["error_count"] + (opened["open"] - finished["completed"])
    per_stream = (held - idle) / max(1, opened["open"])
    suite.results.figures["rss"] = {
        "idle_bytes": idle,
        "held_bytes": held,
        "streams": count,
        "open": opened["open"],
        "completed": finished["completed"],
        "per_stream_bytes": per_stream,
        "errors": errors,
        "error_samples": opened["errors"],
        "seconds_to_open_all": opened["seconds"],
    }
    log(
        f"  idle {idle / 2**20:.1f} MiB, held {held / 2**20:.1f} MiB, "
        f"{per_stream / 1024:.1f} KiB per stream, {opened['open']} open, "
        f"{finished['completed']} completed, {errors} errors"
    )


def _json_probe(suite: Suite, gateway: gw.Gateway, label: str) -> dict[str, float]:
    """CPU per request, latency and throughput of JSON requests, at c=1 and c=32."""
    figures: dict[str, float] = {}
    for connections in (1, 32):
        cpu, p50, p99, rps = [], [], [], []
        for round_ in range(suite.plan.rounds):
            before = cpu_seconds(gateway.pid)
            result = suite.wrk(
                f"r{round_} {label} json c={connections}", gateway.root + CHAT, "json", connections, suite.dur
            )
            cpu.append((cpu_seconds(gateway.pid) - before) / result.requests * 1000)
            p50.append(result.p50_ms)
            p99.append(result.p99_ms)
            rps.append(result.rps)
        figures |= {
            f"c{connections}_cpu_ms_per_request": median(cpu),
            f"c{connections}_p50_ms": median(p50),
            f"c{connections}_p99_ms": median(p99),
            f"c{connections}_rps": median(rps),
        }
    figures["rss_bytes"] = rss_of(gateway)
    return figures


def scaling(suite: Suite, gateway: gw.Gateway) -> None:
    """The same JSON load alone, beside idle keep-alive connections, and beside held streams."""
    idle_count, stream_count = suite.plan.idle_connections, suite.plan.scaling_streams
    log(f"scaling: JSON load alone, beside {idle_count} idle connections, beside {stream_count} streams")
    figures: dict[str, Any] = {"baseline": _json_probe(suite, gateway, "alone")}
    holder = Holder("idle", gateway.root, str(idle_count))
    figures["idle_connections"] = {"count": idle_count, "open": holder.opened["open"]}
    figures["idle_connections"] |= _json_probe(suite, gateway, f"beside {idle_count} idle")
    figures["idle_connections"]["still_open"] = holder.finish()["still_open"]
    holder = Holder("streams", gateway.root, suite.key, "bench-hold", str(stream_count))
    figures["held_streams"] = {"count": stream_count, "open": holder.opened["open"]}
    figures["held_streams"] |= _json_probe(suite, gateway, f"beside {stream_count} streams")
    _release_paced(suite)
    figures["held_streams"]["completed"] = holder.finish()["completed"]
    base = figures["baseline"]
    for name in ("idle_connections", "held_streams"):
        for connections in (1, 32):
            key = f"c{connections}_cpu_ms_per_request"
            figures[name][f"c{connections}_cpu_change_percent"] = (figures[name][key] / base[key] - 1) * 100
        row = figures[name]
        log(
            f"  {name}: {row['open']} open, CPU/request c=1 {row['c1_cpu_change_percent']:+.1f} %, "
            f"c=32 {row['c32_cpu_change_percent']:+.1f} %"
        )
    suite.results.figures["scaling"] = figures


def leak(suite: Suite, gateway: gw.Gateway) -> None:
    first, second = suite.plan.leak_checkpoints
    log(f"leak check: RSS after {first:,} and {second:,} requests (JSON, c=32, 1 worker)")
    estimate = suite.results.figures.get("c32_w1", {}).get("json", {}).get("bastion_rps") or 1000.0
    served = 0
    samples: dict[str, int] = {}
    non2xx = errors = 0
    for checkpoint in (first, second):
        while served < checkpoint:
            duration = min(60.0, max(1.0, math.ceil((checkpoint - served) / estimate)))
            result = suite.wrk(f"leak {served:,}/{checkpoint:,}", gateway.root + CHAT, "json", 32, duration)
            served += result.requests
            estimate = max(100.0, result.rps)
            non2xx += result.non2xx
            errors += result.socket_errors
        time.sleep(0.5)
        samples[str(checkpoint)] = rss_of(gateway)
        log(f"  after {served:,} requests: RSS {samples[str(checkpoint)] / 2**20:.1f} MiB")
    low, high = samples[str(first)], samples[str(second)]
    suite.results.figures["leak"] = {
        "checkpoints": [first, second],
        "rss_bytes": samples,
        "requests_served": served,
        "growth_percent": (high - low) / low * 100,
        "non2xx": non2xx,
        "socket_errors": errors,
    }


def dashboard(suite: Suite) -> None:
    """The dashboard's pages over a seeded ledger, on PostgreSQL and SQLite (bench/dashboard.py)."""
    settings = suite.plan.dashboard
    log(f"dashboard: {settings.records:,} usage records, PostgreSQL and SQLite")
    found = dashboard_bench.run(dashboard_bench.BACKENDS, settings, suite.workdir / "dashboard")
    suite.results.figures["dashboard"] = found
