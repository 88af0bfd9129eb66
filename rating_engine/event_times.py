"""The PBX's event times on the engine's clock.

A call's deadline goes to Asterisk as seconds from now, worked out from the time of the answer
that Asterisk put in its event. If the PBX's clock is ahead of the engine's (another host without
NTP; an engine started before the boot's clock step, whose clock keeps the step it missed), those
seconds are too many by the difference, and every answered call talks that much longer for free;
behind, every call is cut that much early.

So the PBX's lead is read two ways. An event is handled after it happened, never before: its
`time − engine time` is the lead less a delay, a floor under the lead, and the highest recent one
is the lead less the shortest delay. A Ping's reply carries the PBX's time too, taken between the
engine's sending and its receiving: `time − sent` is a ceiling over the lead, within the round
trip of it. With a recent ceiling the lead is taken to be the ceiling (an event is then placed at
most a round trip before it happened: never free talk); without one, the floor, and only when the
PBX is ahead (a PBX behind cannot be told from events handled late, so it is logged and not
corrected). A lead within `tolerance` is left alone: the engine then bills to Asterisk's own times,
as its CDRs do.

Pure: times in, times out; the caller reads the clock.
"""

from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger("rating_engine.engine")

TOLERANCE = 1.0
"""Seconds of difference left alone: a deadline is whole seconds, and a CDR's billsec too."""
WINDOW = 120.0
"""Seconds a floor or a ceiling is kept: a clock stepped since is followed within this (or at the next Ping)."""
STEADY = 0.25
"""A lead that moves less than this is kept: one call's answer and hangup shifted alike."""


class EventTimes:
    def __init__(self, tolerance: float = TOLERANCE, window: float = WINDOW) -> None:
        self.tolerance = tolerance
        self.window = window
        self.lead = 0.0
        """Seconds taken off each event time: how far the PBX's clock is ahead of the engine's (behind:
        negative)."""
        self.behind = False
        """Events come over `tolerance` late, or the PBX's clock is that far behind, and no Ping says
        which: not corrected, calls are cut that much early."""
        self._floors: deque[tuple[float, float]] = deque()
        """(engine time, a floor under the lead) since the last Ping, decreasing: the first is the highest."""
        self._ceiling: tuple[float, float] | None = None
        """(engine time, a ceiling over the lead) of the last Ping answered quickly enough."""

    def here(self, at: float, now: float) -> float:
        """`at`, an event's time on the PBX's clock, on the engine's; `now` is the engine's clock as
        the event is handled."""
        self._floor(at - now, now)
        self._settle(now)
        return at - self.lead

    def pinged(self, at: float, sent: float, received: float) -> None:
        """A Ping's reply carrying `at`, the PBX's time; `sent` and `received`, the engine's clock
        around it. One slower than half the tolerance bounds too little and is let be."""
        if received - sent > self.tolerance / 2:
            return
        self._floors.clear()  # what came before this Ping is no news: a clock may have stepped since
        self._floor(at - received, received)
        self._ceiling = (received, at - sent)
        self._settle(received)

    def forget(self) -> None:
        """The engine's clock was moved (a step of the system clock taken in): what was read of the
        lead is no news, the PBX's clock may have stepped alike (one host) or not. The next event
        or Ping reads it again; the caller asks for one."""
        self._floors.clear()
        self._ceiling = None
        self.lead, self.behind = 0.0, False

    def _floor(self, floor: float, now: float) -> None:
        floors = self._floors
        while floors and floors[-1][1] <= floor:
            floors.pop()
        floors.append((now, floor))
        while floors[0][0] < now - self.window:
            floors.popleft()

    def _settle(self, now: float) -> None:
        floor = self._floors[0][1]
        ceiling = self._ceiling[1] if self._ceiling is not None and self._ceiling[0] >= now - self.window else None
        # A floor above the ceiling: the PBX's clock moved forward since the Ping; the floor is proven.
        lead = ceiling if ceiling is not None and floor <= ceiling else max(floor, 0.0)
        if abs(lead) <= self.tolerance:
            lead = 0.0
        if abs(lead - self.lead) > STEADY or (lead == 0.0) != (self.lead == 0.0):
            if lead:
                side = "ahead of" if lead > 0 else "behind"
                log.warning(
                    f"the PBX's clock is {side} the engine's: its event times are moved onto the engine's clock",
                    extra={"seconds": round(abs(lead), 3)},
                )
            else:
                log.warning("the PBX's clock and the engine's agree again")
            self.lead = lead
        behind = ceiling is None and floor < -self.tolerance
        if behind and not self.behind:
            log.warning(
                "AMI events reach the engine late, or the PBX's clock is behind the engine's (no Ping "
                "answered to tell which): calls are cut that much before their paid time",
                extra={"seconds": round(-floor, 3)},
            )
        self.behind = behind
