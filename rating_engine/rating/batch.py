"""Re-rating many calls at once: classify each distinct number once, then one vectorized
table lookup and one vectorized price over every call. Same rules as the one-call path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..contract import Reason
from ..numbering import Classification, classify
from .decision import ExtensionRules, decide_without_rate, rating_digits
from .plan import Plan
from .price import IntArray, charged_seconds_array, cost_array
from .table import NO_ROW, RateTable

REASONS: tuple[Reason, ...] = tuple(Reason)
_CODE = {r: i for i, r in enumerate(REASONS)}
_CHARGED, _NO_RATE = _CODE[Reason.CHARGED], _CODE[Reason.NO_RATE]


@dataclass(frozen=True, slots=True)
class BatchResult:
    numbers: list[Classification]
    """One per distinct dialed string; `number_of` maps each call to it."""
    number_of: IntArray
    reason_codes: IntArray
    """Index into REASONS per call (an array: a million enum objects would cost more than rating)."""
    rows: IntArray
    """Rate row index per call, -1 when the call is not charged."""
    charged_seconds: IntArray
    costs: IntArray

    def __len__(self) -> int:
        return len(self.reason_codes)

    def reason(self, i: int) -> Reason:
        return REASONS[int(self.reason_codes[i])]


def rate_batch(
    plan: Plan,
    table: RateTable,
    dialed: Sequence[str],
    starts: IntArray | int,
    billsec: IntArray,
    rules: ExtensionRules | None = None,
) -> BatchResult:
    index = {d: i for i, d in enumerate(dict.fromkeys(dialed))}
    number_of = np.fromiter(map(index.__getitem__, dialed), np.int64, len(dialed))
    numbers = [classify(d, plan.country) for d in index]
    fixed = np.full(len(numbers), -1, dtype=np.int64)
    digits: list[str] = []
    for i, c in enumerate(numbers):
        d = decide_without_rate(plan, c, rules)
        if d is None:
            digits.append(rating_digits(c, plan))
        else:
            fixed[i] = _CODE[d.reason]
            digits.append("")
    keys, lens = RateTable.keys_of(digits)
    rows = table.lookup_batch(keys[number_of], lens[number_of], starts)
    charged = rows != NO_ROW
    seconds = np.asarray(billsec, dtype=np.int64)
    if len(table):
        prices = table.prices.take(np.where(charged, rows, 0))
        charged_s = np.where(charged, charged_seconds_array(seconds, prices), 0)
        costs = np.where(charged, cost_array(seconds, prices), 0)
    else:
        charged_s = costs = np.zeros(len(dialed), dtype=np.int64)
    codes = fixed[number_of]
    codes = np.where(codes >= 0, codes, np.where(charged, _CHARGED, _NO_RATE))
    return BatchResult(numbers, number_of, codes, rows, charged_s, costs)
