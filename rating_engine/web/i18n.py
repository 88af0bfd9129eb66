"""English and French: message catalogues (gettext .po, read with Babel), money and dates for
the reader's locale ("3,50 €" in French), and which language a request gets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from babel.messages.pofile import read_po
from babel.numbers import format_currency

from ..money import MICRO

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


@dataclass(frozen=True, slots=True)
class Tongue:
    """What a page needs to speak one language."""

    language: str

    @property
    def locale(self) -> str:
        return LANGUAGES[self.language]

    def gettext(self, text: str) -> str:
        return catalogue(self.language).get(text, text)

    def money(self, amount: int, currency: str) -> str:
        """Exact: micro-units as a Decimal, never rounded to cents for show (a call can cost 0.0158)."""
        return str(format_currency(Decimal(amount) / MICRO, currency, locale=self.locale, decimal_quantization=False))

    def when(self, unix: int, timezone: str) -> str:
        moment = datetime.fromtimestamp(unix, ZoneInfo(timezone))
        return str(format_datetime(moment, "short", locale=self.locale))

    def helpers(self) -> dict[str, Callable[..., str]]:
        return {"_": self.gettext, "money": self.money, "when": self.when}


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
