"""`python -m bench.checkpoint_cost`: what the running-usage checkpoints cost Redis.

On a Redis server of its own (no other client in its command statistics), one instance's checkpoint
write (checkpoint.lua) with N streams' checkpoints of real size, repeated; the server's own CPU time
per call (INFO commandstats: evalsha usec) and per stream. A stream is checkpointed at most once per
BASTION_CHECKPOINT_SECONDS, so per stream-second the cost is the per-stream figure; the settlement's
extra work for a checkpointed stream (an HGET and an HDEL in settle.lua) is measured the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime

from bastion.billing.checkpoints import SWEPT_KEPT_MS, Checkpoint
from bastion.billing.live import RedisLive, reservation
from bastion.db.store import UsageRow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _checkpoint(n: int) -> Checkpoint:
    hold = reservation(
        "key_0123456789abcdef01234567",
        "acct_0123456789abcdef01234567",
        f"req_{n:024x}",
        8_192_000,
        4_100,
        1_000_000,
    )
    record = UsageRow(
        f"req_{n:024x}",
        hold.account_id,
        hold.key_id,
        "Llama-3.1-8B-Instruct",
        "chat",
        12,
        211,
        437_000,
        500,
        2_150,
        True,
        datetime.now(UTC),
        client_request_id="c0ffee-0123456789",
        recovered=True,
    )
    return Checkpoint(record.request_id, hold, record.cost_nano, 223, "total", record)


async def _usec(live: RedisLive) -> tuple[int, int]:
    info = await live.redis.info("commandstats")
    stats = info.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(stats["calls"]), int(stats["usec"])


async def measure(port: int, streams: list[int], calls: int) -> None:
    live = RedisLive(f"redis://127.0.0.1:{port}/0", "bench-ckpt:")
    await live.start()
    try:
        layout, head = live.layout, live.layout.heads[0]
        keys = [layout.runners(head), layout.running(head, "host:1:space:1")]
        print(f"{'streams':>8} {'us per write':>13} {'us per stream':>14} {'bytes per stream':>17}")
        for n in streams:
            pairs = []
            for i in range(n):
                c = _checkpoint(i)
                pairs += [c.hold.member, c.encoded()]
            args = ["host:1:space:1", SWEPT_KEPT_MS, n, *pairs]
            await live.redis.config_resetstat()
            for _ in range(calls):
                await live.channel.evalsha(live.checkpoint_script, keys, args)
            count, usec = await _usec(live)
            per_write = usec / count
            size = sum(len(p) for p in pairs) / max(n, 1)
            print(f"{n:>8} {per_write:>13.1f} {per_write / n:>14.2f} {size:>17.0f}")
        await live.redis.delete(*keys)
    finally:
        await live.close()


def gateway_cost(streams: int, rounds: int = 200) -> float:
    """The gateway's CPU per checkpoint: `Checkpointer.collect()` over `streams` streams that each
    streamed something since the last one (a bill and a JSON record each), in microseconds."""
    from types import SimpleNamespace

    from bastion.auth import Principal
    from bastion.billing import Outcome, Ticket
    from bastion.billing.admission import CreditAdmission
    from bastion.billing.checkpoints import Checkpointer, StoreSink
    from bastion.billing.memory_live import MemoryLive
    from bastion.billing.meters import TokenMeter
    from bastion.billing.running import Running
    from bastion.config.models_file import ModelConfig

    model = ModelConfig.model_validate(
        {
            "id": "m",
            "category": "LLM",
            "deployments": [{"provider": "p", "model": "u"}],
            "price": {"input": 1, "output": 2},
        }
    )
    principal = Principal("key_0123456789abcdef", "acct_0123456789abcdef", "qbt_AbCd1234", None, 600, 10**6)
    admission = CreditAdmission(MemoryLive(), None, 4096)  # type: ignore[arg-type]
    meter = TokenMeter()
    running = Running()
    relays = []
    for n in range(streams):
        hold = reservation(principal.key_id, principal.account_id, f"req_{n:024x}", 8_192_000, 4_100, 10**6)
        metered = meter.reserve({"messages": [{"role": "user", "content": "hello there"}]}, model, 4096, 60)
        route = SimpleNamespace(model=model)
        ticket = Ticket(principal, route, f"req_{n:024x}", "chat", [], hold, metered, meter, time.monotonic())  # type: ignore[arg-type]
        relay = SimpleNamespace(text_chars=0, usage=None)
        relays.append(relay)
        running.requests[ticket.request_id] = (
            ticket,
            Outcome(200, on_final=lambda o: None, stream=relay),
            None,
        )  # type: ignore[assignment]
    checkpointer = Checkpointer(running, admission, StoreSink(None, "i", 10.0), 1.0, 2.0)  # type: ignore[arg-type]
    spent = 0.0
    for _ in range(rounds):
        for relay in relays:
            relay.text_chars += 40
        started = time.perf_counter()
        due, _ = checkpointer.collect(list(running.requests))
        for checkpoint in due:
            checkpoint.encoded()
        spent += time.perf_counter() - started
    return spent / rounds / streams * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.checkpoint_cost", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--calls", type=int, default=2000, help="writes per figure (default 2000)")
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            asyncio.run(measure(port, [1, 32, 256, 1000], args.calls))
            print(f"gateway CPU per checkpoint (a bill, its record, encoded): {gateway_cost(256):.1f} us")
        finally:
            server.terminate()
            server.wait(5)


if __name__ == "__main__":
    main()
