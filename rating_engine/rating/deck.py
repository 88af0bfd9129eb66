"""Rate decks: CSV rows of prefix prices, loaded all-or-nothing with every problem located.

Columns: prefix,destination,rate_per_minute,connect_fee,initial_increment,increment,
minimum_charge,valid_from,valid_until. The last four may be empty (increment defaults to
the initial increment, minimum to 0, validity to always). `#` starts a comment line.

A wholesale deck has hundreds of thousands of rows, so a deck is held as columns (numpy
arrays, destination names stored once) and a `RateRow` is made only when one is asked for.
Cells repeat (a few thousand prices for a million prefixes), so each distinct cell is parsed
once; a row the fast path does not take is read again by the checking path, which says what is
wrong with it, so both paths accept exactly the same rows.
"""

from __future__ import annotations

import csv
import gc
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import overload

import numpy as np

from ..errors import InvalidAmount, TariffError, TariffErrors
from ..money import parse_amount
from .price import MAX_INCREMENT, MAX_PRICE, IntArray, Price, PriceColumns

COLUMNS = (
    "prefix",
    "destination",
    "rate_per_minute",
    "connect_fee",
    "initial_increment",
    "increment",
    "minimum_charge",
    "valid_from",
    "valid_until",
)
MAX_PREFIX_DIGITS = 15
FOREVER = 2**62
SINCE_EVER = -(2**62)


@dataclass(frozen=True, slots=True)
class RateRow:
    prefix: str
    destination: str
    price: Price
    valid_from: int = SINCE_EVER
    """Unix seconds, inclusive; SINCE_EVER when the row has no start."""
    valid_until: int = FOREVER
    """Unix seconds, exclusive; FOREVER when the row has no end."""
    line: int = 0

    def active_at(self, t: int) -> bool:
        return self.valid_from <= t < self.valid_until


@dataclass(frozen=True, slots=True)
class DeckColumns:
    """One entry per row, aligned. The prefix is its integer value and its length (leading zeros)."""

    prefix_value: IntArray
    prefix_len: IntArray
    destination: IntArray
    """Index into `names`."""
    names: tuple[str, ...]
    prices: PriceColumns
    valid_from: IntArray
    valid_until: IntArray
    line: IntArray

    def __len__(self) -> int:
        return len(self.prefix_value)

    @classmethod
    def of(cls, rows: Sequence[RateRow]) -> DeckColumns:
        names: dict[str, int] = {}
        codes = [names.setdefault(r.destination, len(names)) for r in rows]

        def col(values: Sequence[int]) -> IntArray:
            return np.array(values, dtype=np.int64)

        return cls(
            col([int(r.prefix) for r in rows]),
            col([len(r.prefix) for r in rows]),
            col(codes),
            tuple(names),
            PriceColumns.from_prices([r.price for r in rows]),
            col([r.valid_from for r in rows]),
            col([r.valid_until for r in rows]),
            col([r.line for r in rows]),
        )

    def row(self, i: int) -> RateRow:
        p = self.prices
        return RateRow(
            str(int(self.prefix_value[i])).zfill(int(self.prefix_len[i])),
            self.names[int(self.destination[i])],
            Price(
                int(p.per_minute[i]), int(p.connect_fee[i]), int(p.initial[i]), int(p.increment[i]), int(p.minimum[i])
            ),
            int(self.valid_from[i]),
            int(self.valid_until[i]),
            int(self.line[i]),
        )


ROWS_KEPT = 16_384
"""Rows kept built, at most. A full scan (`tariffs show`) must not keep a million rows, and every
row kept is one more object for the cyclic collector to walk at each full collection, while the
event loop waits: 100,000 rows made each one ~25 ms longer. Building a row again costs a few µs."""


class Rows(Sequence[RateRow]):
    """The rows of a deck as a sequence, each built on first use and kept (the live path asks for
    the same few destinations again and again)."""

    __slots__ = ("_built", "_columns")

    def __init__(self, columns: DeckColumns) -> None:
        self._columns = columns
        self._built: dict[int, RateRow] = {}

    def __len__(self) -> int:
        return len(self._columns)

    @overload
    def __getitem__(self, i: int) -> RateRow: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[RateRow]: ...
    def __getitem__(self, i: int | slice) -> RateRow | Sequence[RateRow]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("rate row index out of range")
        row = self._built.get(i)
        if row is None:
            if len(self._built) >= ROWS_KEPT:
                self._built.clear()
            row = self._built[i] = self._columns.row(i)
        return row

    def __iter__(self) -> Iterator[RateRow]:
        return (self[i] for i in range(len(self)))

    def __reduce__(self) -> tuple[type[Rows], tuple[DeckColumns]]:
        return Rows, (self._columns,)  # rows are rebuilt on the other side, not pickled


class Deck:
    """A loaded, valid deck: its columns, and its rows on demand."""

    __slots__ = ("columns", "rows", "source")

    def __init__(self, rows: Sequence[RateRow] = (), source: str = "", *, columns: DeckColumns | None = None) -> None:
        self.columns = columns if columns is not None else DeckColumns.of(rows)
        self.rows = Rows(self.columns)
        self.source = source

    def __len__(self) -> int:
        return len(self.columns)

    def __reduce__(self) -> tuple[object, ...]:
        return _deck, (self.columns, self.source)


def _deck(columns: DeckColumns, source: str) -> Deck:
    return Deck(source=source, columns=columns)


def load_deck(path: str | Path) -> Deck:
    """Read a deck file line by line (a big deck is never in memory twice)."""
    p = Path(path)
    try:
        with p.open(encoding="utf-8") as f, _collector_paused():
            return _parse(f, str(p))
    except OSError as exc:
        raise TariffErrors([TariffError(f"cannot read deck: {exc.strerror}", str(p))]) from None
    except UnicodeDecodeError:
        raise TariffErrors([TariffError("deck is not UTF-8 text", str(p))]) from None


_BAD = -1
"""A cell that does not parse (amounts and seconds are never negative)."""
_BAD_TIME = SINCE_EVER - 1
_CHUNK = 1 << 16
"""Lines parsed column by column at a time: fast, and the cells of one chunk only in memory."""


class _Builder:
    """The columns of the rows accepted so far, and every distinct cell parsed once."""

    def __init__(self) -> None:
        self.chunks: list[list[IntArray]] = []
        self.names: dict[str, int] = {}
        self.amounts: dict[str, int] = {}
        self.seconds: dict[str, int] = {}
        self.instants: dict[str, int] = {"": 0}

    def _amount(self, text: str) -> int:
        try:
            value = parse_amount(text)
        except InvalidAmount:
            return _BAD
        return value if value <= MAX_PRICE else _BAD

    @staticmethod
    def _second(text: str) -> int:
        return int(text) if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_INCREMENT else _BAD

    @staticmethod
    def _instant(text: str) -> int:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return _BAD_TIME
        return int(when.timestamp()) if when.tzinfo is not None else _BAD_TIME

    @staticmethod
    def _column(cells: Sequence[str], cache: dict[str, int], parse: Callable[[str], int]) -> IntArray:
        for text in set(cells).difference(cache):
            cache[text] = parse(text)
        return np.fromiter(map(cache.__getitem__, cells), np.int64, len(cells))

    def take(self, rows: list[list[str]], lines: list[int]) -> list[int]:
        """Add the rows that are valid as they stand (9 cells each); return the positions
        of the others, for the checking path."""
        n = len(rows)
        if n == 0:
            return []
        prefix, dest, ppm, connect, initial, increment, minimum, since, until = (
            tuple(map(str.strip, col)) for col in zip(*rows, strict=True)
        )
        joined = "".join(prefix)
        if "+" in joined:
            prefix = tuple(p.removeprefix("+") for p in prefix)
            joined = "".join(prefix)
        bad = np.zeros(n, dtype=bool)
        if not (joined.isdigit() and joined.isascii()) or min(map(len, prefix)) < 1:
            bad |= np.fromiter((not (p.isdigit() and p.isascii()) for p in prefix), bool, n)
        length = np.fromiter(map(len, prefix), np.int64, n)
        bad |= length > MAX_PREFIX_DIGITS
        if bad.any():
            value = np.fromiter((int(p) if ok else 0 for p, ok in zip(prefix, ~bad, strict=True)), np.int64, n)
        else:
            value = np.fromiter(map(int, prefix), np.int64, n)
        if not all(dest):
            bad |= np.fromiter((not d for d in dest), bool, n)
        for name in dict.fromkeys(dest):
            self.names.setdefault(name, len(self.names))
        code = np.fromiter(map(self.names.__getitem__, dest), np.int64, n)
        money = [self._column(c, self.amounts, self._amount) for c in (ppm, connect, [m or "0" for m in minimum])]
        first = self._column(initial, self.seconds, self._second)
        then = self._column([b or a for a, b in zip(initial, increment, strict=True)], self.seconds, self._second)
        start = self._column(since, self.instants, self._instant)
        end = self._column(until, self.instants, self._instant)
        start[np.fromiter(map(operator.not_, since), bool, n)] = SINCE_EVER
        end[np.fromiter(map(operator.not_, until), bool, n)] = FOREVER
        for col in (*money, first, then):
            bad |= col == _BAD
        bad |= (start == _BAD_TIME) | (end == _BAD_TIME) | (start >= end)
        good = ~bad
        line = np.array(lines, dtype=np.int64)
        cols = [value, length, code, *money[:2], first, then, money[2], start, end, line]
        self.chunks.append([c[good] for c in cols])
        return np.flatnonzero(bad).tolist()

    def add(self, r: RateRow) -> None:
        p, code = r.price, self.names.setdefault(r.destination, len(self.names))
        values = [int(r.prefix), len(r.prefix), code, p.per_minute, p.connect_fee, p.initial, p.increment]
        values += [p.minimum, r.valid_from, r.valid_until, r.line]
        self.chunks.append([np.array([v], dtype=np.int64) for v in values])

    def columns(self) -> DeckColumns:
        if not self.chunks:
            a = [np.zeros(0, np.int64) for _ in range(11)]
        else:
            a = [np.concatenate(parts) for parts in zip(*self.chunks, strict=True)]
            order = np.argsort(a[10], kind="stable")  # a row the checking path accepted came later
            if (order != np.arange(len(order))).any():
                a = [x[order] for x in a]
        return DeckColumns(a[0], a[1], a[2], tuple(self.names), PriceColumns(*a[3:8]), a[8], a[9], a[10])


def parse_deck(text: str, source: str = "<deck>") -> Deck:
    """Parse and validate a whole deck; raise TariffErrors listing every problem, or return it."""
    with _collector_paused():
        return _parse(text.splitlines(), source)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Millions of short-lived lists make the cyclic collector walk every live object again and
    again (most of the time of a big deck); parsing makes no cycles, so it can wait."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _parse(lines: Iterable[str], source: str) -> Deck:
    errors: list[TariffError] = []
    built = _Builder()
    numbered = enumerate(lines, start=1)
    body = False
    for lineno, raw in numbered:
        if raw.strip() and not raw.lstrip().startswith("#"):
            names = tuple(c.strip().lower() for c in next(csv.reader([raw])))
            if names != COLUMNS:
                errors.append(TariffError(f"header must be {','.join(COLUMNS)}", source, lineno, 1))
            body = names == COLUMNS
            break
    else:
        errors.append(TariffError("empty deck: no header line", source, 1, 1))
    width = len(COLUMNS)
    while body and (block := list(islice(numbered, _CHUNK))):
        kept = [(n, text) for n, raw in block if (text := raw.strip()) and text[0] != "#"]
        # Without quotes a line's cells are its comma-separated parts, exactly as csv reads them.
        cells = [next(csv.reader([text])) if '"' in text else text.split(",") for _, text in kept]
        fits = [i for i, c in enumerate(cells) if len(c) == width]
        later = [fits[i] for i in built.take([cells[i] for i in fits], [kept[i][0] for i in fits])]
        if len(fits) < len(cells):
            later = sorted({*later, *(set(range(len(cells))) - set(fits))})
        for i in later:
            row = _parse_row(cells[i], source, kept[i][0], errors)
            if row is not None:
                built.add(row)
    columns = built.columns()
    errors.extend(_overlaps(columns, source))
    if errors:
        raise TariffErrors(errors)
    return Deck(source=source, columns=columns)


def _parse_row(cells: list[str], src: str, line: int, errors: list[TariffError]) -> RateRow | None:
    before = len(errors)
    if len(cells) != len(COLUMNS):
        errors.append(TariffError(f"expected {len(COLUMNS)} columns, found {len(cells)}", src, line, 1))
        return None
    c = [x.strip() for x in cells]

    def fail(col: int, msg: str) -> None:
        errors.append(TariffError(msg, src, line, col + 1))

    prefix = c[0].removeprefix("+")
    if not prefix.isdigit() or not prefix.isascii():
        fail(0, f"prefix must be digits: {c[0]!r}")
    elif len(prefix) > MAX_PREFIX_DIGITS:
        fail(0, f"prefix longer than {MAX_PREFIX_DIGITS} digits")
    if not c[1]:
        fail(1, "destination is empty")

    def amount(col: int, default: str | None = None) -> int:
        text = c[col] or default
        if text is None:
            fail(col, f"{COLUMNS[col]} is required")
            return 0
        try:
            value = parse_amount(text)
        except InvalidAmount as exc:
            fail(col, f"{COLUMNS[col]}: {exc}")
            return 0
        if value > MAX_PRICE:
            fail(col, f"{COLUMNS[col]}: at most {MAX_PRICE // 1_000_000:,} (currency units)")
            return 0
        return value

    def seconds(col: int, default: str | None = None) -> int:
        text = c[col] or default
        if not text or not (text.isascii() and text.isdigit()):
            fail(col, f"{COLUMNS[col]} must be a whole number of seconds: {c[col]!r}")
            return 1
        if not 1 <= int(text) <= MAX_INCREMENT:
            fail(col, f"{COLUMNS[col]} must be from 1 to {MAX_INCREMENT} seconds")
            return 1
        return int(text)

    def instant(col: int, default: int) -> int:
        if not c[col]:
            return default
        try:
            when = datetime.fromisoformat(c[col])
        except ValueError:
            fail(col, f"{COLUMNS[col]} is not an ISO 8601 date-time: {c[col]!r}")
            return default
        if when.tzinfo is None:
            fail(col, f"{COLUMNS[col]} needs a time zone (e.g. +00:00): {c[col]!r}")
            return default
        return int(when.timestamp())

    per_minute = amount(2)
    connect = amount(3)
    initial = seconds(4)
    increment = seconds(5, c[4] or "1")
    minimum = amount(6, "0")
    valid_from = instant(7, SINCE_EVER)
    valid_until = instant(8, FOREVER)
    if valid_from >= valid_until:
        fail(8, "valid_until must be after valid_from")
    if len(errors) > before:
        return None
    price = Price(per_minute, connect, initial, increment, minimum)
    return RateRow(prefix, c[1], price, valid_from, valid_until, line)


def _overlaps(columns: DeckColumns, src: str) -> list[TariffError]:
    """Two rows of one prefix may not be valid at the same instant.

    Prefixes are grouped in numpy; only the rare prefixes given more than once are compared row
    by row, in the order their first rows appear."""
    n = len(columns)
    if n < 2:
        return []
    order = np.lexsort((columns.prefix_value, columns.prefix_len))
    value, length = columns.prefix_value[order], columns.prefix_len[order]
    same = (value[1:] == value[:-1]) & (length[1:] == length[:-1])
    if not same.any():
        return []
    repeated = np.zeros(n, dtype=bool)
    repeated[1:] |= same
    repeated[:-1] |= same
    by_prefix: dict[str, list[RateRow]] = {}
    for i in sorted(int(x) for x in order[repeated]):
        r = columns.row(i)
        by_prefix.setdefault(r.prefix, []).append(r)
    errors: list[TariffError] = []
    for prefix, group in by_prefix.items():
        group.sort(key=lambda r: (r.valid_from, r.line))
        widest = group[0]
        for cur in group[1:]:
            if cur.valid_from < widest.valid_until:
                same_window = (widest.valid_from, widest.valid_until) == (cur.valid_from, cur.valid_until)
                what = "duplicate prefix" if same_window else "overlapping validity windows for prefix"
                errors.append(TariffError(f"{what} {prefix} (line {widest.line})", src, cur.line, 1))
            if cur.valid_until > widest.valid_until:
                widest = cur
    return errors
