"""Shared fixtures: a real mock upstream, and Bastion itself as a `bastion serve` process on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import openai
import pytest
import yaml
from provision import (
    account_with_key,
    create_postgres_database,
    drop_postgres_database,
    migrated,
    run,
    sqlite_url,
)
from upstream import MockUpstream

if TYPE_CHECKING:
    from stacks import Stack

PROVIDER_KEY = "sk-prov-SECRET"
CLIENT_KEY = "qbt_Test0123456789abcdefghijklmnopqrstuvwxyz"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}

# Public model id -> upstream mode of tests/upstream.py (public ids differ so the model restore shows).
UPSTREAM_MODES = [
    "echo",
    "flood",
    "spaced",
    "slow",
    "gated",
    "hang",
    "hang-after-first",
    "error500",
    "garbage",
    "garbage-stream",
    "drop",
    "bad400",
    "vllm400",
    "unauth401",
    "ratelimited429",
    "reasoning",
    "think",
    "fragmented",
    "nodone",
    "late-eof",
    "no-usage",
    "zero-usage",
    "usage-in-final",
    "status:503",
    "status:404",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    base_url: str  # ends in /v1
    root: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_gateway(
    config_path: Path, log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Gateway:
    """`bastion serve` on a free port. Its pid file is beside its log, unless it runs in a directory of
    its own (`cwd`), where it writes the default ./bastion-PORT.pid."""
    port = free_port()
    log = log_path.open("wb")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    own = {"BASTION_PID_FILE": str(log_path.with_suffix(".pid"))} if cwd is None else {}
    process = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "--port", str(port), "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**inherited, "BASTION_TEST_UPSTREAM_KEY": PROVIDER_KEY, **own, **(env or {})},
        cwd=cwd,
    )
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"bastion exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(root + "/healthz", timeout=0.5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"bastion did not become healthy:\n{log_path.read_text()}")
        time.sleep(0.05)
    return Gateway(root + "/v1", root, log_path, process)


def stop_gateway(gateway: Gateway) -> None:
    gateway.process.terminate()
    try:
        gateway.process.wait(10)
    except subprocess.TimeoutExpired:
        gateway.process.kill()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind: a SQLite file, a fresh PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def upstream() -> Iterator[MockUpstream]:
    with MockUpstream() as server:
        yield server


@pytest.fixture(scope="session")
def blackhole_port() -> Iterator[int]:
    """A port whose listen backlog is full: connecting to it times out (on loopback, no routing tricks)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in [*fillers, listener]:
        sock.close()


def gateway_models_file(upstream: MockUpstream, blackhole_port: int) -> dict[str, object]:
    fast = {"connect": 0.5, "read": 0.5}
    up = f"http://127.0.0.1:{upstream.port}/v1"
    providers = [
        {"name": "up", "base_url": up, "api_key": "${BASTION_TEST_UPSTREAM_KEY}", "timeouts": {"read": 10}},
        {"name": "up-fast", "base_url": up, "api_key": "${BASTION_TEST_UPSTREAM_KEY}", "timeouts": fast},
        {"name": "refused", "base_url": f"http://127.0.0.1:{free_port()}/v1", "timeouts": fast},
        {"name": "blackhole", "base_url": f"http://127.0.0.1:{blackhole_port}/v1", "timeouts": fast},
        {"name": "local", "type": "mock"},
        {"name": "paced", "type": "mock", "chunk_delay_ms": 100},
        {"name": "up-root", "base_url": f"http://127.0.0.1:{upstream.port}", "timeouts": {"read": 10}},
    ]
    price = {"input": 1, "output": 2, "image": 0.04, "audio_second": 0.001, "characters": 20, "request": 0.01}

    def model(
        public: str, provider: str, upstream_name: str, category: str = "LLM", **extra: object
    ) -> dict[str, object]:
        deployment = {"provider": provider, "model": upstream_name}
        endpoints = {"endpoints": ["chat", "completions", "responses"]} if category == "LLM" else {}
        return {
            "id": public,
            "category": category,
            "deployments": [deployment],
            "price": price,
            **endpoints,
            **extra,
        }

    models = [model(f"m-{mode}", "up", mode) for mode in UPSTREAM_MODES]
    models += [
        model("fast-hang", "up-fast", "hang"),
        model("fast-hang-after-first", "up-fast", "hang-after-first"),
        model("refused-model", "refused", "echo"),
        model("blackhole-model", "blackhole", "echo"),
        model("same-name", "up", "same-name"),
        model("mock-model", "local", "mock-upstream-name"),
        model("paced", "paced", "paced"),
        model("bge-m3", "up", "bge-m3-upstream", "Embedding"),
        model("emb-fail", "up", "error500", "Embedding"),
        model("img", "up", "img-upstream", "Image"),
        model("img-fail", "up", "error500", "Image"),
        model("whisper", "up", "whisper-upstream", "Transcription"),
        model("whisper-no-duration", "up", "no-duration", "Transcription"),
        model("whisper-fail", "up", "error500", "Transcription"),
        model("tts-voice", "up-root", "riva", "TTS"),
    ]
    return {"providers": providers, "models": models}


@pytest.fixture(scope="session")
def gateway(
    upstream: MockUpstream, blackhole_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("gateway")
    config_path = workdir / "bastion.yaml"
    config_path.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    database = sqlite_url(workdir)
    run(migrated(database))
    run(account_with_key(database, "proxy-tests", 10**18, CLIENT_KEY, rpm=1_000_000, tpm=100_000_000))
    # Breakers stay closed here: these tests hit failing upstreams on purpose, and expect their 502s.
    env = {
        "BASTION_MAX_BODY_BYTES": str(256 * 1024),
        "BASTION_DATABASE_URL": database,
        "BASTION_BREAKER_THRESHOLD": "1000000",
    }
    server = start_gateway(config_path, workdir / "bastion.log", env)
    yield server
    stop_gateway(server)


@pytest.fixture(scope="module", params=["embedded", "shared"])
def stack(
    request: pytest.FixtureRequest,
    upstream: MockUpstream,
    blackhole_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A module's stack, once per storage stack: SQLite + in-process, PostgreSQL + Redis (tests/stacks.py)."""
    from stacks import running_stack  # stacks imports this module

    yield from running_stack(request.param, upstream, blackhole_port, tmp_path_factory.mktemp(request.param))


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20)


@pytest.fixture
def aclient(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20)


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.root, timeout=20, headers=AUTH) as session:
        yield session
