"""The PBX's event times set on the engine's clock: a PBX clock ahead never turns into free talk,
and clocks that agree change nothing (the bill stays Asterisk's own times)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rating_engine.event_times import STEADY, TOLERANCE, WINDOW, EventTimes

T0 = 1_795_535_109.0


def test_clocks_that_agree_leave_every_time_as_the_pbx_gave_it() -> None:
    times = EventTimes()
    for k, (lead, delay) in enumerate([(0.0, 0.0), (0.9, 0.0), (-0.4, 0.3), (0.5, 0.05)]):
        now = T0 + k
        assert times.here(now + lead - delay, now) == now + lead - delay
    assert times.lead == 0.0 and not times.behind


def test_a_pbx_clock_an_hour_ahead_is_taken_off_and_followed_when_it_steps_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    times = EventTimes()
    with caplog.at_level(logging.WARNING, "rating_engine.engine"):
        assert times.here(T0 + 3600, T0) == T0
        assert times.here(T0 + 3610 - 0.2, T0 + 10) == T0 + 10 - 0.2  # handled 0.2 s late: seen as such
    assert times.lead == 3600.0 and "ahead of the engine's" in caplog.text
    # The PBX's clock is set right: until the window forgets the hour, its times read an hour early
    # (deadlines early: cut, never free); then as they are.
    assert times.here(T0 + 20, T0 + 20) == T0 + 20 - 3600
    later = T0 + 20 + WINDOW
    assert times.here(later, later) == later and times.lead == 0.0 and "agree again" in caplog.text


def test_events_handled_late_never_move_times_later_and_are_said_once(caplog: pytest.LogCaptureFixture) -> None:
    times = EventTimes()
    with caplog.at_level(logging.WARNING, "rating_engine.engine"):
        for k in range(5):
            now = T0 + k
            assert times.here(now - 3, now) == now - 3  # 3 s late (or a PBX 3 s behind): left as given
    assert times.behind and times.lead == 0.0
    assert caplog.text.count("reach the engine late") == 1


@given(
    lead=st.floats(0, 86_400, allow_nan=False),
    steps=st.lists(
        st.tuples(st.floats(0, 60, allow_nan=False), st.floats(0, 10, allow_nan=False)), min_size=1, max_size=60
    ),
)
def test_an_event_is_never_placed_before_it_happened_nor_long_after(
    lead: float, steps: list[tuple[float, float]]
) -> None:
    """A PBX `lead` seconds ahead; each event handled `delay` seconds after it happened. On the
    engine's clock an event is placed no earlier than it happened (its call is never cut early by
    the correction) and no later than the tolerance, or the shortest recent delay, allows (the
    free talk it can give)."""
    times = EventTimes()
    happened = T0
    seen: list[tuple[float, float]] = []  # (handled, delay)
    for gap, delay in steps:
        happened += gap
        handled = max(happened + delay, seen[-1][0] if seen else happened)  # the engine handles in order
        delay = handled - happened
        seen.append((handled, delay))
        placed = times.here(happened + lead, handled)
        shortest = min(d for h, d in seen if h >= handled - WINDOW)
        late = placed - happened
        assert -1e-6 <= late <= TOLERANCE + STEADY + shortest + 1e-6
