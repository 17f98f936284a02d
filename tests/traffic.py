"""Steady traffic through a stack's gateways while a test breaks something underneath (a failover, a slot
migration), and a shared stack on a given Redis: what the Redis Cluster and Sentinel tests share."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml
from conftest import gateway_models_file
from provision import create_postgres_database, drop_postgres_database, migrated
from stacks import Stack, poll

HELLO = [{"role": "user", "content": "hi"}]


@contextmanager
def shared_stack(redis_url: str, upstream: Any, blackhole_port: int, workdir: Path) -> Iterator[Stack]:
    """Two gateways on a fresh PostgreSQL database and `redis_url`, torn down after."""
    config = workdir / "bastion.yaml"
    config.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    database = create_postgres_database()
    asyncio.run(migrated(database))
    stack = Stack("shared", database, redis_url, f"test-{secrets.token_hex(4)}:", config, workdir)
    try:
        stack.start()
        stack.start()
        yield stack
    finally:
        stack.stop()
        drop_postgres_database(database)


class Traffic:
    """`threads` clients, each posting one chat completion after another to the stack's gateways in
    turn: `served` holds when each 200 arrived, `refused` the status and body of every other answer."""

    def __init__(self, stack: Stack, key: str, threads: int = 4) -> None:
        self.stack, self.key = stack, key
        self.served: list[float] = []
        self.refused: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, index: int) -> None:
        url = f"{self.stack.gateways[index % len(self.stack.gateways)].base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(timeout=20) as http:
            while not self._stop.is_set():
                answer = http.post(url, json={"model": "m-echo", "messages": HELLO}, headers=headers)
                if answer.status_code == 200:
                    self.served.append(time.monotonic())
                else:
                    self.refused.append((answer.status_code, answer.text))
                    time.sleep(0.05)  # a client's back-off, not a synchronisation

    def wait_for_more(self, count: int, timeout: float = 20) -> None:
        """Until `count` more requests than now have been served."""
        goal = len(self.served) + count
        assert poll(lambda: len(self.served) >= goal, timeout), f"fewer than {count} served in {timeout} s"

    def served_again_after(self, moment: float, timeout: float = 10) -> float:
        """Seconds from `moment` (0.5 s past it, so as not to count answers already on their way) to the
        first request served after it."""
        later = moment + 0.5
        assert poll(lambda: any(t > later for t in self.served), timeout), f"not served again in {timeout} s"
        return next(t for t in self.served if t > later) - moment

    def assert_billed_once(self, account_id: str, credit_nano: int, cost_nano: int) -> None:
        """Every request served has exactly one usage record, the balance is exact to the nano, and
        `bastion ledger check` passes."""
        served = len(self.served)
        records = self.stack.wait_records(account_id, served, timeout=30)
        assert len({r.request_id for r in records}) == served
        assert self.stack.balance(account_id) == credit_nano - served * cost_nano
        assert self.stack.bastion("ledger", "check").returncode == 0
