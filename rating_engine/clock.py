"""Time for the live path: real, or sped up for the simulator, the demo and the tests.

Rating never reads a clock (it is passed `now`); the engine and the simulator share one of
these so that a call "lasting" 120 s of simulated time can take 2 s of real time.
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Wall-clock seconds; `speed` > 1 makes simulated time run faster than real time."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.speed = speed
        self._real0 = time.monotonic()
        self._sim0 = time.time() if start is None else start
        self._wall = speed == 1 and start is None

    def now(self) -> float:
        return self._sim0 + (time.monotonic() - self._real0) * self.speed

    def stepped(self) -> float:
        """Seconds the system clock has moved away from this one since it was made (NTP's step at
        boot, an operator's `date`): this clock runs on from the wall time it read then. 0 for a
        clock sped up or started elsewhere."""
        return time.time() - self.now() if self._wall else 0.0

    def follow_system(self) -> float:
        """Read the system clock again, taking in a step it made since; returns the seconds this
        clock moved. A sped-up or elsewhere-started clock is left as it is (0)."""
        if not self._wall:
            return 0.0
        before = self.now()
        self._real0, self._sim0 = time.monotonic(), time.time()
        return self._sim0 - before

    def now_int(self) -> int:
        return int(self.now())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0) / self.speed)

    async def sleep_until(self, when: float) -> None:
        await self.sleep(when - self.now())

    def real(self, seconds: float) -> float:
        """Real seconds that `seconds` of clock time take."""
        return seconds / self.speed
