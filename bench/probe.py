"""How fast this machine runs Python right now: one figure to read a run's other figures by.

The benchmark's machine is a shared VM whose speed changes from hour to hour (the same commit, same
command: 4,300 JSON req/s at c=32 one day, 1,100 another), and most of that is not the CPU's clock: a
tight loop runs at the same speed, while code touching many objects, as a request does, slows down when
the host is busy, and most of all right after the process was idle (its caches are gone). The probe
times a fixed piece of such code (300 calls of 300 distinct functions on scattered objects) warm, and
right after 1 ms and 10 ms of sleep, the way a gateway runs after waiting for a client or an upstream.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

CALLS = 300
OBJECTS = 20_000
SAMPLES = 150


def _workload() -> Callable[[], int]:
    rng = random.Random(7)
    objects = [{"k": list(range(i % 17)), "v": str(i) * (i % 13)} for i in range(OBJECTS)]
    functions: list[Callable[[dict[str, Any]], int]] = []
    for i in range(CALLS):
        namespace: dict[str, Any] = {}
        exec(f"def f(d):\n    return len(d.get('v', '')) + len(d['k']) + {i}", namespace)
        functions.append(namespace["f"])
    order = rng.sample(range(OBJECTS), CALLS)
    picked = [objects[i] for i in order]

    def run() -> int:
        total = 0
        for function, obj in zip(functions, picked, strict=True):
            total += function(obj)
        return total

    return run


def _median_us(run: Callable[[], int], idle_s: float, count: int) -> float:
    samples = []
    for _ in range(count):
        if idle_s:
            time.sleep(idle_s)
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


def probe(samples: int = SAMPLES) -> dict[str, float]:
    """Medians in microseconds: warm, and after 1 ms and 10 ms idle (about 2 s)."""
    run = _workload()
    run()
    return {
        "warm_us": _median_us(run, 0.0, samples),
        "after_1ms_idle_us": _median_us(run, 0.001, samples),
        "after_10ms_idle_us": _median_us(run, 0.010, samples),
    }


if __name__ == "__main__":
    print(probe())
