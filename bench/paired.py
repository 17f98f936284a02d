"""Paired comparisons of interleaved rounds: how far one side's figure is from the reference's, and how
sure the run is of it.

On a shared VM the machine's speed drifts from minute to minute (bench/probe.py), far more than most
changes cost, so two sides are never compared through their separate medians alone: each round runs
every side back to back, and each round gives one ratio (side / reference), in which the drift of that
minute cancels. The change is the median of those ratios; its interval is a bootstrap of that median
(resampling the rounds, a fixed seed so a run's report is reproducible from its samples). A change whose
interval excludes zero stands outside the run's own noise.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

BOOTSTRAP_SAMPLES = 4000
CONFIDENCE = 0.90
SEED = 20261206


@dataclass(frozen=True, slots=True)
class Change:
    """side / reference - 1, as a fraction: its median over the rounds, and its interval."""

    median: float
    low: float
    high: float
    rounds: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def verdict(self, lower_is_better: bool = True) -> str:
        if self.low <= 0 <= self.high:
            return "within noise"
        worse = self.median > 0 if lower_is_better else self.median < 0
        return "worse" if worse else "better"

    def describe(self) -> str:
        return (
            f"{self.median * 100:+.1f} % (90 % interval {self.low * 100:+.1f} .. {self.high * 100:+.1f} %,"
            f" {self.rounds} rounds)"
        )


def paired_change(side: list[float], reference: list[float]) -> Change:
    """The change of `side` against `reference`, round by round (the lists are in round order)."""
    if len(side) != len(reference) or not side:
        raise ValueError("paired samples need the same, non-zero number of rounds")
    ratios = [s / r - 1 for s, r in zip(side, reference, strict=True) if r]
    if not ratios:
        raise ValueError("every reference sample is zero")
    center = statistics.median(ratios)
    if len(ratios) == 1:
        return Change(center, center, center, 1)
    rng = random.Random(SEED)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(BOOTSTRAP_SAMPLES))
    tail = (1 - CONFIDENCE) / 2
    low = medians[int(tail * BOOTSTRAP_SAMPLES)]
    high = medians[min(BOOTSTRAP_SAMPLES - 1, int((1 - tail) * BOOTSTRAP_SAMPLES))]
    return Change(center, low, high, len(ratios))
