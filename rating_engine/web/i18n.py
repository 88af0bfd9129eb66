"""English and French: message catalogues (gettext .po, read with Babel), money and dates for
the reader's locale ("3,50 €" in French), and which language a request gets."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.core import Locale
from babel.dates import format_date, format_datetime
from babel.messages.pofile import read_po
from babel.numbers import format_currency

from ..errors import InvalidAmount
from ..money import MICRO, format_amount, parse_amount

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = {"en": "en_GB", "fr": "fr_FR"}
"""Language code → the Babel locale its numbers and dates are written in."""


@cache
def catalogue(language: str) -> dict[str, str]:
    """msgid → translation; English is the msgids themselves."""
    path = LOCALE_DIR / language / "messages.po"
    if language == "en" or not path.exists():
        return {}
    with path.open("rb") as f:
        po = read_po(f, locale=LANGUAGES[language])
    return {str(m.id): str(m.string) for m in po if m.id and m.string and not m.fuzzy}


@cache
def _locale(name: str) -> Locale:
    return Locale.parse(name)


@dataclass(frozen=True, slots=True)
class Tongue:
    """What a page needs to speak one language."""

    language: str

    @property
    def locale(self) -> Locale:
        """Babel's locale, parsed once per language (parsing it at every amount was most of a page's
        formatting time)."""
        return _locale(LANGUAGES[self.language])

    def gettext(self, text: str) -> str:
        return catalogue(self.language).get(text, text)

    def money(self, amount: int, currency: str) -> str:
        """Exact: micro-units as a Decimal, never rounded to cents for show (a call can cost 0.0158)."""
        return str(format_currency(Decimal(amount) / MICRO, currency, locale=self.locale, decimal_quantization=False))

    def when(self, unix: int, timezone: str) -> str:
        moment = datetime.fromtimestamp(unix, ZoneInfo(timezone))
        return str(format_datetime(moment, "short", locale=self.locale))

    def amount_input(self, amount: int, currency: str) -> str:
        """An amount as a form field holds it: no symbol, no grouping, the language's decimal mark."""
        text = format_amount(amount, currency)
        return text.replace(".", ",") if self.language == "fr" else text

    def parse_amount(self, text: str) -> int:
        """What an office's administrator types: "2,5" or "1 000,50" in French, "2.5" or
        "1,000.50" in English; a dot is read as the decimal mark in either. Anything that could be
        read two ways ("1,5" in English) is refused rather than guessed."""
        s = text.strip()
        if self.language == "fr":
            s = re.sub(r"(?<=\d)[ \u00a0\u202f](?=\d{3}(\D|$))", "", s)
            if "," in s and "." in s:
                raise InvalidAmount(f"not a decimal amount: {text!r}")
            s = s.replace(",", ".", 1) if s.count(",") == 1 else s
        elif "," in s:
            if _GROUPED.fullmatch(s) is None:
                raise InvalidAmount(f"not a decimal amount: {text!r}")
            s = s.replace(",", "")
        return parse_amount(s)

    def short_day(self, day: date) -> str:
        return str(format_date(day, "d MMM", locale=self.locale))

    def day_input(self, day: date) -> str:
        return f"{day.day:02d}/{day.month:02d}/{day.year:04d}"

    def parse_day(self, text: str) -> date | None:
        """A day as typed in the language's order (day/month/year in both, dots or dashes allowed),
        or as ISO 2026-12-01 (what the page's own links carry), from 1900 to 9998: the page works
        out the day after the last and a month before the first."""
        day = _read_day(text)
        return day if day is not None and _FIRST_DAY <= day <= _LAST_DAY else None

    def day_problem(self, text: str) -> str | None:
        """What to say beside a filter's day that `parse_day` refuses: a day out of the range is
        told as such, not as a typing slip."""
        if not text.strip():
            return None
        day = _read_day(text)
        if day is None:
            return self.gettext("A date, e.g. 01/12/2026.")
        return None if _FIRST_DAY <= day <= _LAST_DAY else self.gettext("A date from 1900 to 9998.")

    def action(self, action: str) -> str:
        """An audit line's action, recorded in the ledger's words ("set threshold"), in this language."""
        return self.gettext(ACTIONS.get(action, action))

    def helpers(self) -> dict[str, Callable[..., str]]:
        return {
            "_": self.gettext,
            "money": self.money,
            "when": self.when,
            "amount_input": self.amount_input,
            "action": self.action,
        }


ACTIONS = {
    "set plan": "Plan changed",
    "set threshold": "Threshold changed",
    "set on_low": "Below the threshold: changed",
    "set topup_amount": "Top-up amount changed",
    "set block_on_topup_failure": "Blocking after a failed top-up: changed",
    "set timezone": "Time zone changed",
    "set max_calls": "Simultaneous calls limit changed",
    "set max_attempts": "Call attempts limit changed",
    "set velocity_limit": "Hourly spending limit changed",
    "set blocked_prefixes": "Blocked prefixes changed",
    "set office_hours": "Office hours changed",
    "velocity limit reached": "Hourly spending limit reached",
    "set auto_topups_per_day": "Automatic top-ups per day changed",
    "automatic top-up resumed": "Automatic top-up resumed",
    "automatic top-up paused": "Automatic top-up paused after 3 failures",
    "automatic top-up failed": "Automatic top-up failed",
    "card saved": "Card saved",
    "balance below the threshold": "Balance below the threshold",
    "automatic top-up done": "Automatic top-up done",
    "payment awaits the customer": "Payment awaits your confirmation",
    "card expiring": "Card expiring within 30 days",
    "card removed": "Card removed",
    "funds added": "Funds added by hand",
    "top-up confirmed": "Top-up confirmed",
    "top-up refused": "Top-up refused",
}
"""The ledger's audit actions → the English the page shows (and translates)."""


_GROUPED = re.compile(r"-?\d{1,3}(,\d{3})+(\.\d+)?")
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_FIRST_DAY, _LAST_DAY = date(1900, 1, 1), date(9998, 12, 31)
_LOCAL_DAY = re.compile(r"(?P<d>\d{1,2})[/.-](?P<m>\d{1,2})[/.-](?P<y>\d{4})")


def _read_day(text: str) -> date | None:
    s = text.strip()
    try:
        if _ISO_DAY.fullmatch(s):
            return date.fromisoformat(s)
        m = _LOCAL_DAY.fullmatch(s)
        return None if m is None else date(int(m["y"]), int(m["m"]), int(m["d"]))
    except ValueError:
        return None


def choose(cookie: str | None, preferred: str | None, accept: str) -> str:
    """The language a request gets: the one chosen on the page, the user's, the browser's, English."""
    for candidate in (cookie, preferred):
        if candidate in LANGUAGES:
            return candidate
    for part in accept.split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "en"
