"""Dialed digits + the account's country → E.164, region and kind, as phonenumbers says.

Parsing (national and international prefixes) is phonenumbers' `parse`, or `fast_parse` for the
forms where parse would do nothing more; the region, kind and validity of the parsed number are
read from `number_table`, phonenumbers' metadata compiled into ranges. Pure and cached per
(dialed, country). Invalid input never raises: it gives a `Classification` whose kind is
`invalid` and a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumberType, shortnumberinfo
from phonenumbers.shortnumberinfo import ShortNumberCost

from . import number_table


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


CLASSIFIED_KEPT = 16_384
"""Classifications cached, at most: an office dials the same few thousand numbers, and a
classification not cached costs ~7 µs. Each one kept is an object the cyclic collector walks at
every full collection, with the event loop stopped: 200,000 distinct numbers (a call centre's
lists) made each full collection 67 ms instead of 2."""


@lru_cache(maxsize=CLASSIFIED_KEPT)
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
    number = fast_parse(text, country)
    if number is None:
        try:
            number = phonenumbers.parse(text, country)
        except phonenumbers.NumberParseException as exc:
            return Classification(dialed, "", "", Kind.INVALID, _parse_reason(exc))
    return of_number(dialed, number)


def of_number(dialed: str, number: phonenumbers.PhoneNumber) -> Classification:
    """A parsed number's region and kind: phonenumbers' answers, read from the compiled table."""
    digits = f"{number.country_code}{_national(number)}"
    cid = number_table.table().class_id(digits)
    if cid >= 0:
        return of_class(cid, dialed, digits)
    return _asked(dialed, number, digits)  # outside the table (ASK, or lengths parse never gives)


def of_class(cid: int, dialed: str, digits: str) -> Classification:
    """The classification of E.164 `digits` (no '+') whose class in the table in use is `cid`."""
    region, kind, reason = views(number_table.table())[cid]
    return Classification(dialed, f"+{digits}", region, kind, reason)


@lru_cache(maxsize=4)
def views(t: number_table.NumberTable) -> tuple[tuple[str, Kind, str], ...]:
    """Each class of a table as (region, Kind, reason), made once per table."""
    return tuple((c.region, Kind.INVALID if c.reason else _TYPE_TO_KIND[c.kind], c.reason) for c in t.classes)


def _asked(dialed: str, number: phonenumbers.PhoneNumber, digits: str) -> Classification:
    """A country code whose patterns did not compile: phonenumbers itself, in the table's terms."""
    e164 = f"+{digits}"
    region = phonenumbers.region_code_for_number(number) or ""
    if not phonenumbers.is_possible_number(number):
        return Classification(dialed, e164, region, Kind.INVALID, number_table.IMPOSSIBLE)
    kind = _TYPE_TO_KIND.get(phonenumbers.number_type(number), Kind.UNKNOWN)
    if kind is Kind.UNKNOWN:
        return Classification(dialed, e164, region, Kind.INVALID, number_table.NO_RANGE)
    return Classification(dialed, e164, region, kind)


@dataclass(frozen=True, slots=True)
class _Dialing:
    """A region's literal dialing prefixes, when they are plain digits."""

    idd: str
    national: str


@lru_cache(maxsize=512)
def _dialing(region: str) -> _Dialing:
    meta = PhoneMetadata.metadata_for_region(region)
    if meta is None:
        return _Dialing("", "")
    idd = meta.international_prefix or ""
    national = meta.national_prefix or ""
    npp = meta.national_prefix_for_parsing
    plain_national = national.isdigit() and meta.national_prefix_transform_rule is None and npp in (None, national)
    return _Dialing(idd if idd.isdigit() else "", national if plain_national else "")


@lru_cache(maxsize=512)
def _country(cc: int) -> tuple[re.Pattern[str] | None, frozenset[int]] | None:
    region = phonenumbers.region_code_for_country_code(cc)
    meta = PhoneMetadata.metadata_for_region_or_calling_code(cc, region)
    if meta is None:
        return None
    npp = re.compile(meta.national_prefix_for_parsing) if meta.national_prefix_for_parsing else None
    general = meta.general_desc
    return npp, frozenset(general.possible_length or ()) if general is not None else frozenset()


def fast_parse(text: str, country: str) -> phonenumbers.PhoneNumber | None:
    """`phonenumbers.parse` for the unambiguous forms, ~10x cheaper; None means "ask parse".

    Handles "+CC…", the country's literal international prefix ("00", "011") and its literal
    national prefix ("0"), only where parse would do nothing more: the national number does
    not start with 0, is of a possible length, and the country's national-prefix-for-parsing
    pattern does not match it (else parse may strip or transform it).
    """
    dialing = _dialing(country)
    if text.startswith("+"):
        rest = text[1:]
    elif dialing.idd and text.startswith(dialing.idd):
        rest = text[len(dialing.idd) :]
    elif dialing.national and text.startswith(dialing.national):
        return _checked(phonenumbers.country_code_for_region(country), text[len(dialing.national) :])
    else:
        return None
    if rest.startswith("0"):
        return None  # no country code starts with 0; "+033…" is not +33 (parse refuses it)
    for size in (1, 2, 3):
        cc = int(rest[:size] or "0")
        if cc in COUNTRY_CODE_TO_REGION_CODE:
            return _checked(cc, rest[size:])
    return None


def _checked(cc: int, nsn: str) -> phonenumbers.PhoneNumber | None:
    info = _country(cc) if cc else None
    if info is None or not nsn.isdigit() or nsn.startswith("0"):
        return None
    npp, lengths = info
    if len(nsn) not in lengths or (npp is not None and npp.match(nsn)):
        return None
    return phonenumbers.PhoneNumber(country_code=cc, national_number=int(nsn))


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
