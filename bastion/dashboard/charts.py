"""Daily spend stacked by model, as an SVG drawn on the server (no script, no inline style: the colours
are classes of the stylesheet). Every bar segment carries its exact figures as data attributes and a
<title> tooltip, so what the chart shows can be read back and checked."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from bastion.dashboard.formats import day as day_label
from bastion.dashboard.formats import usd, usd_short
from bastion.db.reports import Overview, Totals

PALETTE = 8  # .c0 ... .c7 in dashboard.css; .c8 is "other models"
WIDTH, HEIGHT = 960, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 28


@dataclass(frozen=True, slots=True)
class Segment:
    day: date
    model: str
    cost_nano: int
    requests: int
    css: str
    x: float
    y: float
    width: float
    height: float

    @property
    def title(self) -> str:
        return f"{day_label(self.day)} · {self.model}: {usd(self.cost_nano)} ({self.requests:,} requests)"


@dataclass(frozen=True, slots=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class DayLabel:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Legend:
    model: str
    css: str
    cost_nano: int


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    plot_bottom: float
    segments: list[Segment]
    ticks: list[Tick]
    labels: list[DayLabel]
    legend: list[Legend]  # the models with a colour of their own
    others: list[Legend]  # the rest, grey in the chart, listed under one line
    empty: bool

    @property
    def others_nano(self) -> int:
        return sum(item.cost_nano for item in self.others)


def _nice_ceiling(value: int) -> int:
    """A round top for the axis: 1, 2 or 5 times a power of ten (in nano-USD), at least `value`."""
    if value <= 0:
        return 10**7  # $0.01
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def spend_chart(overview: Overview) -> Chart:
    by_model: dict[str, Totals] = {}
    for models in overview.by_day.values():
        for model, totals in models.items():
            by_model[model] = by_model.get(model, Totals()) + totals
    ranked = sorted(by_model, key=lambda m: (-by_model[m].cost_nano, m))
    css = {model: f"c{i}" if i < PALETTE else "c8" for i, model in enumerate(ranked)}
    days = overview.days
    top = _nice_ceiling(
        max((sum(t.cost_nano for t in overview.by_day.get(d, {}).values()) for d in days), default=0)
    )
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / len(days)
    bar = max(slot * 0.72, 1.0)
    segments: list[Segment] = []
    for index, when in enumerate(days):
        stacked = 0
        x = LEFT + index * slot + (slot - bar) / 2
        for model in ranked:  # the largest model at the bottom of every bar
            totals = overview.by_day.get(when, {}).get(model)
            if totals is None or (totals.cost_nano == 0 and totals.requests == 0):
                continue
            height = plot_height * totals.cost_nano / top
            y = TOP + plot_height - plot_height * (stacked + totals.cost_nano) / top
            segments.append(
                Segment(when, model, totals.cost_nano, totals.requests, css[model], x, y, bar, height)
            )
            stacked += totals.cost_nano
    ticks = [Tick(TOP + plot_height - plot_height * i / 4, usd_short(top * i // 4)) for i in range(5)]
    every = max(1, math.ceil(len(days) / 10))
    labels = [
        DayLabel(LEFT + i * slot + slot / 2, day_label(d))
        for i, d in enumerate(days)
        if (len(days) - 1 - i) % every == 0
    ]
    legend = [Legend(model, css[model], by_model[model].cost_nano) for model in ranked]
    coloured, others = legend[:PALETTE], legend[PALETTE:]
    return Chart(
        WIDTH, HEIGHT, LEFT, TOP + plot_height, segments, ticks, labels, coloured, others, not segments
    )
