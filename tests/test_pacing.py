"""The open-loop generator's pacer: every request started once, in order, never before it is due,
on a kernel timer where Linux has one and on the loop's timers elsewhere. How close to its due
time a request starts is the benchmark's to report (`generator_late_*`), not asserted here."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from benchmarks import pacing


def loops() -> list[Callable[[Coroutine[Any, Any, Any]], Any]]:
    runners: list[Callable[[Coroutine[Any, Any, Any]], Any]] = [asyncio.run]
    try:
        import uvloop
    except ImportError:
        return runners
    return [*runners, uvloop.run]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def started(gaps: list[float]) -> tuple[list[float], list[tuple[int, float]], str]:
    """Due times from now on, `gaps` apart (two already past), and when each request started."""
    now = time.perf_counter()
    dues = [now - 0.01, now - 0.005]
    for gap in gaps:
        dues.append(max(dues[-1], now) + gap)
    seen: list[tuple[int, float]] = []
    timer = await pacing.paced(dues, lambda i: seen.append((i, time.perf_counter())))
    return dues, seen, timer


@pytest.mark.parametrize("run", loops(), ids=lambda r: r.__module__)
@pytest.mark.parametrize("timer", [pacing.TIMERFD, pacing.LOOP_TIMERS])
def test_each_request_starts_once_in_order_and_never_before_it_is_due(
    run: Callable[[Coroutine[Any, Any, Any]], Any], timer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if timer == pacing.LOOP_TIMERS:
        monkeypatch.setattr(pacing, "_libc", lambda: None)
    elif not sys.platform.startswith("linux"):
        pytest.skip("timerfd is Linux's")
    # Some due together, gaps below and above a millisecond.
    dues, seen, used = run(started([0.0, 0.0, 0.0003, 0.0, 0.002, 0.00005, 0.004, 0.0, 0.0011]))
    assert used == timer
    assert [i for i, _ in seen] == list(range(len(dues)))
    assert all(at >= dues[i] for i, at in seen)


def test_nothing_due_returns_at_once_and_a_failing_start_ends_the_run_with_its_error() -> None:
    before = open_fds()
    assert asyncio.run(pacing.paced([], print)) == (pacing.TIMERFD if pacing._libc() else pacing.LOOP_TIMERS)

    def boom(i: int) -> None:
        if i == 2:
            raise RuntimeError("no more sockets")

    async def failing() -> None:
        now = time.perf_counter()
        await pacing.paced([now + 0.001 * k for k in range(5)], boom)

    with pytest.raises(RuntimeError, match="no more sockets"):
        asyncio.run(failing())
    assert open_fds() == before  # the timer's descriptor was closed both times
