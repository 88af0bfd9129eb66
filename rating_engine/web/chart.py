"""The activity's chart of spending per day, stacked by extension, drawn as an SVG on the server.

No script and no chart library: the page's CSP allows no inline script, and a few rectangles with
their own titles (the figures, for a mouse or a screen reader) say everything. Pure geometry: the
template draws what this computes, amounts stay integers until the labels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from ..ledger import DaySpending

COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#7f6d00")
"""Okabe and Ito's palette (told apart with the common colour blindnesses), readable on white."""
OTHERS = "#8a8a8a"
MAX_DAYS = 92
"""A longer period is drawn as its last 92 days (a bar per day stays wider than a few pixels)."""
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 240, 88, 28, 8


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True, slots=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    first: date
    last: date
    cut: bool
    """True when the period was longer than MAX_DAYS and only its end is drawn."""
    bars: list[Bar]
    ticks: list[Tick]
    days: list[tuple[float, str]]
    """x and label of the days named under the axis."""
    legend: list[tuple[str, str]]
    """(colour, extension) in stacking order, bottom first."""
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = HEIGHT - BOTTOM


def nice_step(top: int, ticks: int = 4) -> int:
    """The smallest 1, 2 or 5 × 10^k (micro-units, at least 1) with `ticks` steps reaching `top`."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step * ticks >= top:
                return m * step
        step *= 10


def spending_chart(
    first: date,
    last: date,
    spending: list[DaySpending],
    label: Callable[[str], str],
    money: Callable[[int], str],
    day_label: Callable[[date], str],
    others_label: str = "others",
) -> Chart:
    """Bars for each day from `first` to `last` (the last MAX_DAYS of it), one segment per
    extension; the seven extensions that spent most get a colour each, the rest share grey."""
    cut = (last - first).days + 1 > MAX_DAYS
    if cut:
        first = last - timedelta(days=MAX_DAYS - 1)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    per_day: dict[str, dict[str, int]] = defaultdict(dict)
    spent: dict[str, int] = defaultdict(int)
    for s in spending:
        if first.isoformat() <= s.day <= last.isoformat():
            per_day[s.day][s.ext] = s.cost
            spent[s.ext] += s.cost
    ranked = sorted(spent, key=lambda e: (-spent[e], e))
    coloured = ranked[: len(COLOURS)] if len(ranked) <= len(COLOURS) else ranked[: len(COLOURS) - 1]
    colour = {e: COLOURS[i] for i, e in enumerate(coloured)}
    others = [e for e in ranked if e not in colour]
    groups = [(label(e), colour[e], [e]) for e in coloured]
    if others:
        groups.append((f"{others_label} ({', '.join(label(e) for e in others)})", OTHERS, others))
    top = max((sum(d.values()) for d in per_day.values()), default=0)
    step = nice_step(max(top, 1))
    scale = (HEIGHT - BOTTOM - TOP) / (step * 4)
    slot = (WIDTH - LEFT) / len(days)
    labels = [day_label(d) for d in days]  # once a day, not once a bar: a label is a Babel call
    bars: list[Bar] = []
    for i, d in enumerate(days):
        y = float(HEIGHT - BOTTOM)
        spent_that_day = per_day.get(d.isoformat(), {})
        for name, col, members in groups:
            cost = sum(spent_that_day.get(e, 0) for e in members)
            if cost <= 0:
                continue
            h = cost * scale
            y -= h
            bars.append(
                Bar(LEFT + i * slot + slot * 0.1, y, slot * 0.8, h, col, f"{labels[i]} · {name}: {money(cost)}")
            )
    ticks = [Tick(HEIGHT - BOTTOM - k * step * scale, money(k * step)) for k in range(5)]
    every = max(1, len(days) // 6)
    named = [(LEFT + i * slot + slot / 2, labels[i]) for i in range(len(days)) if i % every == 0]
    legend = [(col, name) for name, col, _ in groups]
    return Chart(first, last, cut, bars, ticks, named, legend)
