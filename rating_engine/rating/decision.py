"""The decision for one call: emergency, included, blocked, or charged at a rate row.

Pure: the plan, the compiled table, the extension's rules, the start time and the budget
come in; nothing is read from a clock or a database here.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

from ..contract import ALL_CLASSES, DestinationClass, Reason, Treatment
from ..numbering import Classification, Kind, classify
from .deck import RateRow
from .plan import Plan
from .price import UNLIMITED_SECONDS, Fare
from .rates import PlanRates
from .table import RateTable


@dataclass(frozen=True, slots=True)
class ExtensionRules:
    """Per-caller restrictions (the extension's, and the account's block list); the default lets an
    extension spend like the reference product."""

    chargeable: bool = True
    classes: frozenset[DestinationClass] = ALL_CLASSES
    blocked_prefixes: tuple[str, ...] = ()
    """The account's own blocked prefixes, on top of the plan's (they apply to every non-emergency call)."""


def destination_classes(c: Classification, country: str) -> frozenset[DestinationClass]:
    """Every class a chargeable call falls into; all must be allowed for the extension."""
    out: set[DestinationClass] = set()
    abroad = bool(c.region) and c.region != country
    out.add(DestinationClass.INTERNATIONAL if abroad else DestinationClass.NATIONAL)
    if abroad and c.kind is Kind.MOBILE:  # fixed_or_mobile (NANP) cannot be told apart
        out.add(DestinationClass.MOBILE_ABROAD)
    if c.kind is Kind.PREMIUM or (c.kind is Kind.SHORT_CODE and c.short_cost == "premium_rate"):
        out.add(DestinationClass.PREMIUM)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: Reason
    number: Classification
    row: RateRow | None = None
    row_index: int = -1
    max_seconds: int | None = None
    """Seconds the budget pays for; None when the call is free (no limit from money)."""
    fare: Fare | None = None
    """The price from `at` on, cut at the time bands the call would cross."""
    band: str = ""
    """The time band at `at` (empty when the plan has none)."""

    @property
    def minimum_cost(self) -> int:
        """Cost of the shortest billable call: what must be available to allow it (worked out
        when asked: the engine never asks)."""
        return 0 if self.fare is None else self.fare.cost(1)

    @property
    def charged(self) -> bool:
        return self.row is not None and self.allowed

    @property
    def status(self) -> str:
        return "ALLOW" if self.allowed else "DENY"


def rating_digits(c: Classification, plan: Plan) -> str:
    """Digits to look up in the deck: E.164 digits; for a short code "0" + country code +
    code, a key no E.164 number can have (E.164 never starts with 0)."""
    if c.kind is Kind.SHORT_CODE:
        cc = phonenumbers.country_code_for_region(plan.country)
        return f"0{cc}{c.e164}" if cc else ""
    return c.digits


def decide(
    plan: Plan,
    table: RateTable | PlanRates,
    dialed: str,
    at: int,
    rules: ExtensionRules | None = None,
    budget: int | None = None,
    tz: str | None = None,
) -> Decision:
    """Decide one call placed at unix time `at`; with a budget, how long it may last. Time bands
    are read in `tz` (the account's zone), else the plan's."""
    return decide_classified(plan, table, classify(dialed, plan.country), at, rules, budget, tz)


def decide_classified(
    plan: Plan,
    table: RateTable | PlanRates,
    c: Classification,
    at: int,
    rules: ExtensionRules | None = None,
    budget: int | None = None,
    tz: str | None = None,
) -> Decision:
    settled = decide_without_rate(plan, c, rules)
    if settled is not None:
        return settled
    rates = table if isinstance(table, PlanRates) else PlanRates.single(table)
    digits = rating_digits(c, plan)
    band, index = rates.lookup(digits, at, tz)
    if index < 0:
        return Decision(False, Reason.NO_RATE, c)
    row = rates.tables[band].rows[index]
    fare = Fare.flat(row.price) if rates.bands is None else rates.fare(digits, at, index, tz)
    name = rates.band_name(band)
    if budget is None:
        return Decision(True, Reason.CHARGED, c, row, index, None, fare, name)
    seconds = fare.max_seconds(budget)
    if seconds <= 0:
        return Decision(False, Reason.INSUFFICIENT_FUNDS, c, row, index, 0, fare, name)
    return Decision(True, Reason.CHARGED, c, row, index, min(seconds, UNLIMITED_SECONDS), fare, name)


def decide_without_rate(plan: Plan, c: Classification, rules: ExtensionRules | None = None) -> Decision | None:
    """Everything decided by the number, plan and extension alone; None: look up a rate.

    Shared by the one-call path and the batch path so both apply the same rules in the
    same order: emergency first (never blocked), then validity, blocks, inclusions, rules.
    """
    if c.kind is Kind.EMERGENCY:
        return Decision(True, Reason.EMERGENCY, c)
    if not c.valid:
        return Decision(False, Reason.INVALID_NUMBER, c)
    if (
        c.kind in plan.blocked_kinds
        or (plan.blocked_prefixes and plan.is_blocked_prefix(rating_digits(c, plan)))
        or (rules is not None and rules.blocked_prefixes and rating_digits(c, plan).startswith(rules.blocked_prefixes))
        or (c.kind is Kind.PREMIUM and plan.premium is Treatment.BLOCK)
        or (c.kind is Kind.SHORT_CODE and plan.short_codes is Treatment.BLOCK)
    ):
        return Decision(False, Reason.BLOCKED_DESTINATION, c)
    if plan.is_included(c.region, c.kind):
        return Decision(True, Reason.INCLUDED, c)
    if rules is None or (rules.chargeable and rules.classes is ALL_CLASSES):
        return None
    if not rules.chargeable or not destination_classes(c, plan.country) <= rules.classes:
        return Decision(False, Reason.EXTENSION_NOT_ALLOWED, c)
    return None
