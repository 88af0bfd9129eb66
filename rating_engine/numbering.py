"""Dialed digits + the account's country → E.164, region and kind, with phonenumbers.

Pure and cached: classification is the dominant cost per distinct number (~20-40 µs in
phonenumbers), so every result is memoised by (dialed, country). Invalid input never raises
from the library: it gives a `Classification` whose kind is `invalid` and a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberType, shortnumberinfo
from phonenumbers.shortnumberinfo import ShortNumberCost


class Kind(StrEnum):
    FIXED = "fixed"
    MOBILE = "mobile"
    FIXED_OR_MOBILE = "fixed_or_mobile"
    PREMIUM = "premium"
    TOLL_FREE = "toll_free"
    SHARED_COST = "shared_cost"
    VOIP = "voip"
    PERSONAL = "personal"
    PAGER = "pager"
    UAN = "uan"
    VOICEMAIL = "voicemail"
    EMERGENCY = "emergency"
    SHORT_CODE = "short_code"
    UNKNOWN = "unknown"
    INVALID = "invalid"


_TYPE_TO_KIND: dict[int, Kind] = {
    PhoneNumberType.FIXED_LINE: Kind.FIXED,
    PhoneNumberType.MOBILE: Kind.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: Kind.FIXED_OR_MOBILE,
    PhoneNumberType.PREMIUM_RATE: Kind.PREMIUM,
    PhoneNumberType.TOLL_FREE: Kind.TOLL_FREE,
    PhoneNumberType.SHARED_COST: Kind.SHARED_COST,
    PhoneNumberType.VOIP: Kind.VOIP,
    PhoneNumberType.PERSONAL_NUMBER: Kind.PERSONAL,
    PhoneNumberType.PAGER: Kind.PAGER,
    PhoneNumberType.UAN: Kind.UAN,
    PhoneNumberType.VOICEMAIL: Kind.VOICEMAIL,
    PhoneNumberType.UNKNOWN: Kind.UNKNOWN,
}

_SHORT_COST = {
    ShortNumberCost.TOLL_FREE: "toll_free",
    ShortNumberCost.STANDARD_RATE: "standard_rate",
    ShortNumberCost.PREMIUM_RATE: "premium_rate",
    ShortNumberCost.UNKNOWN_COST: "unknown",
}

# What people type between digits; anything else left after removing it is refused.
_SEPARATORS = re.compile(r"[\s\-.()/]")
_DIALABLE = re.compile(r"\+?[0-9]+")
MAX_SHORT_LENGTH = 6


@dataclass(frozen=True, slots=True)
class Classification:
    """What a dialed string is. `e164` holds digits with a leading '+', or the short code."""

    dialed: str
    e164: str
    region: str
    kind: Kind
    reason: str = ""
    short_cost: str = ""

    @property
    def valid(self) -> bool:
        return self.kind is not Kind.INVALID

    @property
    def digits(self) -> str:
        """E.164 digits without '+', the key of the rate tables (empty for short codes)."""
        return self.e164[1:] if self.e164.startswith("+") else ""


def normalize(dialed: str) -> str:
    return _SEPARATORS.sub("", dialed.strip())


def classify(dialed: str, country: str) -> Classification:
    """Classify what was dialed from an extension in `country` (ISO 3166 alpha-2)."""
    return _classify(dialed, country.upper())


@lru_cache(maxsize=262_144)
def _classify(dialed: str, country: str) -> Classification:
    text = normalize(dialed)
    if not text:
        return Classification(dialed, "", "", Kind.INVALID, "empty number")
    if not _DIALABLE.fullmatch(text):
        return Classification(dialed, "", "", Kind.INVALID, "not a dialable number")
    if not text.startswith("+") and len(text) <= MAX_SHORT_LENGTH:
        short = _classify_short(dialed, text, country)
        if short is not None:
            return short
    try:
        number = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException as exc:
        return Classification(dialed, "", "", Kind.INVALID, _parse_reason(exc))
    e164 = f"+{number.country_code}{_national(number)}"
    region = phonenumbers.region_code_for_number(number) or ""
    if not phonenumbers.is_possible_number(number):
        return Classification(dialed, e164, region, Kind.INVALID, "impossible number length")
    kind = _TYPE_TO_KIND.get(phonenumbers.number_type(number), Kind.UNKNOWN)
    if kind is Kind.UNKNOWN:
        return Classification(dialed, e164, region, Kind.INVALID, "no such number range")
    return Classification(dialed, e164, region, kind)


def _classify_short(dialed: str, digits: str, country: str) -> Classification | None:
    try:
        if shortnumberinfo.is_emergency_number(digits, country):
            return Classification(dialed, digits, country, Kind.EMERGENCY)
        number = phonenumbers.parse(digits, country)
        if shortnumberinfo.is_valid_short_number_for_region(number, country):
            cost = _SHORT_COST.get(shortnumberinfo.expected_cost_for_region(number, country), "")
            return Classification(dialed, digits, country, Kind.SHORT_CODE, short_cost=cost)
    except phonenumbers.NumberParseException:
        return None
    return None


def _national(number: phonenumbers.PhoneNumber) -> str:
    leading = "0" * (number.number_of_leading_zeros or 1) if number.italian_leading_zero else ""
    return f"{leading}{number.national_number}"


def _parse_reason(exc: phonenumbers.NumberParseException) -> str:
    return {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.NumberParseException.NOT_A_NUMBER: "not a number",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }.get(exc.error_type, "not a number")


def cache_info() -> str:
    return str(_classify.cache_info())
