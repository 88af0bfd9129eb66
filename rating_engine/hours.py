"""Office hours: when an account's international and premium calls are allowed.

Pure: a text like "mon-fri 08:00-19:00; sat 09:00-12:00" is parsed once; whether a moment
falls inside is asked with the account's time zone. A range whose end is before its start
runs past midnight ("22:00-06:00" on a Friday covers Friday night into Saturday morning).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK_MINUTES = 7 * 24 * 60


@dataclass(frozen=True, slots=True)
class OfficeHours:
    text: str
    spans: tuple[tuple[int, int], ...]
    """Half-open intervals of minutes since Monday 00:00, local time."""

    @classmethod
    def parse(cls, text: str) -> OfficeHours:
        spans: list[tuple[int, int]] = []
        clauses = [c.strip() for c in text.split(";")]
        if not text.strip() or not all(clauses):
            raise ValueError('expected "DAYS HH:MM-HH:MM[; …]", e.g. "mon-fri 08:00-19:00"')
        for clause in clauses:
            days_text, _, times = clause.partition(" ")
            days = _days(days_text.strip().lower())
            start, end = _times(times.strip())
            for day in days:
                first = day * 1440 + start
                last = day * 1440 + end + (1440 if end <= start else 0)
                if last <= WEEK_MINUTES:
                    spans.append((first, last))
                else:  # Sunday night into Monday morning
                    spans += [(first, WEEK_MINUTES), (0, last - WEEK_MINUTES)]
        return cls(text, tuple(sorted(spans)))

    def contains(self, now: int, zone: tzinfo) -> bool:
        local = datetime.fromtimestamp(now, zone)
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        return any(a <= minute < b for a, b in self.spans)


def _days(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if first not in DAYS or (dash and last not in DAYS):
            raise ValueError(f"unknown day {part!r}: use {', '.join(DAYS)}, a range like mon-fri, or a list")
        a, b = DAYS.index(first), DAYS.index(last) if dash else DAYS.index(first)
        out += list(range(a, b + 1)) if a <= b else [*range(a, 7), *range(0, b + 1)]
    return out


def _times(text: str) -> tuple[int, int]:
    start, dash, end = text.partition("-")
    if not dash:
        raise ValueError(f"expected a time range like 08:00-19:00, got {text!r}")
    a, b = _minute(start), _minute(end)
    if a == b:
        raise ValueError(f"empty time range {text!r}")
    return a, b


def _minute(text: str) -> int:
    hh, colon, mm = text.strip().partition(":")
    ok = colon and len(hh) == 2 and len(mm) == 2 and (hh + mm).isascii() and (hh + mm).isdigit()
    if not ok or int(hh) > 24 or int(mm) > 59 or (int(hh) == 24 and int(mm) > 0):
        raise ValueError(f"not a time HH:MM: {text.strip()!r}")
    return int(hh) * 60 + int(mm)
