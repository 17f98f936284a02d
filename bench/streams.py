"""Streaming clients: time to first `data:` chunk, and many streams held open at once."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson


def chat_body(model: str) -> bytes:
    return orjson.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Benchmark stream: count slowly please."}],
            "max_tokens": 32,
            "stream": True,
        }
    )


def _session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, force_close=False),
        timeout=aiohttp.ClientTimeout(total=300, sock_connect=30),
    )


async def _one_ttft(session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes) -> float:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}: {(await response.text())[:300]}")
        first: float | None = None
        async for line in response.content:
            if first is None and line.startswith(b"data:"):
                first = time.perf_counter() - started
        if first is None:
            raise RuntimeError(f"{url}: stream without a data: chunk")
        return first


async def ttft(url: str, key: str, model: str, concurrency: int, requests: int) -> list[float]:
    """Seconds to the first data: chunk of `requests` streams, `concurrency` at a time (read to the end)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = chat_body(model)
    samples: list[float] = []
    remaining = requests

    async with _session(concurrency) as session:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                samples.append(await _one_ttft(session, url, headers, body))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


@dataclass
class HeldStreams:
    opened: int
    first_chunks: int
    completed: int
    errors: list[str] = field(default_factory=list)
    rss_held: int = 0
    seconds_to_open: float = 0.0


async def hold_streams(
    url: str, key: str, model: str, count: int, sample_rss: Callable[[], int], release: Callable[[], None]
) -> HeldStreams:
    """Open `count` streams, wait until each has a first chunk, sample RSS, release them, read to the end."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = chat_body(model)
    first_seen = 0
    all_first = asyncio.Event()
    finished = 0
    errors: list[str] = []
    failed_before_first = 0

    def note_first() -> None:
        nonlocal first_seen
        first_seen += 1
        if first_seen + failed_before_first >= count:
            all_first.set()

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal finished, failed_before_first
        got_first = False
        try:
            async with session.post(url, data=body, headers=headers) as response:
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
                saw_done = False
                async for line in response.content:
                    if line.startswith(b"data:"):
                        if not got_first:
                            got_first = True
                            note_first()
                        if line.strip() == b"data: [DONE]":
                            saw_done = True
                if not saw_done:
                    raise RuntimeError("stream ended without [DONE]")
                finished += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
            if not got_first:
                failed_before_first += 1
                if first_seen + failed_before_first >= count:
                    all_first.set()

    started = time.perf_counter()
    async with _session(count + 16) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(count)]
        try:
            await asyncio.wait_for(all_first.wait(), timeout=120)
        except TimeoutError:
            errors.append(f"timeout: only {first_seen} of {count} streams had a first chunk after 120 s")
        opened_after = time.perf_counter() - started
        rss = sample_rss()
        await asyncio.to_thread(release)
        await asyncio.gather(*tasks)
    return HeldStreams(
        opened=count,
        first_chunks=first_seen,
        completed=finished,
        errors=errors,
        rss_held=rss,
        seconds_to_open=opened_after,
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
