"""The PBX's event times on the engine's clock.

A call's deadline goes to Asterisk as seconds from now, worked out from the time of the answer
that Asterisk put in its event. If the PBX's clock is ahead of the engine's (another host without
NTP; an engine started before the boot's clock step, whose clock keeps the step it missed), those
seconds are too many by the difference, and every answered call talks that much longer for free.

So each event's time is set against the engine's clock as the event is handled. An event is
handled after it happened, never before: `event time − engine time` is the PBX's lead less a
delay, and the largest of the recent ones is the lead less the shortest delay (never more than
the lead). A lead beyond `tolerance` is taken off every event time; within it nothing changes
and the engine bills to Asterisk's own times, as its CDRs do. A PBX clock behind the engine's
cannot be told from events handled late; either cuts calls early rather than giving time away,
so it is said in the log, not corrected.

Pure: times in, times out; the caller reads the clock.
"""

from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger("rating_engine.engine")

TOLERANCE = 1.0
"""Seconds of difference left alone: a deadline is whole seconds, and a CDR's billsec too."""
WINDOW = 120.0
"""Seconds of events the lead is read from: a clock stepped since is followed within this."""
STEADY = 0.25
"""A lead that moves less than this is kept: one call's answer and hangup shifted alike."""


class EventTimes:
    def __init__(self, tolerance: float = TOLERANCE, window: float = WINDOW) -> None:
        self.tolerance = tolerance
        self.window = window
        self.lead = 0.0
        """Seconds taken off each event time: how far the PBX's clock is ahead of the engine's."""
        self.behind = False
        """Events come more than `tolerance` late, or the PBX's clock is behind: calls are cut early."""
        self._recent: deque[tuple[float, float]] = deque()
        """(engine time, event time − engine time), the differences decreasing: the first is the largest."""

    def here(self, at: float, now: float) -> float:
        """`at`, an event's time on the PBX's clock, on the engine's; `now` is the engine's clock as
        the event is handled."""
        self._observe(at - now, now)
        return at - self.lead

    def _observe(self, difference: float, now: float) -> None:
        recent = self._recent
        while recent and recent[-1][1] <= difference:
            recent.pop()
        recent.append((now, difference))
        while recent[0][0] < now - self.window:
            recent.popleft()
        ahead = recent[0][1]
        if ahead > self.tolerance:
            if abs(ahead - self.lead) > STEADY:
                log.warning(
                    "the PBX's clock is ahead of the engine's: its event times are moved onto the engine's clock",
                    extra={"seconds": round(ahead, 3)},
                )
                self.lead = ahead
        elif self.lead:
            log.warning("the PBX's clock and the engine's agree again", extra={"seconds": round(ahead, 3)})
            self.lead = 0.0
        behind = ahead < -self.tolerance
        if behind and not self.behind:
            log.warning(
                "AMI events reach the engine late, or the PBX's clock is behind the engine's: "
                "calls are cut that much before their paid time",
                extra={"seconds": round(-ahead, 3)},
            )
        self.behind = behind
