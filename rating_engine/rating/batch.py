"""Re-rating many calls at once: the dialed strings classified as columns (`classify_column`),
the plan's decision made once per number class, then one vectorized table lookup and one
vectorized price over every call. Same rules as the one-call path, which the tests hold it to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..contract import Reason
from ..dialed_column import Column, classify_column
from ..number_table import POWERS_OF_TEN
from ..number_table import table as number_table
from ..numbering import Classification, views
from .decision import ExtensionRules, decide_without_rate, rating_digits
from .plan import Plan
from .price import IntArray, charged_seconds_array, cost_array
from .rates import PlanRates
from .table import KEY_DIGITS, NO_ROW, RateTable, number_key

REASONS: tuple[Reason, ...] = tuple(Reason)
_CODE = {r: i for i, r in enumerate(REASONS)}
_CHARGED, _NO_RATE = _CODE[Reason.CHARGED], _CODE[Reason.NO_RATE]
_INVALID, _BLOCKED = _CODE[Reason.INVALID_NUMBER], _CODE[Reason.BLOCKED_DESTINATION]
_RATE = -1
_P10 = POWERS_OF_TEN


@dataclass(frozen=True, slots=True)
class BatchResult:
    column: Column
    """Each call's number: `number(i)`."""
    reason_codes: IntArray
    """Index into REASONS per call (an array: a million enum objects would cost more than rating)."""
    rows: IntArray
    """Rate row index per call, -1 when the call is not charged."""
    charged_seconds: IntArray
    costs: IntArray
    bands: IntArray
    """The time band at each call's start (0 when the plan has none): `rows` index its table."""

    def __len__(self) -> int:
        return len(self.reason_codes)

    def reason(self, i: int) -> Reason:
        return REASONS[int(self.reason_codes[i])]

    def number(self, i: int) -> Classification:
        return self.column.number(i)


def rate_batch(
    plan: Plan,
    table: RateTable | PlanRates,
    dialed: Sequence[str],
    starts: IntArray | int,
    billsec: IntArray,
    rules: ExtensionRules | None = None,
    tz: str | None = None,
) -> BatchResult:
    col = classify_column(dialed, plan.country)
    codes = _class_codes(plan, rules)[np.maximum(col.cls, 0)]
    prefixes = plan.blocked_prefixes + (rules.blocked_prefixes if rules is not None else ())
    if prefixes:
        codes = np.where((codes != _INVALID) & _starts_with_any(col, prefixes), _BLOCKED, codes)
    key_len = np.minimum(col.length, KEY_DIGITS)
    keys = np.where(
        col.length <= KEY_DIGITS,
        col.value * _P10[np.clip(KEY_DIGITS - col.length, 0, 18)],
        col.value // _P10[np.clip(col.length - KEY_DIGITS, 0, 18)],
    )
    for i, c in col.slow.items():  # few: short codes, separators, the forms parse decides
        d = decide_without_rate(plan, c, rules)
        codes[i] = _RATE if d is None else _CODE[d.reason]
        digits = rating_digits(c, plan) if d is None else ""
        keys[i], key_len[i] = (number_key(digits), min(len(digits), KEY_DIGITS)) if digits else (0, 0)
    to_rate = codes == _RATE
    rates = table if isinstance(table, PlanRates) else PlanRates.single(table)
    seconds = np.asarray(billsec, dtype=np.int64)
    when = np.broadcast_to(np.asarray(starts, dtype=np.int64), seconds.shape)
    lens = np.where(to_rate, key_len, 0)
    if rates.bands is None:
        rows = rates.tables[0].lookup_batch(keys, lens, starts)
        charged_s, costs = _flat_costs(rates.tables[0], rows, seconds)
        start_band = np.zeros(len(rows), dtype=np.int64)
    else:
        looked: dict[int, IntArray] = {}  # bands that share a deck share its lookup
        for b, slot in enumerate(rates.table_slots()):
            if slot not in looked:
                looked[slot] = rates.tables[b].lookup_batch(keys, lens, when)
        by_band = [looked[slot] for slot in rates.table_slots()]
        first, span = (int(when.min()), int(np.ptp(when)) + 1) if len(when) else (0, 1)
        edges, bands = rates.bands.timeline(rates.zone(tz), first, span)
        start_band = np.asarray(bands, dtype=np.int64)[np.searchsorted(edges, when, side="right") - 1]
        rows = np.choose(start_band, by_band) if len(by_band) > 1 else by_band[0]
        charged = rows != NO_ROW
        costs, charged_s = rates.segment_costs(by_band, start_band, when, np.where(charged, seconds, 0), tz)
        costs, charged_s = np.where(charged, costs, 0), np.where(charged, charged_s, 0)
    charged = rows != NO_ROW
    codes = np.where(to_rate, np.where(charged, _CHARGED, _NO_RATE), codes)
    return BatchResult(col, codes, rows, charged_s, costs, start_band)


def _flat_costs(table: RateTable, rows: IntArray, seconds: IntArray) -> tuple[IntArray, IntArray]:
    charged = rows != NO_ROW
    if not len(table):
        zero = np.zeros(len(rows), dtype=np.int64)
        return zero, zero
    prices = table.prices.take(np.where(charged, rows, 0))
    billed = charged_seconds_array(seconds, prices)
    return np.where(charged, billed, 0), np.where(charged, cost_array(seconds, prices, billed), 0)


def _class_codes(plan: Plan, rules: ExtensionRules | None) -> IntArray:
    """Per class of the number table, the plan's decision (a REASONS index, or _RATE), blocked
    prefixes aside: they depend on the digits, and `rate_batch` applies them per call."""
    by_number = replace(plan, blocked_prefixes=())
    by_number_rules = replace(rules, blocked_prefixes=()) if rules is not None else None
    out = np.empty(len(views(number_table())), dtype=np.int64)
    for cid, (region, kind, reason) in enumerate(views(number_table())):
        d = decide_without_rate(by_number, Classification("", "", region, kind, reason), by_number_rules)
        out[cid] = _RATE if d is None else _CODE[d.reason]
    return out


def _starts_with_any(col: Column, prefixes: tuple[str, ...]) -> IntArray:
    """Per call, whether its E.164 digits start with one of the prefixes (blocked destinations)."""
    out = np.zeros(len(col), dtype=bool)
    for p in prefixes:
        if p.isdigit() and len(p) <= 18:
            head = col.value // _P10[np.clip(col.length - len(p), 0, 18)]
            out |= (col.length >= len(p)) & (head == int(p))
    return out
