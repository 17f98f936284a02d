"""Run wrk with post.lua and parse its summary (requests, req/s, latency distribution, errors)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "post.lua"
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


class WrkError(RuntimeError):
    pass


@dataclass
class WrkResult:
    label: str
    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise WrkError(f"cannot read wrk duration {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def parse(output: str, label: str, connections: int, duration_s: float) -> WrkResult:
    requests = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not requests or not rps:
        raise WrkError(f"wrk output without a summary ({label}):\n{output}")
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)", output, re.MULTILINE))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        label=label,
        connections=connections,
        duration_s=duration_s,
        requests=int(requests.group(1)),
        rps=float(rps.group(1)),
        p50_ms=_ms(percentiles["50"]) if "50" in percentiles else float("nan"),
        p99_ms=_ms(percentiles["99"]) if "99" in percentiles else float("nan"),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )


def run(
    wrk: str,
    url: str,
    key: str,
    model: str,
    *,
    stream: bool,
    connections: int,
    duration_s: float,
    label: str,
) -> WrkResult:
    threads = 1 if connections == 1 else 2
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(SCRIPT),
        url,
        "--",
        key,
        model,
        "1" if stream else "0",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60)
    if done.returncode != 0:
        raise WrkError(f"wrk failed ({done.returncode}) for {label}:\n{done.stdout}\n{done.stderr}")
    result = parse(done.stdout, label, connections, duration_s)
    if result.requests == 0:
        raise WrkError(f"wrk made no request for {label}:\n{done.stdout}")
    return result
