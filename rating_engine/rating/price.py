"""`cost(seconds)` and its exact inverse `max_seconds(budget)`, scalar and vectorized.

For s > 0:
    charged = max(initial, initial + ceil((s − initial) / increment) · increment)
    cost    = max(minimum, connect_fee + ceil(charged · per_minute / 60))
and cost(0) = 0. `max_seconds(b)` is the largest s with cost(s) ≤ b, so the time a call is
granted and the bill it produces come from the same formula (unlike A2Billing's issue #22).
All amounts are integer micro-units; the vectorized forms use int64 and agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]

UNLIMITED_SECONDS = 7 * 24 * 3600
"""Cap of `max_seconds` where a rate costs nothing per minute: a week is 'unlimited' for a call."""

MAX_PRICE = 10**11
"""Per minute, connect fee and minimum: at most 100,000 currency units."""
MAX_INCREMENT = 3600
MAX_BILLSEC = 10**7
"""Longer than any call (115 days). With these bounds charged seconds × price per minute stays
below 2^63, so the int64 (vectorized) and Python (scalar) prices agree on every input accepted."""


@dataclass(frozen=True, slots=True)
class Price:
    """The billing parameters of one rate row, in micro-units and seconds."""

    per_minute: int
    connect_fee: int = 0
    initial: int = 60
    increment: int = 60
    minimum: int = 0

    def __post_init__(self) -> None:
        if not (1 <= self.initial <= MAX_INCREMENT and 1 <= self.increment <= MAX_INCREMENT):
            raise ValueError(f"increments must be from 1 to {MAX_INCREMENT} seconds")
        if min(self.per_minute, self.connect_fee, self.minimum) < 0:
            raise ValueError("prices cannot be negative")
        if max(self.per_minute, self.connect_fee, self.minimum) > MAX_PRICE:
            raise ValueError(f"prices are at most {MAX_PRICE} micro-units")


def charged_seconds(seconds: int, p: Price) -> int:
    if seconds <= 0:
        return 0
    if seconds <= p.initial:
        return p.initial
    return p.initial + -(-(seconds - p.initial) // p.increment) * p.increment


def cost(seconds: int, p: Price) -> int:
    if seconds <= 0:
        return 0
    charged = charged_seconds(seconds, p)
    return max(p.minimum, p.connect_fee + -(-(charged * p.per_minute) // 60))


def max_seconds(budget: int, p: Price) -> int:
    """The largest s with cost(s) ≤ budget (capped at UNLIMITED_SECONDS)."""
    if budget < cost(1, p):
        return 0
    if p.per_minute == 0:
        return UNLIMITED_SECONDS
    # connect + ceil(C·ppm/60) ≤ b  ⇔  C ≤ floor(60·(b − connect) / ppm)
    most_charged = 60 * (budget - p.connect_fee) // p.per_minute
    steps = (most_charged - p.initial) // p.increment
    return min(p.initial + steps * p.increment, UNLIMITED_SECONDS)


@dataclass(frozen=True, slots=True)
class PriceColumns:
    """Price parameters as aligned int64 columns, one entry per rate row."""

    per_minute: IntArray
    connect_fee: IntArray
    initial: IntArray
    increment: IntArray
    minimum: IntArray

    @classmethod
    def from_prices(cls, prices: list[Price]) -> PriceColumns:
        def col(name: str) -> IntArray:
            return np.fromiter((getattr(p, name) for p in prices), dtype=np.int64, count=len(prices))

        return cls(*(col(n) for n in ("per_minute", "connect_fee", "initial", "increment", "minimum")))

    def take(self, rows: IntArray) -> PriceColumns:
        return PriceColumns(
            self.per_minute[rows],
            self.connect_fee[rows],
            self.initial[rows],
            self.increment[rows],
            self.minimum[rows],
        )


def _ceil_div(a: IntArray, b: IntArray | int) -> IntArray:
    return -(-a // b)


def charged_seconds_array(seconds: IntArray, p: PriceColumns) -> IntArray:
    """Vectorized `charged_seconds`."""
    s = np.asarray(seconds, dtype=np.int64)
    extra = np.maximum(s - p.initial, 0)
    charged = p.initial + _ceil_div(extra, p.increment) * p.increment
    return np.where(s > 0, charged, 0).astype(np.int64)


def cost_array(seconds: IntArray, p: PriceColumns, charged: IntArray | None = None) -> IntArray:
    """Vectorized `cost`: seconds[i] priced with row i of `p` (`charged`: their charged seconds,
    when the caller has them already)."""
    s = np.asarray(seconds, dtype=np.int64)
    if charged is None:
        charged = charged_seconds_array(s, p)
    priced = np.maximum(p.minimum, p.connect_fee + _ceil_div(charged * p.per_minute, 60))
    return np.where(s > 0, priced, 0).astype(np.int64)


def max_seconds_array(budget: IntArray, p: PriceColumns) -> IntArray:
    """Vectorized `max_seconds`."""
    b = np.asarray(budget, dtype=np.int64)
    ones = np.ones_like(b)
    first = cost_array(ones, p)
    free = p.per_minute == 0
    safe_ppm = np.where(free, 1, p.per_minute)
    most_charged = 60 * (b - p.connect_fee) // safe_ppm
    steps = (most_charged - p.initial) // p.increment
    result = np.minimum(p.initial + steps * p.increment, UNLIMITED_SECONDS)
    result = np.where(free, UNLIMITED_SECONDS, result)
    return np.where(b < first, 0, result).astype(np.int64)


@dataclass(frozen=True, slots=True)
class Segment:
    """One piece of a priced call: `seconds` from `offset` at `price`, rounded on their own."""

    offset: int
    seconds: int
    price: Price
    charged: int
    money: int


@dataclass(frozen=True, slots=True)
class Fare:
    """A call's price from its start: (offset, Price) pieces, the first at 0, each until the next.

    One piece is today's `cost` exactly. Where the price changes during the call (a time band
    ends), the call is cut there, as CGRateS cuts a call into rating intervals: each segment is
    rounded up to its own increments (the first one from the initial increment, the later ones
    from their band's increment) and priced at its own rate, rounded up to the micro-unit; the
    connect fee and the minimum are the first segment's, once per call. Each extra second
    either lengthens the last segment or starts one, so the cost never falls as seconds grow, and
    `max_seconds` walks the segments to invert it exactly.
    """

    pieces: tuple[tuple[int, Price], ...]

    @staticmethod
    def flat(p: Price) -> Fare:
        """One price for the whole call. The same object for the same price: a live call holds its
        fare, and one object per call made each of the collector's full passes longer."""
        return _flat(p)

    @property
    def first(self) -> Price:
        return self.pieces[0][1]

    def segments(self, seconds: int) -> list[Segment]:
        out: list[Segment] = []
        for k, (offset, p) in enumerate(self.pieces):
            if offset >= seconds:
                break
            end = self.pieces[k + 1][0] if k + 1 < len(self.pieces) else seconds
            length = min(end, seconds) - offset
            charged = self._charged(k, length, p)
            out.append(Segment(offset, length, p, charged, -(-(charged * p.per_minute) // 60)))
        return out

    def cost(self, seconds: int) -> int:
        if seconds <= 0:
            return 0
        if len(self.pieces) == 1:
            return cost(seconds, self.first)
        p = self.first
        return max(p.minimum, p.connect_fee + sum(s.money for s in self.segments(seconds)))

    def max_seconds(self, budget: int) -> int:
        """The largest s with cost(s) ≤ budget (capped at UNLIMITED_SECONDS)."""
        if len(self.pieces) == 1:
            return max_seconds(budget, self.first)
        if budget < self.cost(1):
            return 0
        spent = self.first.connect_fee
        for k, (offset, p) in enumerate(self.pieces):
            if offset >= UNLIMITED_SECONDS:
                return UNLIMITED_SECONDS
            window = (self.pieces[k + 1][0] if k + 1 < len(self.pieces) else UNLIMITED_SECONDS) - offset
            whole = self._charged(k, window, p)
            money = -(-(whole * p.per_minute) // 60)
            if spent + money <= budget:
                spent += money
                continue
            # ceil(C·ppm/60) ≤ left  ⇔  C ≤ floor(60·left/ppm); then the longest segment charged ≤ C
            most = 60 * (budget - spent) // p.per_minute
            if k == 0:
                length = p.initial + (most - p.initial) // p.increment * p.increment if most >= p.initial else 0
            else:
                length = most // p.increment * p.increment
            return min(offset + min(length, window - 1), UNLIMITED_SECONDS)
        return UNLIMITED_SECONDS

    @staticmethod
    def _charged(k: int, length: int, p: Price) -> int:
        return charged_seconds(length, p) if k == 0 else -(-length // p.increment) * p.increment


@lru_cache(maxsize=1 << 16)
def _flat(p: Price) -> Fare:
    return Fare(((0, p),))
