"""A forced stop settles first: two Ctrl-Cs during streams end them at once, each billed for what it sent.

uvicorn's second SIGINT is a forced exit: it skips the wait for requests and the application's shutdown,
so a stream's settlement (and, embedded, the ledger's last write) never ran. Bastion takes the second
signal itself: every request in flight is ended (upstream closed, an error event to the client, the
settlement written with what was served), then the shutdown continues as a graceful one would. A third
signal is uvicorn's forced exit.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from stacks import Stack, running_stack
from upstream import MockUpstream

from bastion.money import NANO_PER_USD

STREAMS = 10
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(params=["embedded", "shared"])
def stack(
    request: pytest.FixtureRequest, upstream: MockUpstream, blackhole_port: int, tmp_path: Path
) -> Iterator[Stack]:
    yield from running_stack(request.param, upstream, blackhole_port, tmp_path)


def test_two_sigints_during_streams_bill_each_stream_once_for_what_it_sent(stack: Stack) -> None:
    account_id, _, key = stack.account(10 * NANO_PER_USD)
    gateway = stack.gateway
    started = threading.Barrier(STREAMS + 1, timeout=20)
    received: list[list[str]] = [[] for _ in range(STREAMS)]

    def stream(index: int) -> None:
        body = {"model": "m-slow", "messages": HELLO, "stream": True}
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.stream(
            "POST", gateway.base_url + "/chat/completions", json=body, headers=headers
        ) as answer:
            lines = answer.iter_lines()
            for line in lines:
                if line.startswith("data:"):
                    received[index].append(line)
                    if "tick 1 " in line:
                        break
            started.wait()
            try:
                received[index].extend(line for line in lines if line.startswith("data:"))
            except httpx.HTTPError:
                received[index].append("(cut)")

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(STREAMS)]
    for thread in threads:
        thread.start()
    started.wait()
    gateway.process.send_signal(signal.SIGINT)
    time.sleep(0.3)  # "it seemed slow"
    signalled = time.monotonic()
    gateway.process.send_signal(signal.SIGINT)
    for thread in threads:
        thread.join(20)
    assert gateway.process.wait(15) in (0, -signal.SIGINT, 130)
    assert time.monotonic() - signalled < 5
    for lines in received:
        assert any("tick 1 " in line for line in lines)
        assert '"code":"service_unavailable"' in lines[-1] and "shutting down" in lines[-1], lines[-1]
    records = stack.wait_records(account_id, STREAMS)
    assert all(r.cost_nano > 0 and r.status == 503 for r in records), records
    assert stack.balance(account_id) == 10 * NANO_PER_USD - sum(r.cost_nano for r in records)
    log = gateway.log_text()
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]
    stack.gateways.clear()  # stopped
    check = stack.bastion("ledger", "check")
    assert check.returncode == 0, check.stdout + check.stderr
