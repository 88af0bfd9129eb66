"""Time bands: when peak, off-peak, weekend and holiday prices apply, in the account's time zone.

A bands file (CSV) gives, line by line, a band and the days and hours it covers:

    band,days,from,until
    peak,mon-fri,08:00,19:00
    offpeak,mon-fri,00:00,08:00
    offpeak,mon-fri,19:00,24:00
    weekend,sat-sun,00:00,24:00
    holiday,holiday,00:00,24:00

`days` is a day (mon … sun), a range (mon-fri), several joined by `|` (sat|sun), or `holiday`:
the plan's list of public holidays, which then take the holiday lines instead of their weekday's.
Every minute of the week must be covered exactly once (and every minute of a holiday, if there
is a holiday line): an overlap or a gap is an error naming the lines, or the day and hours left
uncovered. Hours are local wall time, from inclusive to until exclusive, 24:00 for midnight at
the end; a band across midnight is two lines.

`Bands.timeline` turns this into UTC instants where the band changes, for a time zone: the
pricing of a call crossing them (`price.Fare`) and the batch path both read it. Pure: the file is
parsed from its text, zoneinfo reads only the system's time zone data.
"""

from __future__ import annotations

import csv
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import TariffError, TariffErrors

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOLIDAY = 7
"""The eighth day type: a listed public holiday."""
MINUTES = 24 * 60
HEADER = ("band", "days", "from", "until")


@dataclass(frozen=True, slots=True)
class Bands:
    """The band calendar: per day type (mon … sun, holiday), (from, until, band) in minutes."""

    names: tuple[str, ...]
    days: tuple[tuple[tuple[int, int, int], ...], ...]
    """Eight entries; the holiday entry is empty when holidays are ordinary days."""
    holidays: frozenset[date] = frozenset()
    source: str = ""
    _timelines: dict[tuple[str, int], tuple[list[int], list[int], int]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def day_type(self, d: date) -> int:
        return HOLIDAY if self.days[HOLIDAY] and d in self.holidays else d.weekday()

    def band_at(self, t: int, tz: str) -> int:
        edges, bands = self.timeline(tz, t)
        return bands[bisect_right(edges, t) - 1]

    def timeline(self, tz: str, t: int, span: int = 8 * 86400) -> tuple[list[int], list[int]]:
        """UTC instants where a band starts, and the band, from before `t` to `span` seconds after:
        made per week of the zone and kept (a few hundred bytes each)."""
        week = (t // (7 * 86400)) - 1
        key = (tz, week)
        got = self._timelines.get(key)
        if got is None or got[2] < t + span:
            if len(self._timelines) > 1024:
                self._timelines.clear()
            got = self._timelines[key] = self._build(tz, week * 7 * 86400, t + span + 86400)
        return got[0], got[1]

    def _build(self, tz: str, t0: int, t1: int) -> tuple[list[int], list[int], int]:
        """(edges, bands, until): the changes from before t0 to `until` ≥ t1, day by local day."""
        zone = zone_info(tz)
        day = datetime.fromtimestamp(t0, zone).date() - timedelta(days=1)
        edges: list[int] = []
        bands: list[int] = []
        while True:
            midnight = local_instant(day, 0, zone)
            if midnight > t1:
                return edges, bands, midnight  # a calendar of one band has one edge: still done
            for start, _until, band in self.days[self.day_type(day)]:
                at = local_instant(day, start, zone)
                if edges and at <= edges[-1]:  # a DST gap or fold ate the previous piece
                    edges.pop()
                    bands.pop()
                if not bands or bands[-1] != band:
                    edges.append(at)
                    bands.append(band)
            day += timedelta(days=1)


def local_instant(day: date, minute: int, zone: ZoneInfo) -> int:
    """Unix time of a local wall time (the first one, where a DST change makes two)."""
    naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minute)
    return int(naive.replace(tzinfo=zone).timestamp())


@lru_cache(maxsize=256)
def zone_info(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise TariffError(f"unknown time zone {tz!r}") from None


def _days(text: str) -> list[int] | None:
    out: list[int] = []
    for part in text.strip().lower().split("|"):
        if part == "holiday":
            out.append(HOLIDAY)
            continue
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            return None
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            return None
        out.extend(range(a, b + 1))
    return out


def _minute(text: str) -> int | None:
    hh, sep, mm = text.strip().partition(":")
    if not sep or not (hh.isdigit() and mm.isdigit() and len(mm) == 2 and 1 <= len(hh) <= 2):
        return None
    m = int(hh) * 60 + int(mm)
    return m if int(mm) < 60 and m <= MINUTES else None


def parse_bands(lines: Iterable[str], source: str, holidays: Iterable[date] = ()) -> Bands:
    """A bands file's text → `Bands`; every problem reported at once, with its line."""
    errors: list[TariffError] = []
    names: dict[str, int] = {}
    pieces: list[list[tuple[int, int, int, int]]] = [[] for _ in range(8)]  # (from, until, band, line)
    header_seen = False
    for number, row in enumerate(csv.reader(lines), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in row]
        if not header_seen and tuple(c.lower() for c in cells[:4]) == HEADER:
            header_seen = True
            continue
        header_seen = True

        def fail(msg: str, line: int = number) -> None:
            errors.append(TariffError(msg, source, line))

        if len(cells) != 4:
            fail(f"expected 4 columns (band,days,from,until), found {len(cells)}")
            continue
        band, days_text, a_text, b_text = cells
        days = _days(days_text)
        a, b = _minute(a_text), _minute(b_text)
        if not band or not all(c.isalnum() or c in "-_" for c in band):
            fail(f"band name must be letters, digits, - or _: {band!r}")
        elif days is None:
            fail(f"days must be mon … sun, a range like mon-fri, several joined by |, or holiday: {days_text!r}")
        elif a is None or b is None or a >= MINUTES:
            fail(f"hours must be HH:MM from 00:00 to 24:00: {a_text!r}, {b_text!r}")
        elif a >= b:
            fail(f"from {a_text} is not before until {b_text}: a band across midnight is two lines")
        else:
            band_id = names.setdefault(band, len(names))
            for d in days:
                pieces[d].append((a, b, band_id, number))
    for d, day in enumerate(pieces):
        if d == HOLIDAY and not day:
            continue
        day.sort()
        name = "holidays" if d == HOLIDAY else DAYS[d]
        reached = 0
        last_line = 0
        for a, b, _band, line in day:
            if a < reached:
                errors.append(TariffError(f"{name}: overlaps line {last_line} from {hhmm(a)}", source, line))
            elif a > reached:
                errors.append(TariffError(f"{name}: no band from {hhmm(reached)} to {hhmm(a)}", source, line))
            if b > reached:
                reached, last_line = b, line
        if reached < MINUTES:
            errors.append(TariffError(f"{name}: no band from {hhmm(reached)} to 24:00", source, last_line))
    if not names and not errors:
        errors.append(TariffError("no bands", source))
    listed = frozenset(holidays)
    if listed and not pieces[HOLIDAY] and not errors:
        errors.append(TariffError("holidays are listed but no line covers `holiday`", source))
    if errors:
        raise TariffErrors(errors)
    days_out = tuple(tuple((a, b, band) for a, b, band, _line in day) for day in pieces)
    return Bands(tuple(names), days_out, listed, source)


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
