"""Start each of an open loop's requests at its due time, to the tens of microseconds.

An event loop's own timers wake on whole milliseconds: uvloop's (libuv's) clock counts
milliseconds, asyncio's selector rounds its wait up to one. A Poisson generator built on them
starts requests up to a millisecond late (1.2 ms at p99, measured), and starts the ones due within
the same millisecond together: a burst the server did not ask for. Both land in every latency
counted from the due time, the bare server's too (its p50 fell from 0.9 to 0.3 ms at 1,000/s on
this machine once the generator was on time). So on Linux the generator waits on a `timerfd`, a
kernel timer with nanosecond resolution whose file descriptor the loop watches like a socket.
Elsewhere, or where `timerfd_create` is missing, it falls back to the loop's timers, and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable, Sequence

TIMERFD = "timerfd"
LOOP_TIMERS = "loop timers"
_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    """The C library, if it has timerfd and `time.perf_counter` reads the clock a timerfd can use."""
    clock = time.get_clock_info("perf_counter").implementation
    if clock != "clock_gettime(CLOCK_MONOTONIC)":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "timerfd_create") and hasattr(libc, "timerfd_settime") else None


class _Timerfd:
    """A one-shot kernel timer, set to an absolute time on `time.perf_counter`'s clock."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self.libc = libc
        self.fd = libc.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")

    def at(self, when: float) -> None:
        seconds = int(when)
        nanoseconds = max(int((when - seconds) * 1e9), 1)  # zero would disarm it
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(seconds, nanoseconds))
        if self.libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):  # read already, or woken for nothing
            os.read(self.fd, 8)  # the count of expiries; reading it makes the fd quiet again

    def close(self) -> None:
        os.close(self.fd)


async def paced(dues: Sequence[float], start: Callable[[int], None]) -> str:
    """Call `start(i)` for each due time in order (`time.perf_counter`'s clock, ascending), never
    before it; return which timer kept the time (`TIMERFD` or `LOOP_TIMERS`)."""
    libc = _libc()
    if libc is None:
        await _with_loop_timers(dues, start)
        return LOOP_TIMERS
    timer = _Timerfd(libc)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    following = 0

    def due() -> None:
        nonlocal following
        timer.clear()
        now = time.perf_counter()
        try:
            while following < len(dues) and dues[following] <= now:
                following += 1
                start(following - 1)
            if following < len(dues):
                timer.at(dues[following])
                return
        except BaseException as exc:  # a failure in `start` ends the run, not the loop
            done.set_exception(exc)
        else:
            done.set_result(None)  # the timer is not armed again: `finally` below lets the fd go

    try:
        loop.add_reader(timer.fd, due)
        if dues:
            timer.at(dues[0])
        else:
            due()
        await done
    finally:
        loop.remove_reader(timer.fd)
        timer.close()
    return TIMERFD


async def _with_loop_timers(dues: Sequence[float], start: Callable[[int], None]) -> None:
    for i, due in enumerate(dues):
        # A timer may fire a little before its time (seen on a CI machine: half the requests went
        # 24 µs early under asyncio); sleeping again until the due time keeps every request from
        # going out before it was due.
        while (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        start(i)
