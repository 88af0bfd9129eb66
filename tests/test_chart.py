"""The spending chart's geometry: each day's stack is that day's spending to scale, extensions keep
their colour from day to day, and a long period is cut to its end, saying so."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from rating_engine.ledger import DaySpending
from rating_engine.web.chart import COLOURS, HEIGHT, MAX_DAYS, OTHERS, nice_step, spending_chart

FIRST = date(2026, 11, 1)


def _chart(first: date, last: date, spending: list[DaySpending]):  # type: ignore[no-untyped-def]
    return spending_chart(first, last, spending, str, lambda a: f"{a}µ", date.isoformat, "others")


@given(st.integers(1, 10**15), st.integers(1, 10))
def test_the_steps_reach_the_top_with_a_round_number(top: int, ticks: int) -> None:
    step = nice_step(top, ticks)
    assert step * ticks >= top
    digits = str(step).rstrip("0")
    assert digits in ("1", "2", "5")
    smaller = {"1": step // 2, "2": step // 2, "5": step * 2 // 5}[digits]
    assert smaller == 0 or smaller * ticks < top  # not a step bigger than needed


days = st.integers(0, 40).map(lambda n: (FIRST + timedelta(days=n)).isoformat())
spendings = st.lists(
    st.builds(DaySpending, days, st.sampled_from([str(200 + i) for i in range(12)]), st.integers(1, 10**9)),
    unique_by=lambda s: (s.day, s.ext),
    max_size=80,
)


@given(spendings)
def test_each_days_stack_is_its_spending_to_scale(spending: list[DaySpending]) -> None:
    chart = _chart(FIRST, FIRST + timedelta(days=40), spending)
    bottom = chart.bottom
    top_tick = chart.ticks[-1]
    scale = (bottom - top_tick.y) / int(top_tick.label.rstrip("µ"))
    per_day: dict[str, int] = {}
    for s in spending:
        per_day[s.day] = per_day.get(s.day, 0) + s.cost
    stacks: dict[str, float] = {}
    for b in chart.bars:
        day = b.title.split(" · ")[0]
        stacks[day] = stacks.get(day, 0.0) + b.height
        assert b.y >= 0 and b.y + b.height <= bottom + 1e-6
    assert set(stacks) == set(per_day)
    for day, height in stacks.items():
        assert abs(height - per_day[day] * scale) < 1e-6 * HEIGHT
    assert len(chart.legend) <= len(COLOURS)
    colours = {b.title.split(" · ")[1].split(":")[0]: b.colour for b in chart.bars}
    assert len(set(colours.values())) == len(colours)  # one colour per extension (or the others' grey)
    if len({s.ext for s in spending}) > len(COLOURS):
        assert chart.legend[-1][1].startswith("others (") and chart.legend[-1][0] == OTHERS


def test_the_biggest_spenders_get_the_colours_in_order() -> None:
    day = FIRST.isoformat()
    chart = _chart(FIRST, FIRST, [DaySpending(day, "201", 5), DaySpending(day, "202", 50)])
    assert chart.legend == [(COLOURS[0], "202"), (COLOURS[1], "201")]
    low, high = chart.bars  # stacked bottom up: the biggest spender at the bottom
    assert low.y > high.y and low.colour == COLOURS[0] and low.title == f"{day} · 202: 50µ"


def test_a_long_period_is_drawn_as_its_last_days_and_says_so() -> None:
    last = FIRST + timedelta(days=400)
    old, recent = DaySpending(FIRST.isoformat(), "201", 7), DaySpending(last.isoformat(), "201", 9)
    chart = _chart(FIRST, last, [old, recent])
    assert chart.cut and chart.first == last - timedelta(days=MAX_DAYS - 1) and chart.last == last
    assert [b.title for b in chart.bars] == [f"{last.isoformat()} · 201: 9µ"]
    short = _chart(last - timedelta(days=MAX_DAYS - 1), last, [recent])
    assert not short.cut and short.first == last - timedelta(days=MAX_DAYS - 1)


def test_no_spending_draws_no_bar() -> None:
    chart = _chart(FIRST, FIRST + timedelta(days=6), [])
    assert chart.bars == [] and chart.legend == [] and len(chart.days) == 7
