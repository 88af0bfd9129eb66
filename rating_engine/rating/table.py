"""The compiled rate table: longest-prefix match as one `searchsorted`.

A prefix p of length L covers the 15-digit keys [p·10^(15−L), (p+1)·10^(15−L)). Prefix ranges
nest or are disjoint, so they flatten into disjoint intervals that each point at the most
specific row. Validity windows split time into epochs; each epoch has its own flattened
intervals, compiled once. A single number is looked up with `bisect` on plain lists built
from the same arrays (numpy costs ~2 µs to enter); a batch with numpy. Both give the same row.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .deck import FOREVER, SINCE_EVER, Deck, RateRow
from .price import PriceColumns

KEY_DIGITS = 15
NO_ROW = -1
_SCALE: list[int] = [10 ** (KEY_DIGITS - n) for n in range(KEY_DIGITS + 1)]
I64 = npt.NDArray[np.int64]


def number_key(digits: str) -> int:
    """The 15-digit key of E.164 digits (no '+'); longer input is cut to 15 digits."""
    d = digits[:KEY_DIGITS]
    return int(d) * _SCALE[len(d)]


@dataclass(frozen=True, slots=True)
class _Epoch:
    starts: I64
    rows: I64
    parent: I64
    starts_list: list[int]
    rows_list: list[int]
    parent_list: list[int]


class RateTable:
    """An immutable compiled deck. Rebuild to change; swap the reference to reload."""

    def __init__(self, deck: Deck) -> None:
        self.deck = deck
        self.rows: tuple[RateRow, ...] = deck.rows
        self.prices = PriceColumns.from_prices([r.price for r in deck.rows])
        self.prefix_len = np.array([len(r.prefix) for r in deck.rows], dtype=np.int64)
        self._plen_list: list[int] = self.prefix_len.tolist()
        edges = {r.valid_from for r in deck.rows if r.valid_from > SINCE_EVER}
        edges |= {r.valid_until for r in deck.rows if r.valid_until < FOREVER}
        self.boundaries: list[int] = sorted(edges)
        self._boundaries_arr = np.array(self.boundaries, dtype=np.int64)
        starts = [SINCE_EVER, *self.boundaries]
        self._epochs = [self._compile(t) for t in starts]

    def __len__(self) -> int:
        return len(self.rows)

    def _compile(self, t: int) -> _Epoch:
        active = [i for i, r in enumerate(self.rows) if r.active_at(t)]
        spans = []
        for i in active:
            p = self.rows[i].prefix
            scale = 10 ** (KEY_DIGITS - len(p))
            spans.append((int(p) * scale, len(p), (int(p) + 1) * scale, i))
        spans.sort()
        out_starts: list[int] = [0]
        out_rows: list[int] = [NO_ROW]
        parent = [NO_ROW] * len(self.rows)
        stack: list[tuple[int, int]] = []  # (end, row), innermost last

        def emit(pos: int, row: int) -> None:
            if out_starts[-1] == pos:
                out_rows[-1] = row
            elif out_rows[-1] != row:
                out_starts.append(pos)
                out_rows.append(row)

        def close_until(pos: int) -> None:
            while stack and stack[-1][0] <= pos:
                end, _ = stack.pop()
                emit(end, stack[-1][1] if stack else NO_ROW)

        for lo, _, hi, row in spans:
            close_until(lo)
            parent[row] = stack[-1][1] if stack else NO_ROW
            stack.append((hi, row))
            emit(lo, row)
        close_until(10**KEY_DIGITS)
        return _Epoch(
            np.array(out_starts, dtype=np.int64),
            np.array(out_rows, dtype=np.int64),
            np.array(parent, dtype=np.int64),
            out_starts,
            out_rows,
            parent,
        )

    def _epoch_at(self, at: int) -> _Epoch:
        return self._epochs[bisect_right(self.boundaries, at)]

    def lookup_index(self, digits: str, at: int) -> int:
        """Row index of the longest prefix of `digits` valid at unix time `at`, or -1."""
        if not digits:
            return NO_ROW
        e = self._epoch_at(at)
        row = e.rows_list[bisect_right(e.starts_list, number_key(digits)) - 1]
        n = len(digits)
        while row != NO_ROW and self._plen_list[row] > n:
            row = e.parent_list[row]
        return row

    def lookup(self, digits: str, at: int) -> RateRow | None:
        i = self.lookup_index(digits, at)
        return None if i == NO_ROW else self.rows[i]

    def lookup_batch(self, keys: I64, lengths: I64, at: I64 | int) -> I64:
        """Row index per key (see `number_key`), judged at each call's start time."""
        keys = np.asarray(keys, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        out = np.full(keys.shape, NO_ROW, dtype=np.int64)
        if len(self.rows) == 0 or keys.size == 0:
            return out
        when = np.broadcast_to(np.asarray(at, dtype=np.int64), keys.shape)
        epoch_of = np.searchsorted(self._boundaries_arr, when, side="right")
        for ei in np.unique(epoch_of):
            e = self._epochs[int(ei)]
            mask = epoch_of == ei
            rows = e.rows[np.searchsorted(e.starts, keys[mask], side="right") - 1]
            lens = lengths[mask]
            while True:
                too_long = (rows != NO_ROW) & (self.prefix_len[rows] > lens)
                if not too_long.any():
                    break
                rows = np.where(too_long, e.parent[rows], rows)
            out[mask] = np.where(lens > 0, rows, NO_ROW)
        return out

    @staticmethod
    def keys_of(numbers: Sequence[str]) -> tuple[I64, I64]:
        """Keys and lengths of E.164 digit strings ('' gives length 0, no match)."""
        keys = np.fromiter((number_key(d) if d else 0 for d in numbers), np.int64, len(numbers))
        lens = np.fromiter((min(len(d), KEY_DIGITS) for d in numbers), np.int64, len(numbers))
        return keys, lens
