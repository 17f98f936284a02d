"""The benchmark's own parts: wrk output parsing, the nginx answers, the report, the stream client.

The whole benchmark runs in CI as `python -m bench --quick` (.ci/run); these pin down the pieces whose
mistakes would silently skew its figures.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import compare, probe, rawstream, report, wrk
from bench.payloads import chat_body, completion_json, sse_body
from bench.suite import Results
from bench.upstreams import _nginx_quote, _split_events

ROOT = Path(__file__).resolve().parent.parent

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:8000/v1/chat/completions
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.94ms    3.10ms  61.32ms   95.12%
    Req/Sec     2.31k   150.00     2.50k    70.00%
  Latency Distribution
     50%    6.80ms
     75%    7.40ms
     90%    8.31ms
     99%   11.28ms
  23066 requests in 5.00s, 23.54MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:   4612.50
Transfer/sec:      4.71MB
"""


def test_wrk_summary_is_read_with_units_and_errors() -> None:
    result = wrk.parse(WRK_OUTPUT, "label", 32, 5)
    assert (result.requests, result.rps) == (23066, 4612.5)
    assert (result.p50_ms, result.p99_ms) == (6.8, 11.28)
    assert (result.non2xx, result.socket_errors) == (7, 3)
    micro = wrk.parse(WRK_OUTPUT.replace("6.80ms", "460.00us").replace("11.28ms", "1.20s"), "l", 1, 5)
    assert (micro.p50_ms, micro.p99_ms) == (0.46, 1200.0)


def test_wrk_output_without_a_summary_is_an_error() -> None:
    with pytest.raises(wrk.WrkError):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused", "l", 1, 5)


def test_the_fixed_answers_are_what_the_benchmark_claims() -> None:
    answer = json.loads(completion_json())
    assert answer["object"] == "chat.completion" and answer["usage"]["total_tokens"] == 40
    assert 600 <= len(completion_json()) <= 700
    body = sse_body()
    assert 6 * 1024 <= len(body) < 7 * 1024 and body.endswith("data: [DONE]\n\n")
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert json.loads(events[-2][6:])["usage"]["completion_tokens"] == 16
    pieces = _split_events(body)
    assert "".join(pieces) == body and all(len(_nginx_quote(p)) <= 3000 for p in pieces)
    with pytest.raises(ValueError):
        _nginx_quote("costs $5")


def test_report_marks_each_target() -> None:
    results = Results("quick")
    results.figures = {
        "c1": {"added_p50_ms": 0.4, "added_p99_ms": 2.5, "cpu_ms_per_request": 0.41},
        "c32_w2": {"json": {"bastion_rps": 5000.0}, "sse": {"bastion_rps": 2400.0}},
        "ttft": {"c1": {"added_p50_ms": 0.9}, "c16": {"added_p50_ms": 1.5}},
        "rss": {"per_stream_bytes": 12_000.0, "errors": 0},
        "leak": {"checkpoints": [5, 20], "rss_bytes": {"5": 100, "20": 103}, "growth_percent": 3.0},
    }
    met = {row.figure: row.met for row in report.rows(results.figures)}
    assert met["p50 latency @ c=1, 1 worker (ms)"] is True
    assert met["p99 latency @ c=1, 1 worker (ms)"] is False
    assert met["CPU per request @ c=1, 1 worker (ms)"] is True
    assert met["JSON req/s @ c=32, 2 worker(s)"] is True
    assert met["streams/s @ c=32, 2 worker(s)"] is False
    assert met["time to first token p50 @ c=1, paced stream (ms)"] is True
    assert met["time to first token p50 @ c=16, paced stream (ms)"] is False
    assert met["RSS per open stream (KiB)"] is True
    assert met["RSS growth 5 -> 20 requests"] is True
    assert "| p99 latency @ c=1, 1 worker (ms) |" in report.markdown(results)
    assert "Machine probe" not in report.markdown(results)
    results.figures["probe"] = {
        "start": {"warm_us": 101.2, "after_1ms_idle_us": 190.0, "after_10ms_idle_us": 655.4},
        "end": {"warm_us": 99.0, "after_1ms_idle_us": 180.0, "after_10ms_idle_us": 600.0},
    }
    assert "start: warm 101 us, after 1 ms idle 190 us, after 10 ms idle 655 us; end: warm 99 us" in (
        report.markdown(results)
    )


def test_the_machine_probe_times_the_same_work_warm_and_after_idling() -> None:
    run = probe._workload()
    assert run() == run() > 0  # the same work every time
    figures = probe.probe(samples=3)
    assert set(figures) == {"warm_us", "after_1ms_idle_us", "after_10ms_idle_us"}
    assert all(value > 0 for value in figures.values())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def paced() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.paced", str(port)], cwd=ROOT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


def test_the_stream_client_sees_the_paced_first_token_at_50_ms(paced: str) -> None:
    url = paced + "/v1/chat/completions"
    samples = asyncio.run(rawstream.ttft(url, "key", chat_body("paced"), 2, 6))
    assert len(samples) == 6
    assert all(0.049 <= s < 0.5 for s in samples)  # the upstream's pause, never the whole stream


def test_the_bare_relay_passes_a_stream_through_unchanged(paced: str) -> None:
    port = _free_port()
    upstream_port = paced.rsplit(":", 1)[1]
    process = subprocess.Popen([sys.executable, "-m", "bench.relay", str(port), upstream_port], cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        samples = asyncio.run(rawstream.ttft(url, "key", chat_body("paced"), 2, 4))
        assert len(samples) == 4 and all(0.049 <= s < 0.5 for s in samples)
    finally:
        process.terminate()
        process.wait(10)


def test_compare_alternates_the_order_of_the_sides_and_takes_medians() -> None:
    runs: list[str] = []
    values = {"direct": iter([1.0, 9.0, 2.0]), "a": iter([5.0, 1.0, 3.0]), "b": iter([7.0, 8.0, 0.0])}

    def run(name: str) -> float:
        runs.append(name)
        return next(values[name])

    medians = compare._interleaved(3, ["direct", "a", "b"], run)
    assert runs == ["direct", "a", "b", "a", "b", "direct", "b", "direct", "a"]
    assert medians == {"direct": 2.0, "a": 3.0, "b": 7.0}


def test_compare_pairs_each_round_and_says_when_a_change_is_outside_the_noise() -> None:
    from bench.paired import paired_change

    reference = [1.00, 1.10, 0.95, 1.05, 1.00, 0.90, 1.20, 1.00]  # the machine drifting by +-15 %
    same = paired_change([r * 1.001 for r in reference], reference)
    assert same.verdict() == "worse" and abs(same.median - 0.001) < 1e-9  # exact pairs: a tight interval
    noisy = paired_change(
        [r * f for r, f in zip(reference, [1.04, 0.97, 1.02, 0.99, 1.03, 0.96, 1.01, 0.98], strict=True)],
        reference,
    )
    assert noisy.verdict() == "within noise" and noisy.low < 0 < noisy.high
    slower = paired_change(
        [r * f for r, f in zip(reference, [1.05, 1.06, 1.04, 1.07, 1.05, 1.06, 1.05, 1.04], strict=True)],
        reference,
    )
    assert slower.verdict() == "worse" and slower.low >= 0.04 and slower.high <= 0.07
    assert slower.verdict(lower_is_better=False) == "better"
    with pytest.raises(ValueError):
        paired_change([1.0], [1.0, 2.0])


def test_compare_reads_the_recorded_baseline(tmp_path: Path) -> None:
    path = tmp_path / "baseline"
    path.write_text("# why it moved\n\n5ea0266  the tree before hardening\n")
    assert compare.baseline_ref(path) == "5ea0266"
    assert (
        subprocess.run(
            ["git", "-C", str(ROOT), "cat-file", "-e", compare.baseline_ref() + "^{commit}"]
        ).returncode
        == 0
    )


def test_readme_gives_the_benchmark_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "python -m bench" in readme and "--quick" in readme


def test_the_dashboard_benchmark_seeds_serves_checks_and_explains() -> None:
    """bench/dashboard.py end to end at a tiny scale (SQLite, 2,000 records, one request a page): the
    seeded ledger balances, every page shows what the database holds, the plans are read. It removes its
    own temporary directory (the database, the server's log)."""
    from bench import dashboard, dashboard_report
    from bench.dashboard_pages import Page, Timing, card_is, rows_are

    figures = dashboard.run(["sqlite"], dashboard.Settings(2_000, 1, 1))
    found = figures["backends"]["sqlite"]
    assert found["seed"]["records"] == 2_000 and found["seed"]["rollup_rows"] > 0
    assert len(found["pages"]) >= 15 and all(len(p["samples_ms"]) == 1 for p in found["pages"])
    assert dashboard.broken(figures) == []
    plans = [p for p in found["plans"] if p["dashboard"]]
    assert plans and not any(p["full_scan"] for p in plans)
    text = dashboard_report.markdown(figures, "test")
    assert "| SQLite | overview, 30 days |" in text and "EXPLAIN QUERY PLAN" in text
    met = {row.figure: row.met for row in report.dashboard_rows({"dashboard": figures})}
    assert met["dashboard, SQLite, 2,000 records: keys (ms)"] is None  # no target for that page

    wrong = Page("log", "owner", "/", 100.0, rows_are(["req_a", "req_b"], more=False))
    timing = Timing("log", "owner", "/", 100.0, [1.0, 2.0], problems=["rows differ"])
    assert timing.met is False and wrong.check('<tr data-request-id="req_a">') is not None
    assert card_is("spend-30d", "$1.00")('<div data-figure="spend-30d">x</div>') is not None


def test_the_redis_cluster_run_is_a_named_gateway_measurement() -> None:
    from bench.suite import CLUSTER_LOADS, FIGURES, GATEWAY_FIGURES, Plan

    assert "cluster" in GATEWAY_FIGURES and "cluster" in FIGURES
    assert CLUSTER_LOADS == (("json", 1), ("json", 32), ("sse", 32))  # c1's and c32's loads
    assert Plan.for_mode(True).cluster_duration_s <= 2  # --quick: a few seconds per figure


def test_report_puts_the_cluster_figures_beside_the_single_redis_ones() -> None:
    def side(rps: float) -> dict[str, dict[str, float]]:
        load = {"rps": rps, "p50_ms": 0.5, "p99_ms": 2.0, "cpu_ms_per_request": 0.4}
        return {"json_c1": load | {"redis_cpu_ms_per_request": 0.1}, "json_c32": load, "sse_c32": load}

    results = Results("quick")
    results.figures = {"cluster": {"masters": 3, "redis": side(1000.0), "cluster": side(900.0)}}
    found = {row.figure: row for row in report.cluster_rows(results.figures)}
    assert len(found) == 6
    single = found["JSON req/s @ c=1, 1 worker, Bastion (Redis)"]
    spread = found["JSON req/s @ c=1, 1 worker, Bastion (Redis Cluster)"]
    assert (single.bastion, spread.bastion) == ("1,000", "900")
    assert "p50 / p99 0.500 / 2.000 ms" in spread.value and "(Redis 0.100)" in spread.value
    assert spread.value.endswith("-10.0 % req/s vs Redis") and "vs Redis" not in single.value
    assert "streams/s @ c=32, 1 worker, Bastion (Redis Cluster)" in found
    text = report.markdown(results)
    assert "| JSON req/s @ c=32, 1 worker, Bastion (Redis Cluster) |" in text
    assert "3-master Redis Cluster" in text
    assert report.cluster_rows({}) == []


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_the_benchmark_starts_a_three_master_cluster_and_stops_it(tmp_path: Path) -> None:
    from bench.redis_cluster import RedisCluster, cluster_info

    cluster = RedisCluster(tmp_path / "cluster").start()
    try:
        assert len(cluster.ports) == 3 and all(port + 10_000 < 65_536 for port in cluster.ports)
        assert cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in cluster.ports)
        for port in cluster.ports:
            info = cluster_info(port)
            assert (info["cluster_state"], info["cluster_slots_ok"]) == ("ok", "16384")
            assert info["cluster_size"] == "3"
        assert cluster.keys() == 0
        pids = cluster.pids
    finally:
        problems = cluster.stop()
    assert problems == [] and cluster.nodes == []
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_report_has_the_cli_start_times_against_their_target() -> None:
    from bench.suite import FIGURES

    assert FIGURES[0] == "cli"  # `--only cli`, and first in a full run (nothing else running yet)
    results = Results("quick")
    results.figures = {
        "cli": {
            "runs": 5,
            "version_ms": 70.0,
            "help_ms": 95.0,
            "keys_list_ms": 480.0,
            "python_ms": 30.0,
            "keys_list_floor_ms": 455.0,
        }
    }
    found = {row.figure: row for row in report.cli_rows(results.figures)}
    version = found["CLI start: bastion --version (ms)"]
    assert (version.direct, version.bastion, version.value, version.met) == ("30", "70", "+40", True)
    assert found["CLI start: bastion --help (ms)"].met is True
    listing = found["CLI start: bastion keys list, SQLite (ms)"]
    assert (listing.direct, listing.value, listing.target, listing.met) == ("455", "+25", "< 300 ms", False)
    text = report.markdown(results)
    assert "| CLI start: bastion keys list, SQLite (ms) | 455 | 480 | +25 | < 300 ms | NOT met |" in text
    assert "the median of 5" in text
    assert report.cli_rows({}) == []


def test_the_cli_start_times_are_measured_on_a_sqlite_database_it_removes(tmp_path: Path) -> None:
    from bench import cli_start

    figures = cli_start.measure(tmp_path, runs=1)
    assert set(figures) == {
        "runs",
        "version_ms",
        "help_ms",
        "keys_list_ms",
        "python_ms",
        "keys_list_floor_ms",
    }
    assert all(value > 0 for value in figures.values())
    assert figures["keys_list_ms"] > figures["python_ms"]  # it imports far more than Python alone
    assert list(tmp_path.iterdir()) == []  # the database went with its directory
