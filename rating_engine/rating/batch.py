"""Re-rating many calls at once: classify each distinct number once, then one vectorized
table lookup and one vectorized price over every call. Same rules as the one-call path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..numbering import Classification, classify
from .decision import ExtensionRules, Reason, decide_without_rate, rating_digits
from .plan import Plan
from .price import IntArray, charged_seconds_array, cost_array
from .table import NO_ROW, RateTable


@dataclass(frozen=True, slots=True)
class BatchResult:
    numbers: list[Classification]
    """One per distinct dialed string; `number_of` maps each call to it."""
    number_of: IntArray
    reasons: list[Reason]
    rows: IntArray
    """Rate row index per call, -1 when the call is not charged."""
    charged_seconds: IntArray
    costs: IntArray

    def __len__(self) -> int:
        return len(self.reasons)


def rate_batch(
    plan: Plan,
    table: RateTable,
    dialed: Sequence[str],
    starts: IntArray | int,
    billsec: IntArray,
    rules: ExtensionRules | None = None,
) -> BatchResult:
    index: dict[str, int] = {}
    number_of = np.fromiter((index.setdefault(d, len(index)) for d in dialed), np.int64, len(dialed))
    numbers = [classify(d, plan.country) for d in index]
    fixed: list[Reason | None] = []
    digits: list[str] = []
    for c in numbers:
        d = decide_without_rate(plan, c, rules)
        fixed.append(None if d is None else d.reason)
        digits.append(rating_digits(c, plan) if d is None else "")
    keys, lens = RateTable.keys_of(digits)
    rows = table.lookup_batch(keys[number_of], lens[number_of], starts)
    charged = rows != NO_ROW
    safe = np.where(charged, rows, 0)
    prices = table.prices.take(safe) if len(table) else None
    seconds = np.asarray(billsec, dtype=np.int64)
    if prices is None:
        zeros = np.zeros(len(dialed), dtype=np.int64)
        charged_s, costs = zeros, zeros
    else:
        charged_s = np.where(charged, charged_seconds_array(seconds, prices), 0)
        costs = np.where(charged, cost_array(seconds, prices), 0)
    reasons = [
        fixed[n] or (Reason.CHARGED if r != NO_ROW else Reason.NO_RATE)
        for n, r in zip(number_of.tolist(), rows.tolist(), strict=True)
    ]
    return BatchResult(numbers, number_of, reasons, rows, charged_s, costs)
