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


def cost_array(seconds: IntArray, p: PriceColumns) -> IntArray:
    """Vectorized `cost`: seconds[i] priced with row i of `p`."""
    s = np.asarray(seconds, dtype=np.int64)
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
