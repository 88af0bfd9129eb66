"""Integer money: micro-units (1e-6) of the account currency, parsed and printed exactly.

No float ever touches an amount: parsing goes from the decimal string's digits straight
to an integer, and an amount with more than six decimals is refused rather than rounded.
"""

from __future__ import annotations

import re

from .errors import InvalidAmount

MICRO = 1_000_000
"""Micro-units in one currency unit."""

MAX_AMOUNT = 10**15
"""The largest amount accepted anywhere (one billion currency units): every sum the ledger keeps
stays far inside a signed 64-bit integer, in SQLite and in PostgreSQL's BIGINT."""

DECIMALS = 6

# ISO 4217 minor units for the currencies an operator is likely to bill in; others default to 2.
MINOR_UNITS: dict[str, int] = {
    "EUR": 2,
    "USD": 2,
    "GBP": 2,
    "CHF": 2,
    "CAD": 2,
    "AUD": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "CZK": 2,
    "HUF": 2,
    "RON": 2,
    "MAD": 2,
    "XOF": 0,
    "XAF": 0,
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "CLP": 0,
    "BHD": 3,
    "KWD": 3,
    "TND": 3,
    "OMR": 3,
}

_AMOUNT = re.compile(r"(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?")  # ASCII digits only


def parse_amount(text: str, *, allow_negative: bool = False) -> int:
    """Parse "12", "0.0125", "-3.5" into micro-units; exponents, commas, floats, digits other than
    ASCII and amounts beyond `MAX_AMOUNT` are refused."""
    if not isinstance(text, str):
        raise InvalidAmount(f"amount must be a decimal string, not {type(text).__name__}")
    s = text.strip()
    m = _AMOUNT.fullmatch(s)
    if not s or m is None or (not m["int"] and not m["frac"]):
        raise InvalidAmount(f"not a decimal amount: {text!r}")
    if len(m["int"].lstrip("0")) > 10:
        raise InvalidAmount(f"amount too large (at most {MAX_AMOUNT // MICRO:,} units): {text!r}")
    frac = m["frac"] or ""
    if len(frac) > DECIMALS:
        if frac[DECIMALS:].strip("0"):
            raise InvalidAmount(f"more than {DECIMALS} decimals: {text!r}")
        frac = frac[:DECIMALS]
    value = int(m["int"] or "0") * MICRO + int(frac.ljust(DECIMALS, "0"))
    if m["sign"] == "-":
        value = -value
    if value < 0 and not allow_negative:
        raise InvalidAmount(f"negative amount: {text!r}")
    if abs(value) > MAX_AMOUNT:
        raise InvalidAmount(f"amount too large (at most {MAX_AMOUNT // MICRO:,} units): {text!r}")
    return value


def minor_units(currency: str) -> int:
    return MINOR_UNITS.get(currency.upper(), 2)


def format_amount(amount: int, currency: str = "EUR") -> str:
    """Micro-units as a decimal string with the currency's minor units, more only if needed.

    Exact: 1_500_000 EUR → "1.50", 12_345 EUR → "0.012345". Never rounds.
    """
    if not isinstance(amount, int):
        raise TypeError("amounts are integers of micro-units")
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), MICRO)
    digits = f"{frac:06d}".rstrip("0")
    digits = digits.ljust(minor_units(currency), "0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def format_money(amount: int, currency: str) -> str:
    """For people: "1.50 EUR"."""
    return f"{format_amount(amount, currency)} {currency}"
