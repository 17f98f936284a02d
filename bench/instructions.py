"""Instructions per request: the gateway under valgrind's callgrind, which counts what the CPU executes
rather than timing it, so the figure does not move with this VM's speed.

CPU time per request moves by 10-30 % between two back-to-back 5 s runs of the same code here (the
machine's speed changes within the minute), so a 3 % change hides in the noise of dozens of rounds.
An instruction count does not care how fast the machine is this second: the same code serving the same
requests executes the same instructions, give or take what depends on timing.

How one side is measured (`measure`): its gateway is started under callgrind with instrumentation off
(at native speed, apart from valgrind's start), warmed with uninstrumented requests (the key cached, the
upstream pool open, every code path run once), then instrumented. Each window's counters are zeroed,
the load runs, the counters are dumped and read:

- **idle**: no request for `IDLE_SECONDS`: what the background (ledger steps, metrics flush, database
  poll) costs per second, subtracted from the load windows in proportion to their length;
- **json c=1**: `REQUESTS` chat completions one at a time, paced (`PACE_PER_SECOND`), so every request
  is handled alone, as at concurrency 1;
- **sse c=1**: as many streamed completions (nginx's 6 KB event stream), paced the same way;
- **json c=32**: bursts of 32 requests at once, once a second: the batched path (pipelined Redis
  commands, access lines written together).

Python's hash seed is fixed (PYTHONHASHSEED=0) for every side: a random seed moves the count of the
same code by about a per cent from process to process. The database poll is put off
(BASTION_SYNC_SECONDS=3600): whether its three queries fell into a window moved the figure by 1-2 %.
So is the ledger writer (BASTION_LEDGER_FLUSH_SECONDS=3600; the records wait in Redis and are written
at the stop): its work per record depends on the rate (at 20 requests a second one batch a record, under
wrk one per 5-30 records), and its periodic work (the claim of abandoned entries every 5 s: ~2 M
instructions through redis-py at 5ea0266) made the idle rate, subtracted in proportion, wrong by up to
0.1 M instructions a request: 5ea0266's idle window ran 2.4 M instructions a second, the tree's 0.9 M.
So are the running-usage checkpoints (BASTION_CHECKPOINT_SECONDS=3600): one per stream in flight per
second whatever the request rate, so their share of a request's count would depend on how much slower
valgrind makes the stream; their cost is a stream-second's, measured by bench/checkpoint_cost.py (and in
wrk's CPU). (With them on or off, the tree's count moved by less than the spread between runs.)
What is counted is the request path: the request, its admission, forwarding, settlement and access line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench import gateway as gw
from bench.procs import free_port, stop, wait_http
from bench.rawstream import request_bytes

IDLE_SECONDS = 4.0
REQUESTS = 200
PACE_PER_SECOND = 20.0
BURSTS = 8
BURST_SIZE = 32
WARM_REQUESTS = 300  # uninstrumented, then a few instrumented ones (valgrind translates code once)
INSTRUMENTED_WARM = 20
FIGURES = ("json c=1", "sse c=1", "json c=32")
# What the kernel does for a request is no instruction callgrind sees: its reads and writes (socket
# system calls: the client's, the upstream's, Redis's, the log's) are counted beside, from /proc.
SYSCALLS = tuple(f"{figure} syscalls" for figure in FIGURES)
_HEAD_END = b"\r\n\r\n"
_CHUNKED_END = b"\r\n0\r\n\r\n"


def body(model: str, stream: bool) -> bytes:
    """The wrk runs' body (bench/post.lua)."""
    return (
        '{"model":"' + model + '","messages":[{"role":"system","content":"You are terse."},'
        '{"role":"user","content":"Benchmark request: reply with a short fixed answer please."}],'
        '"max_tokens":16,"temperature":0,"stream":' + ("true" if stream else "false") + "}"
    ).encode()


@dataclass
class Callgrind:
    """A gateway running under callgrind, and the counters it dumps."""

    process: subprocess.Popen[bytes]
    port: int
    out: Path  # callgrind writes out.1, out.2... on each dump
    dumps: int = 0

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.process.pid)], check=True, capture_output=True, timeout=120
        )

    def window(self) -> None:
        self.control("--zero")

    def read(self) -> int:
        """The instructions executed since the last `window()`."""
        self.control("--dump")
        self.dumps += 1
        dump = self.out.with_name(f"{self.out.name}.{self.dumps}")
        deadline = time.monotonic() + 60
        while not dump.exists() or "totals:" not in dump.read_text(errors="replace")[-4096:]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"callgrind wrote no {dump.name}")
            time.sleep(0.1)
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1])
        raise RuntimeError(f"no totals in {dump}")

    def io_calls(self) -> int:
        """Read and write system calls so far (/proc/PID/io: syscr + syscw)."""
        fields = dict(
            line.split(": ") for line in Path(f"/proc/{self.process.pid}/io").read_text().splitlines()
        )
        return int(fields["syscr"]) + int(fields["syscw"])

    def stop(self) -> None:
        stop(self.process, grace=30)


def start(backing: gw.Backing, name: str) -> Callgrind:
    port = free_port()
    out = backing.workdir / f"callgrind-{name}.out"
    log = backing.workdir / f"callgrind-{name}.log"
    # The database poll (3 queries every 2 s) is no part of a request: a window it falls into, or not,
    # moved the figure by 1-2 %. (A ref older than the setting ignores it.)
    env = backing.env(1, name=name) | {
        "PYTHONHASHSEED": "0",
        "BASTION_SYNC_SECONDS": "3600",
        "BASTION_LEDGER_FLUSH_SECONDS": "3600",
        "BASTION_CHECKPOINT_SECONDS": "3600",
        "BASTION_HEARTBEAT_WINDOW_SECONDS": "10800",
    }
    (backing.workdir / f"metrics-{name}").mkdir(exist_ok=True)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        *gw.serve_command(port, 1),
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=backing.workdir,
            start_new_session=True,
        )
    running = Callgrind(process, port, out)
    try:
        wait_http(running.root + "/healthz", process, log, timeout=180)
    except BaseException:
        running.stop()
        raise
    return running


async def _send(stream: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> None:
    """One request on a keep-alive connection, its answer read to the end (a length, or chunked)."""
    reader, writer = stream
    writer.write(request)
    head = await reader.readuntil(_HEAD_END)
    if head[9:12] != b"200":
        raise RuntimeError(f"HTTP {head[9:12].decode()}: {head[:300]!r}")
    lowered = head.lower()
    if b"transfer-encoding: chunked" in lowered:
        await reader.readuntil(_CHUNKED_END)
        return
    length = int(lowered.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    await reader.readexactly(length)


async def _paced(root: str, key: str, payload: bytes, count: int) -> None:
    host, port, request = request_bytes(root + "/v1/chat/completions", key, payload)
    stream = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        for n in range(count):
            await asyncio.sleep(max(0.0, began + n / PACE_PER_SECOND - loop.time()))
            await _send(stream, request)
    finally:
        stream[1].close()


async def _bursts(root: str, key: str, payload: bytes) -> None:
    host, port, request = request_bytes(root + "/v1/chat/completions", key, payload)
    streams = [await asyncio.open_connection(host, port) for _ in range(BURST_SIZE)]
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        for n in range(BURSTS):
            await asyncio.sleep(max(0.0, began + n - loop.time()))
            await asyncio.gather(*(_send(stream, request) for stream in streams))
    finally:
        for _, writer in streams:
            writer.close()


def measure(backing: gw.Backing, name: str) -> dict[str, float]:
    """Instructions per request of each figure (FIGURES), for one fresh gateway process."""
    running = start(backing, name)
    try:
        root, key = running.root, backing.key
        json_body, sse_body = body("bench-json", False), body("bench-sse", True)
        asyncio.run(_paced_fast(root, key, json_body, sse_body))
        running.control("--instr=on")
        asyncio.run(_paced(root, key, json_body, INSTRUMENTED_WARM))
        asyncio.run(_paced(root, key, sse_body, INSTRUMENTED_WARM))

        running.window()
        started, calls = time.monotonic(), running.io_calls()
        time.sleep(IDLE_SECONDS)
        idle_per_second = running.read() / (time.monotonic() - started)
        idle_calls_per_second = (running.io_calls() - calls) / (time.monotonic() - started)
        figures: dict[str, float] = {}

        def window(figure: str, load: object, requests: int) -> None:
            running.window()
            began, calls = time.monotonic(), running.io_calls()
            asyncio.run(load)  # type: ignore[arg-type]
            total = running.read()
            seconds = time.monotonic() - began
            figures[figure] = max(0.0, total - idle_per_second * seconds) / requests
            io_calls = running.io_calls() - calls - idle_calls_per_second * seconds
            figures[f"{figure} syscalls"] = max(0.0, io_calls) / requests

        window("json c=1", _paced(root, key, json_body, REQUESTS), REQUESTS)
        window("sse c=1", _paced(root, key, sse_body, REQUESTS), REQUESTS)
        window("json c=32", _bursts(root, key, json_body), BURSTS * BURST_SIZE)
        return figures
    finally:
        running.stop()
        keep = os.environ.get("BENCH_CALLGRIND_DIR")  # the dumps, for callgrind_annotate
        for dump in running.out.parent.glob(f"{running.out.name}*"):
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                dump.rename(Path(keep) / f"{name}-{dump.name}")
            else:
                dump.unlink(missing_ok=True)


async def _paced_fast(root: str, key: str, json_body: bytes, sse_body: bytes) -> None:
    """The uninstrumented warm-up: as fast as the gateway answers."""
    host, port, _ = request_bytes(root + "/v1/chat/completions", key, json_body)
    stream = await asyncio.open_connection(host, port)
    try:
        for n in range(WARM_REQUESTS):
            payload = sse_body if n % 2 else json_body
            await _send(stream, request_bytes(root + "/v1/chat/completions", key, payload)[2])
    finally:
        stream[1].close()


def available() -> bool:
    return (
        all(
            subprocess.run(["which", tool], capture_output=True).returncode == 0
            for tool in ("valgrind", "callgrind_control")
        )
        and os.name == "posix"
    )
