"""Rate decks: CSV rows of prefix prices, loaded all-or-nothing with every problem located.

Columns: prefix,destination,rate_per_minute,connect_fee,initial_increment,increment,
minimum_charge,valid_from,valid_until. The last four may be empty (increment defaults to
the initial increment, minimum to 0, validity to always). `#` starts a comment line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..errors import InvalidAmount, TariffError, TariffErrors
from ..money import parse_amount
from .price import MAX_INCREMENT, MAX_PRICE, Price

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
class Deck:
    rows: tuple[RateRow, ...]
    source: str = ""


def load_deck(path: str | Path) -> Deck:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TariffErrors([TariffError(f"cannot read deck: {exc.strerror}", str(p))]) from None
    except UnicodeDecodeError:
        raise TariffErrors([TariffError("deck is not UTF-8 text", str(p))]) from None
    return parse_deck(text, str(p))


def parse_deck(text: str, source: str = "<deck>") -> Deck:
    """Parse and validate a whole deck; raise TariffErrors listing every problem, or return it."""
    errors: list[TariffError] = []
    rows: list[RateRow] = []
    header_seen = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        cells = next(csv.reader([raw]))
        if not header_seen:
            header_seen = True
            names = tuple(c.strip().lower() for c in cells)
            if names != COLUMNS:
                errors.append(TariffError(f"header must be {','.join(COLUMNS)}", source, lineno, 1))
                break
            continue
        row = _parse_row(cells, source, lineno, errors)
        if row is not None:
            rows.append(row)
    if not header_seen:
        errors.append(TariffError("empty deck: no header line", source, 1, 1))
    errors.extend(_overlaps(rows, source))
    if errors:
        raise TariffErrors(errors)
    return Deck(tuple(rows), source)


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


def _overlaps(rows: list[RateRow], src: str) -> list[TariffError]:
    """Two rows of one prefix may not be valid at the same instant."""
    errors: list[TariffError] = []
    by_prefix: dict[str, list[RateRow]] = {}
    for r in rows:
        by_prefix.setdefault(r.prefix, []).append(r)
    for prefix, group in by_prefix.items():
        group.sort(key=lambda r: (r.valid_from, r.line))
        widest = group[0]
        for cur in group[1:]:
            if cur.valid_from < widest.valid_until:
                same = (widest.valid_from, widest.valid_until) == (cur.valid_from, cur.valid_until)
                what = "duplicate prefix" if same else "overlapping validity windows for prefix"
                errors.append(TariffError(f"{what} {prefix} (line {widest.line})", src, cur.line, 1))
            if cur.valid_until > widest.valid_until:
                widest = cur
    return errors
