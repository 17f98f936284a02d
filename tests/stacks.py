"""The two storage stacks the billing suite runs on, each a real `bastion serve` process.

embedded: SQLite file + in-process limits and credit (the default).
shared:   PostgreSQL (a fresh database) + Redis (a fresh key prefix), as in production.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import openai
import redis
import yaml
from conftest import Gateway, gateway_models_file, start_gateway, stop_gateway
from provision import (
    REDIS_URL,
    account_with_key,
    create_postgres_database,
    drop_postgres_database,
    migrated,
    run,
    sqlite_url,
)

from bastion.db.store import Store, UsageRow

T = TypeVar("T")


@dataclass
class Stack:
    name: str
    database: str
    redis_url: str | None
    redis_prefix: str
    config_path: Path
    workdir: Path
    gateways: list[Gateway] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)  # for every process, the CLI's included
    direct_database: str | None = None  # what the tests read and write through, when Bastion's is a pooler

    @property
    def gateway(self) -> Gateway:
        return self.gateways[0]

    def env(self) -> dict[str, str]:
        env = {
            "BASTION_DATABASE_URL": self.database,
            "BASTION_LEDGER_FLUSH_SECONDS": "0.2",
            "BASTION_BREAKER_THRESHOLD": "1000000",
            "BASTION_CONFIG": str(self.config_path),  # what the CLI checks `keys create --models` against
        }
        if self.redis_url:
            env |= {"BASTION_REDIS_URL": self.redis_url, "BASTION_REDIS_PREFIX": self.redis_prefix}
        return env | self.settings

    def start(self, extra_env: dict[str, str] | None = None) -> Gateway:
        index = len(self.gateways)
        gateway = start_gateway(
            self.config_path, self.workdir / f"gateway{index}.log", self.env() | (extra_env or {})
        )
        self.gateways.append(gateway)
        return gateway

    def stop(self) -> None:
        for gateway in self.gateways:
            stop_gateway(gateway)
        self.gateways.clear()

    def client(self, key: str, gateway: Gateway | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=(gateway or self.gateway).base_url, api_key=key, max_retries=0, timeout=20
        )

    def aclient(self, key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.gateway.base_url, api_key=key, max_retries=0, timeout=30)

    def account(self, usd_nano: int, **key_options: Any) -> tuple[str, str, str]:
        """A fresh account with this credit and one key: (account id, key id, key)."""
        name = f"acct-{secrets.token_hex(4)}"
        return run(account_with_key(self.direct_database or self.database, name, usd_nano, **key_options))

    def bastion(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The CLI with this stack's settings (and `env` over them)."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        return subprocess.run(
            [sys.executable, "-m", "bastion", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=inherited | self.env() | (env or {}),
            cwd=cwd,
        )

    def with_store(self, operation: Callable[[Store], Any]) -> Any:
        async def go() -> Any:
            store = Store.from_url(self.direct_database or self.database)
            try:
                return await operation(store)
            finally:
                await store.close()

        return run(go())

    def balance(self, account_id: str) -> int:
        async def read(store: Store) -> int:
            return (await store.account(account_id)).balance_nano

        return int(self.with_store(read))

    def records(self, account_id: str) -> list[UsageRow]:
        async def read(store: Store) -> list[UsageRow]:
            return await store.usage(account=account_id, limit=10_000)

        return list(self.with_store(read))

    def wait_records(self, account_id: str, count: int, timeout: float = 10) -> list[UsageRow]:
        """Usage records are written in batches: poll until `count` are in (and no more)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.records(account_id)
            if len(rows) >= count or time.monotonic() > deadline:
                assert len(rows) == count, f"expected {count} usage records, found {len(rows)}"
                return rows
            time.sleep(0.05)


def running_stack(name: str, upstream: Any, blackhole_port: int, workdir: Path) -> Iterator[Stack]:
    """A stack with one gateway on the tests' models file, torn down after (a fixture's body)."""
    config = workdir / "bastion.yaml"
    config.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    built = make_stack(name, config, workdir)
    built.start()
    yield built
    drop_stack(built)


def make_stack(name: str, config_path: Path, workdir: Path) -> Stack:
    if name == "embedded":
        database = sqlite_url(workdir)
        redis_url = None
    else:
        database = create_postgres_database()
        redis_url = REDIS_URL
    run(migrated(database))
    return Stack(name, database, redis_url, f"test-{secrets.token_hex(4)}:", config_path, workdir)


def drop_stack(stack: Stack) -> None:
    stack.stop()
    if stack.name == "shared":
        drop_postgres_database(stack.database)
    if stack.redis_url:
        delete_redis_keys(stack.redis_url, stack.redis_prefix)


def delete_redis_keys(url: str, prefix: str) -> None:
    """The stack's keys go with it: the machine's Redis is shared with later runs (and CI's)."""
    client = redis.Redis.from_url(url)
    try:
        names = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(names), 500):
            client.delete(*names[start : start + 500])
    finally:
        client.close()


def poll(check: Callable[[], T | None], timeout: float, step: float = 0.05) -> T | None:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


async def gather(*coroutines: Any) -> list[Any]:
    return await asyncio.gather(*coroutines, return_exceptions=True)
