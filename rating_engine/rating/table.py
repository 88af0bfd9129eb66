"""The compiled rate table: longest-prefix match as one `searchsorted`.

A prefix p of length L covers the 15-digit keys [p·10^(15−L), (p+1)·10^(15−L)). Prefix ranges
nest or are disjoint, so they flatten into disjoint intervals that each point at the most
specific row. Validity windows split time into epochs; each epoch has its own flattened
intervals, compiled once. A single number is looked up with `bisect` on `array` copies of the
same arrays (numpy costs ~2 µs to enter; an `array` is as fast as a list and takes 8 bytes an
entry, not 36); a batch with numpy. Both give the same row.

Compiling is vectorized too: the most specific row at each interval start is found by cutting
the start to each prefix length present and looking it up among the prefixes of that length,
longest first, so a deck of a million rows compiles in numpy time, not Python time.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .deck import FOREVER, SINCE_EVER, Deck, DeckColumns, RateRow
from .price import IntArray

KEY_DIGITS = 15
NO_ROW = -1
_SCALE: list[int] = [10 ** (KEY_DIGITS - n) for n in range(KEY_DIGITS + 1)]


def number_key(digits: str) -> int:
    """The 15-digit key of E.164 digits (no '+'); longer input is cut to 15 digits."""
    d = digits[:KEY_DIGITS]
    return int(d) * _SCALE[len(d)]


def _compact(a: IntArray) -> array[int]:
    out = array("q")
    out.frombytes(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return out


@dataclass(frozen=True, slots=True)
class _Epoch:
    starts: IntArray
    rows: IntArray
    parent: IntArray
    starts_list: array[int]
    rows_list: array[int]
    parent_list: array[int]

    @classmethod
    def of(cls, starts: IntArray, rows: IntArray, parent: IntArray) -> _Epoch:
        return cls.over(_compact(starts), _compact(rows), _compact(parent))

    @classmethod
    def over(cls, starts: array[int], rows: array[int], parent: array[int]) -> _Epoch:
        """numpy views of the `array`s: one copy of each column, used by both paths."""

        def view(a: array[int]) -> IntArray:
            return np.frombuffer(a, dtype=np.int64) if len(a) else np.zeros(0, np.int64)

        return cls(view(starts), view(rows), view(parent), starts, rows, parent)

    def __reduce__(self) -> tuple[object, ...]:
        return _Epoch.over, (self.starts_list, self.rows_list, self.parent_list)


class _Longest:
    """The active prefixes of one epoch by length: which one, if any, is the longest prefix of a key."""

    def __init__(self, cols: DeckColumns, active: IntArray) -> None:
        self.by_length: list[tuple[int, IntArray, IntArray]] = []  # (length, sorted values, row ids)
        lengths = cols.prefix_len[active]
        for length in np.flatnonzero(np.bincount(lengths, minlength=KEY_DIGITS + 1))[::-1].tolist():
            ids = active[lengths == length]
            order = np.argsort(cols.prefix_value[ids], kind="stable")
            self.by_length.append((length, cols.prefix_value[ids][order], ids[order]))

    def rows(self, keys: IntArray, key_len: IntArray | int, shorter_than: IntArray | int = KEY_DIGITS + 1) -> IntArray:
        """Per key (its first `key_len` digits count), the row of the longest prefix shorter than
        `shorter_than` digits that it starts with, or NO_ROW."""
        out = np.full(keys.shape, NO_ROW, dtype=np.int64)
        todo = np.ones(keys.shape, dtype=bool)
        for length, values, ids in self.by_length:
            want = todo & (np.asarray(shorter_than) > length) & (np.asarray(key_len) >= length)
            if not want.any():
                continue
            cut = keys[want] // (10 ** (KEY_DIGITS - length))
            at = np.minimum(np.searchsorted(values, cut), len(values) - 1)
            hit = values[at] == cut
            where = np.flatnonzero(want)[hit]
            out[where] = ids[at[hit]]
            todo[where] = False
        return out


class RateTable:
    """An immutable compiled deck. Rebuild to change; swap the reference to reload."""

    def __init__(self, deck: Deck) -> None:
        self.deck = deck
        cols = deck.columns
        self.rows: Sequence[RateRow] = deck.rows
        self.prices = cols.prices
        self.prefix_len = cols.prefix_len
        self._plen_list = _compact(cols.prefix_len)
        edges = set(cols.valid_from[cols.valid_from > SINCE_EVER].tolist())
        edges |= set(cols.valid_until[cols.valid_until < FOREVER].tolist())
        self.boundaries: list[int] = sorted(edges)
        self._boundaries_arr = np.array(self.boundaries, dtype=np.int64)
        self._epochs = [self._compile(t) for t in [SINCE_EVER, *self.boundaries]]

    def __len__(self) -> int:
        return len(self.rows)

    def _compile(self, t: int) -> _Epoch:
        cols = self.deck.columns
        active = np.flatnonzero((cols.valid_from <= t) & (t < cols.valid_until)).astype(np.int64)
        parent = np.full(len(cols), NO_ROW, dtype=np.int64)
        if active.size == 0:
            return _Epoch.of(np.zeros(1, np.int64), np.full(1, NO_ROW, np.int64), parent)
        scale = 10 ** (KEY_DIGITS - cols.prefix_len[active])
        lo = cols.prefix_value[active] * scale
        points = np.sort(np.concatenate((np.zeros(1, np.int64), lo, lo + scale)))  # np.unique hashes: slower
        points = points[np.concatenate(([True], points[1:] != points[:-1])) & (points < 10**KEY_DIGITS)]
        longest = _Longest(cols, active)
        at_point = longest.rows(points, KEY_DIGITS)
        keep = np.ones(points.shape, dtype=bool)
        keep[1:] = at_point[1:] != at_point[:-1]
        parent[active] = longest.rows(lo, KEY_DIGITS, cols.prefix_len[active])
        return _Epoch.of(points[keep], at_point[keep], parent)

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

    def lookup_batch(self, keys: IntArray, lengths: IntArray, at: IntArray | int) -> IntArray:
        """Row index per key (see `number_key`), judged at each call's start time."""
        keys = np.asarray(keys, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        out = np.full(keys.shape, NO_ROW, dtype=np.int64)
        if len(self.rows) == 0 or keys.size == 0:
            return out
        when = np.asarray(at, dtype=np.int64)
        if when.ndim == 0 or not self.boundaries or when.min() == when.max():  # one epoch: no masks
            first = when if when.ndim == 0 else when.flat[0]
            return self._in_epoch(self._epoch_at(int(first)), keys, lengths)
        epoch_of = np.searchsorted(self._boundaries_arr, np.broadcast_to(when, keys.shape), side="right")
        for ei in np.flatnonzero(np.bincount(epoch_of)).tolist():
            mask = epoch_of == ei
            out[mask] = self._in_epoch(self._epochs[ei], keys[mask], lengths[mask])
        return out

    def _in_epoch(self, e: _Epoch, keys: IntArray, lens: IntArray) -> IntArray:
        rows = e.rows[np.searchsorted(e.starts, keys, side="right") - 1]
        while True:
            too_long = (rows != NO_ROW) & (self.prefix_len[rows] > lens)
            if not too_long.any():
                break
            rows = np.where(too_long, e.parent[rows], rows)
        return np.where(lens > 0, rows, NO_ROW)

    @staticmethod
    def keys_of(numbers: Sequence[str]) -> tuple[IntArray, IntArray]:
        """Keys and lengths of E.164 digit strings ('' gives length 0, no match)."""
        keys = np.fromiter((number_key(d) if d else 0 for d in numbers), np.int64, len(numbers))
        lens = np.fromiter((min(len(d), KEY_DIGITS) for d in numbers), np.int64, len(numbers))
        return keys, lens
