"""The PBX's event times set on the engine's clock: a PBX clock ahead never turns into free talk,
and clocks that agree change nothing (the bill stays Asterisk's own times)."""

from __future__ import annotations

import logging
from pathlib import Path

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


def test_a_ping_tells_a_pbx_clock_behind_from_events_handled_late(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "rating_engine.engine"):
        late = EventTimes()  # the clocks agree; events wait 3 s in a queue; the Ping goes round in 4 ms
        late.pinged(T0 + 0.002, T0, T0 + 0.004)
        assert late.here(T0 + 7, T0 + 10) == T0 + 7 and late.lead == 0.0 and not late.behind
        behind = EventTimes()  # the PBX an hour behind: events on time, and its Ping says so
        behind.pinged(T0 - 3600 + 0.002, T0, T0 + 0.004)
        assert behind.here(T0 + 10 - 3600, T0 + 10) == pytest.approx(T0 + 10 - 0.002, abs=1e-6)
    assert "behind the engine's: its event times are moved" in caplog.text
    assert "reach the engine late" not in caplog.text


def test_a_ping_answered_slowly_bounds_nothing(caplog: pytest.LogCaptureFixture) -> None:
    times = EventTimes()
    times.pinged(T0 - 3600, T0, T0 + TOLERANCE)  # a second's round trip: the PBX's time anywhere in it
    assert times.lead == 0.0 and times.here(T0 + 5, T0 + 5) == T0 + 5


@given(
    lead=st.floats(-86_400, 86_400, allow_nan=False),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["event", "ping", "moved"]),
            st.floats(0, 60, allow_nan=False),
            st.floats(0, 10, allow_nan=False),
            st.floats(0, 1, allow_nan=False),
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_an_event_is_never_placed_long_after_it_happened_nor_long_before_once_pinged(
    lead: float, steps: list[tuple[str, float, float, float]]
) -> None:
    """A PBX `lead` seconds ahead (behind, if negative). Each step is an event handled `delay`
    seconds after it happened, or a Ping whose round trip is `delay` (the PBX reading its clock at
    `share` of it), or the engine's clock moved (a step of the system clock followed) by up to an
    hour either way. On the engine's clock an event is placed no later than the tolerance, or the
    shortest delay since the last Ping, allows (free talk), and, once a Ping has been answered
    quickly, no earlier than the tolerance and its round trip allow (a call cut early); ahead and
    never pinged, never before it happened."""
    times = EventTimes()
    now = T0
    floors: list[tuple[float, float]] = []  # (engine time, delay) of each floor since the last Ping
    ping: tuple[float, float] | None = None  # (engine time, round trip) of the last Ping that counts
    for kind, gap, delay, share in steps:
        now += gap
        if kind == "moved":  # the PBX's clock, on the same host, stepped alike or (share < 0.5) not
            moved = (delay - 5) * 720
            times.forget()
            now, lead = now + moved, lead if share >= 0.5 else lead - moved
            floors, ping = [], None
            continue
        if kind == "ping":
            times.pinged(now + delay * share + lead, now, now + delay)
            if delay <= TOLERANCE / 2:
                floors, ping = [(now + delay, delay * (1 - share))], (now + delay, delay)
            now += delay
            continue
        happened, now = now, now + delay
        floors.append((now, delay))
        placed = times.here(happened + lead, now)
        late = placed - happened
        shortest = min(d for t, d in floors if t >= now - WINDOW)
        assert late <= TOLERANCE + STEADY + shortest + 1e-6
        if ping is not None and ping[0] >= now - WINDOW:
            assert late >= -(TOLERANCE + ping[1] + STEADY) - 1e-6
        elif ping is None and lead >= 0:
            assert late >= -1e-6


def test_what_was_read_of_the_pbx_s_clock_is_forgotten_when_the_engine_s_moves() -> None:
    """An engine started before the boot's clock step, Asterisk after it, reads the PBX an hour
    ahead; once its own clock takes the step in, that reading is no news. So is a floor read before
    the step: on one host the PBX's clock stepped with the engine's, kept it would say an hour."""
    times = EventTimes()
    times.here(T0 + 0.3, T0)
    times.pinged(T0 + 3600, T0 - 0.002, T0)
    assert times.lead == pytest.approx(3600, abs=0.01)
    times.forget()
    assert times.lead == 0.0 and not times.behind
    assert times.here(T0 + 10, T0 + 10) == T0 + 10


# ---------------------------------------------------------------- the engine's own clock


def test_the_engine_s_clock_tells_how_far_the_system_clock_stepped_and_follows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from rating_engine.clock import Clock

    clock, sped, elsewhere = Clock(), Clock(speed=20), Clock(start=T0)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # NTP's step at boot, say
    assert clock.stepped() == pytest.approx(3600, abs=0.5)
    assert sped.stepped() == 0.0 and elsewhere.stepped() == 0.0  # simulated time: nothing to compare
    assert clock.follow_system() == pytest.approx(3600, abs=0.5)
    assert clock.now() == pytest.approx(time.time(), abs=0.5) and abs(clock.stepped()) < 0.5
    before = elsewhere.now()
    assert sped.follow_system() == 0.0 and elsewhere.follow_system() == 0.0
    assert before <= elsewhere.now() < before + 0.5


async def test_a_step_of_the_system_clock_is_followed_once_no_call_is_live_and_said_until_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The ledger's times follow the engine's clock, which runs on from the wall time it read at
    start. After a step of the system clock they would be off the wall's for good (the activity,
    the days of the caps): the engine takes the step in, but not under a live call, whose answer
    and deadline are on the clock as it was; until then the step is said once and shown."""
    import time
    from typing import Any, cast

    from rating_engine.clock import Clock
    from rating_engine.config import Config, TariffsSection
    from rating_engine.ledger import make_ledger
    from rating_engine.service import Service

    from .conftest import OFFICE_FR

    clock = Clock()
    config = Config(tariffs=TariffsSection(plans=(str(OFFICE_FR),)))
    service = Service(config, clock=clock, ledger=make_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}"), ami_secret="x")
    service.engine.event_times.here(clock.now() + 0.3, clock.now())  # Asterisk's clock, on the same host
    real = time.time
    step = [0.3]
    monkeypatch.setattr(time, "time", lambda: real() + step[0])
    with caplog.at_level(logging.WARNING, "rating_engine"):
        service._watch_clock_step()  # within a second: slewing, nothing to say or do
        assert service.clock_step == 0.0 and not caplog.records
        assert clock.stepped() == pytest.approx(0.3, abs=0.2)
        step[0] = -3600.2
        service.engine.event_times.here(clock.now() - 3600, clock.now())  # Asterisk's clock stepped too
        service.engine.calls["a call"] = cast(Any, object())
        service._watch_clock_step()
        service._watch_clock_step()
        assert service.clock_step == pytest.approx(-3600.2, abs=0.2)
        assert clock.stepped() == pytest.approx(-3600.2, abs=0.2)  # not under a live call
        assert "rating_clock_step_seconds -3600." in service.metrics.render()
        del service.engine.calls["a call"]
        service._watch_clock_step()
        assert clock.now() == pytest.approx(time.time(), abs=0.2) and service.clock_step == 0.0
        assert "rating_clock_steps_followed_total 1" in service.metrics.render()
        assert "rating_clock_step_seconds 0" in service.metrics.render()
        times = service.engine.event_times  # read again: on one host, the PBX's clock stepped too
        assert times.here(clock.now() - 0.05, clock.now()) == pytest.approx(clock.now() - 0.05, abs=0.01)
        assert times.lead == 0.0 and not times.behind  # kept, the floor read before would say 3600 ahead
        service._watch_clock_step()
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "the system clock stepped",
        "the system clock stepped",
    ]
    assert "once no call is live" in caplog.records[0].getMessage()
    assert "no call was live" in caplog.records[1].getMessage()
