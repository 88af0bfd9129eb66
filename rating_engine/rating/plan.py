"""Calling plans (TOML): the account's country and currency, its deck, what is included
free, what is blocked, and what happens to premium-rate numbers and short codes.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import phonenumbers

from ..contract import Treatment
from ..errors import TariffError, TariffErrors
from ..money import MINOR_UNITS
from ..numbering import Kind
from .bands import Bands, parse_bands, zone_info

KINDS = frozenset(k.value for k in Kind) - {Kind.INVALID.value}
REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)
POLICIES = tuple(t.value for t in Treatment)


@dataclass(frozen=True, slots=True)
class IncludedRule:
    """Calls to any of `regions` (ISO codes, or "*") of any of `kinds` are free."""

    regions: frozenset[str]
    kinds: frozenset[Kind]

    def matches_region(self, region: str) -> bool:
        return "*" in self.regions or region in self.regions


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    country: str
    currency: str
    deck: Path
    included: tuple[IncludedRule, ...] = ()
    blocked_kinds: frozenset[Kind] = frozenset()
    blocked_prefixes: tuple[str, ...] = ()
    premium: Treatment = Treatment.CHARGE
    short_codes: Treatment = Treatment.CHARGE
    source: str = ""
    description: str = ""
    timezone: str = "UTC"
    """Where time bands are read for an account that has no time zone of its own."""
    bands: Bands | None = None
    band_decks: tuple[Path, ...] = ()
    """The deck of each band, in the order of `bands.names`."""
    _cache: dict[str, frozenset[Kind]] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def is_included(self, region: str, kind: Kind) -> bool:
        return kind in self._included_kinds(region)

    def _included_kinds(self, region: str) -> frozenset[Kind]:
        cache: dict[str, frozenset[Kind]] = self._cache
        kinds = cache.get(region)
        if kinds is None:
            kinds = frozenset().union(*(r.kinds for r in self.included if r.matches_region(region)))
            cache[region] = kinds
        return kinds

    def is_blocked_prefix(self, digits: str) -> bool:
        return digits.startswith(self.blocked_prefixes)


def load_plan(path: str | Path) -> Plan:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TariffErrors([TariffError(f"cannot read plan: {exc.strerror}", str(p))]) from None
    except UnicodeDecodeError as exc:
        raise TariffErrors([TariffError(f"not UTF-8 (byte {exc.start}): save the plan as UTF-8", str(p))]) from None
    except tomllib.TOMLDecodeError as exc:
        line, col = _toml_position(str(exc))
        raise TariffErrors([TariffError(f"invalid TOML: {exc}", str(p), line, col)]) from None
    return parse_plan(data, str(p), base=p.parent)


def _toml_position(message: str) -> tuple[int, int]:
    # tomllib says "... (at line 3, column 7)"
    m = re.search(r"line (\d+), column (\d+)", message)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def parse_plan(data: dict[str, Any], source: str = "<plan>", base: Path | None = None) -> Plan:
    errors: list[TariffError] = []

    def fail(msg: str) -> None:
        errors.append(TariffError(msg, source))

    def text(key: str, default: str | None = None) -> str:
        value = data.get(key, default)
        if not isinstance(value, str) or not value:
            fail(f"`{key}` must be a non-empty string")
            return ""
        return value

    def kinds(values: Any, where: str) -> frozenset[Kind]:
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            fail(f"{where}: `kinds` must be a list of strings")
            return frozenset()
        unknown = sorted(set(values) - KINDS)
        if unknown:
            fail(f"{where}: unknown kind(s) {', '.join(unknown)}; known: {', '.join(sorted(KINDS))}")
        return frozenset(Kind(v) for v in values if v in KINDS)

    known = {
        "name",
        "country",
        "currency",
        "deck",
        "description",
        "included",
        "blocked",
        "premium",
        "short_codes",
        "timezone",
        "bands",
    }
    for key in sorted(set(data) - known):
        fail(f"unknown key `{key}`")
    name = text("name", Path(source).stem)
    country = text("country").upper()
    if country and country not in REGIONS:
        fail(f"`country` {country!r} is not an ISO 3166 region phonenumbers knows (e.g. FR, GB, US)")
    currency = text("currency").upper()
    if currency and currency not in MINOR_UNITS:
        fail(f"unknown currency `{currency}`")
    deck_name = text("deck")
    deck = (base / deck_name) if base is not None else Path(deck_name)
    if deck_name and base is not None and not deck.is_file():
        fail(f"deck file not found: {deck}")
    timezone = data.get("timezone", "UTC")
    if not isinstance(timezone, str):
        fail("`timezone` must be a zone name such as Europe/Paris")
        timezone = "UTC"
    else:
        try:
            zone_info(timezone)
        except TariffError as exc:
            fail(f"`timezone`: {exc.message} (a name such as Europe/Paris)")
    bands, band_decks = _bands(data.get("bands"), source, base, deck, fail, errors)
    included = []
    rules = data.get("included", [])
    if not isinstance(rules, list):
        fail("`included` must be a list of tables ([[included]] with regions and kinds)")
        rules = []
    for i, rule in enumerate(rules, start=1):
        where = f"included rule {i}"
        if not isinstance(rule, dict):
            fail(f"{where} must be a table")
            continue
        for key in sorted(set(rule) - {"regions", "kinds"}):
            fail(f"{where}: unknown key `{key}`")
        regions = rule.get("regions", [])
        if not isinstance(regions, list) or not regions or not all(isinstance(r, str) for r in regions):
            fail(f"{where}: `regions` must be a non-empty list of country codes")
            regions = []
        unknown_regions = sorted({r.upper() for r in regions} - REGIONS - {"*"})
        if unknown_regions:
            fail(f'{where}: unknown region(s) {", ".join(unknown_regions)} (ISO 3166 codes, or "*")')
        included.append(IncludedRule(frozenset(r.upper() for r in regions), kinds(rule.get("kinds"), where)))
    blocked = data.get("blocked", {})
    if not isinstance(blocked, dict):
        fail("`blocked` must be a table with `kinds` and `prefixes`")
        blocked = {}
    for key in sorted(set(blocked) - {"kinds", "prefixes"}):
        fail(f"blocked: unknown key `{key}`")
    blocked_kinds = kinds(blocked.get("kinds", []), "blocked")
    prefixes = blocked.get("prefixes", [])
    if not isinstance(prefixes, list) or not all(
        isinstance(x, str) and x.isascii() and x.isdigit() and len(x) <= 15 for x in prefixes
    ):
        fail('blocked: `prefixes` must be a list of digit strings, e.g. ["870", "881"]')
        prefixes = []
    policies = {}
    for key in ("premium", "short_codes"):
        value = data.get(key, "charge")
        if not isinstance(value, str) or value not in POLICIES:
            fail(f"`{key}` must be one of {', '.join(POLICIES)}")
        policies[key] = Treatment(value) if value in POLICIES else Treatment.CHARGE
    if errors:
        raise TariffErrors(errors)
    return Plan(
        name=name,
        country=country,
        currency=currency,
        deck=deck,
        included=tuple(included),
        blocked_kinds=blocked_kinds,
        blocked_prefixes=tuple(prefixes),
        premium=policies["premium"],
        short_codes=policies["short_codes"],
        source=source,
        description=str(data.get("description", "")),
        timezone=timezone,
        bands=bands,
        band_decks=band_decks,
    )


def _bands(
    section: Any, source: str, base: Path | None, deck: Path, fail: Callable[[str], None], errors: list[TariffError]
) -> tuple[Bands | None, tuple[Path, ...]]:
    """`[bands]`: the calendar file, the public holidays, and a deck per band (else `deck`)."""
    if section is None:
        return None, ()
    if not isinstance(section, dict):
        fail("`bands` must be a table with `file`, `holidays` and `decks`")
        return None, ()
    for key in sorted(set(section) - {"file", "holidays", "decks"}):
        fail(f"bands: unknown key `{key}`")
    holidays: list[date] = []
    listed = section.get("holidays", [])
    if not isinstance(listed, list):
        fail("bands: `holidays` must be a list of dates such as 2026-12-25")
        listed = []
    for value in listed:
        try:
            holidays.append(value if isinstance(value, date) else date.fromisoformat(str(value)))
        except ValueError:
            why = f"bands: holiday {value!r} is not a date (YYYY-MM-DD)"
            errors.append(TariffError(why, source, _line_of(source, value)))
    name = section.get("file")
    if not isinstance(name, str) or not name:
        fail("bands: `file` must name the bands file (CSV: band,days,from,until)")
        return None, ()
    path = (base / name) if base is not None else Path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"bands: cannot read {path}: {exc.strerror}")
        return None, ()
    except UnicodeDecodeError:
        fail(f"bands: {path} is not UTF-8 text")
        return None, ()
    try:
        bands = parse_bands(text.splitlines(), str(path), holidays)
    except TariffErrors as exc:
        errors.extend(exc.errors)
        return None, ()
    decks = section.get("decks", {})
    if not isinstance(decks, dict) or not all(isinstance(v, str) and v for v in decks.values()):
        fail("bands: `decks` must map band names to deck files")
        decks = {}
    for band in sorted(set(decks) - set(bands.names)):
        fail(f"bands.decks: no band {band!r} in {path} (bands: {', '.join(bands.names)})")
    paths = tuple(
        ((base / decks[b]) if base is not None else Path(decks[b])) if b in decks else deck for b in bands.names
    )
    for b, p in zip(bands.names, paths, strict=True):
        if b in decks and base is not None and not p.is_file():
            fail(f"bands.decks: deck file for {b!r} not found: {p}")
    return bands, paths


def _line_of(source: str, value: object) -> int:
    """The line of a plan where a value is written (TOML parsers do not say)."""
    try:
        for number, line in enumerate(Path(source).read_text(encoding="utf-8").splitlines(), start=1):
            if str(value) in line:
                return number
    except (OSError, UnicodeDecodeError):
        pass
    return 0
