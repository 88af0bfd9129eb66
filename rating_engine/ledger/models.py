"""What the ledger stores and answers: plain frozen records, amounts in micro-units."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..contract import DestinationClass, Refusal
from ..errors import RatingEngineError
from ..hours import OfficeHours
from ..money import MAX_AMOUNT


class LedgerError(RatingEngineError):
    """A ledger operation that cannot be done as asked (unknown account, bad settings, …)."""


class SchemaTooNew(LedgerError):
    """The database was written by a newer rating-engine; refusing to touch it."""


ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", re.ASCII)
EXTENSION = re.compile(r"[A-Za-z0-9+*#][A-Za-z0-9+*#._-]{0,31}", re.ASCII)


def check_account_id(account_id: str) -> str:
    """Account names: 1-64 ASCII letters, digits and . _ @ -, starting with a letter or digit."""
    if not isinstance(account_id, str) or ACCOUNT_ID.fullmatch(account_id) is None:
        raise LedgerError(
            f"account name {account_id[:40]!r}: 1 to 64 ASCII letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return account_id


def check_extension(ext: str) -> str:
    """Extensions as the dialplan passes them (CALLERID(num)): 1-32 of letters, digits, + * # . _ -."""
    if not isinstance(ext, str) or EXTENSION.fullmatch(ext) is None:
        raise LedgerError(f"extension {ext[:40]!r}: 1 to 32 ASCII letters, digits, '+', '*', '#', '.', '_' or '-'")
    return ext


class OnLow(StrEnum):
    """What an account does when its balance falls below its threshold."""

    BLOCK = "block"
    TOPUP = "topup"


class TopupStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AccountSettings:
    plan: str
    currency: str
    threshold: int = 0
    on_low: OnLow = OnLow.BLOCK
    topup_amount: int = 0
    block_on_topup_failure: bool = True
    timezone: str = "UTC"
    """The account's own time zone: its caps' days and months and its office hours follow it."""
    max_calls: int | None = None
    """At most this many chargeable calls at once (toll fraud: a stolen password dials in parallel)."""
    max_attempts: int | None = None
    """At most this many chargeable call attempts per minute (a dialer's burst)."""
    velocity_limit: int | None = None
    """At most this much spending (settled + held) per rolling hour."""
    blocked_prefixes: tuple[str, ...] = ()
    """E.164 digit prefixes refused on top of the plan's."""
    office_hours: str = ""
    """Outside these hours (e.g. "mon-fri 08:00-19:00"), international and premium calls are refused."""
    auto_topups_per_day: int = 2
    """At most this many automatic top-ups are attempted a day (a declining card is not hammered)."""

    def __post_init__(self) -> None:
        if self.threshold < 0 or self.topup_amount < 0:
            raise LedgerError("threshold and top-up amount cannot be negative")
        for name in ("threshold", "topup_amount", "velocity_limit"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value > MAX_AMOUNT):
                raise LedgerError(f"{name.replace('_', ' ')}: at most {MAX_AMOUNT} micro-units")
        if self.on_low is OnLow.TOPUP and self.topup_amount <= 0:
            raise LedgerError("auto top-up needs a positive --topup-amount")
        zone(self.timezone)
        if type(self.auto_topups_per_day) is not int or not 1 <= self.auto_topups_per_day <= 24:
            raise LedgerError("automatic top-ups per day: from 1 to 24")
        for name in ("max_calls", "max_attempts", "velocity_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LedgerError(f"{name.replace('_', ' ')} must be at least 1 (or none)")
        for prefix in self.blocked_prefixes:
            if not (prefix.isascii() and prefix.isdigit()) or len(prefix) > 15:
                raise LedgerError(f"blocked prefix {prefix!r}: E.164 digits, at most 15")
        if self.office_hours:
            try:
                OfficeHours.parse(self.office_hours)
            except ValueError as exc:
                raise LedgerError(f"office hours {self.office_hours!r}: {exc}") from None

    @property
    def hours(self) -> OfficeHours | None:
        return OfficeHours.parse(self.office_hours) if self.office_hours else None


def zone(name: str) -> ZoneInfo:
    """An IANA time zone, or a LedgerError that says so."""
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise LedgerError(f"unknown time zone {name!r}: use an IANA name like Europe/Paris or UTC") from None


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    if not name or name != name.strip():
        raise ValueError(name)
    return ZoneInfo(name)


def shortfall(balance: int, reserved: int, floor: int, amount: int) -> Refusal:
    """Why `amount` cannot be held on an account with these figures: the money is there but below the
    threshold (its floor), or it is not there. The programs' reason, and the walk's (`sqlite_batch`)."""
    if floor > 0 and balance - reserved >= amount:
        return Refusal.ACCOUNT_BLOCKED
    return Refusal.INSUFFICIENT_FUNDS


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    settings: AccountSettings
    balance: int
    reserved: int
    floor: int
    topup_failed: bool
    topup_pending: str | None
    live_calls: int = 0
    topup_failures: int = 0
    """Automatic top-ups failed in a row (reset by one that succeeds)."""
    topup_paused: bool = False
    """Three failed in a row: automatic top-up waits for the administrator (new card or settings)."""
    settings_rev: int = 0
    """Raised by every change of the settings: a reservation can ask that they be those it was decided with."""

    @property
    def available(self) -> int:
        """What new reservations may take: balance − live reservations − floor."""
        return self.balance - self.reserved - self.floor

    def shortfall(self, amount: int) -> Refusal:
        """Why `amount` cannot be held: the money is there but below the threshold, or it is not there."""
        return shortfall(self.balance, self.reserved, self.floor, amount)


@dataclass(frozen=True, slots=True)
class ExtensionSettings:
    chargeable: bool = True
    classes: frozenset[DestinationClass] | None = None
    """Destination classes allowed for chargeable calls; None: all."""
    daily_cap: int | None = None
    monthly_cap: int | None = None
    max_calls: int | None = None
    """At most this many chargeable calls of this extension at once."""
    max_attempts: int | None = None
    """At most this many chargeable call attempts of this extension per minute."""
    name: str = ""
    """Who or what it is ("Reception", "Alice"): shown on the page beside the number."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or len(self.name) > 60 or not self.name.isprintable():
            raise LedgerError("an extension's name: at most 60 printable characters")
        if self.classes is not None:
            try:
                object.__setattr__(self, "classes", frozenset(DestinationClass(c) for c in self.classes))
            except ValueError:
                known = ", ".join(c.value for c in DestinationClass)
                raise LedgerError(f"unknown destination kind in {sorted(self.classes)}; known: {known}") from None
        for name in ("max_calls", "max_attempts"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LedgerError(f"{name.replace('_', ' ')} must be at least 1 (or none)")
        for name in ("daily_cap", "monthly_cap"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not 0 <= value <= MAX_AMOUNT):
                raise LedgerError(f"{name.replace('_', ' ')}: from 0 to {MAX_AMOUNT} micro-units, or none")


QUARTER = 900


def day_started(now: int, timezone: str = "UTC") -> int:
    """The unix time of the midnight that began `now`'s day in the account's time zone."""
    local = datetime.fromtimestamp(now, zone(timezone))
    return int(datetime.combine(local.date(), time(), local.tzinfo).timestamp())


def periods(now: int, timezone: str = "UTC") -> tuple[str, str]:
    """The cap periods a moment falls in: the day and month in the account's time zone."""
    return _periods_of_quarter(now // QUARTER, timezone)


@lru_cache(maxsize=1024)
def _periods_of_quarter(quarter: int, timezone: str) -> tuple[str, str]:
    # Every UTC offset and every transition of today's time zones falls on a quarter hour, so
    # the local date is the same throughout a quarter of an hour: cache by it.
    d = datetime.fromtimestamp(quarter * QUARTER, zone(timezone))
    return d.strftime("%Y-%m-%d"), d.strftime("%Y-%m")


@dataclass(frozen=True, slots=True)
class Extension:
    account_id: str
    ext: str
    settings: ExtensionSettings
    reserved: int
    day: str
    day_spent: int
    month: str
    month_spent: int
    live_calls: int = 0
    settings_rev: int = 0

    def cap_left(self, now: int, timezone: str = "UTC") -> int | None:
        """What the caps still allow at `now` (None: no cap); the engine sizes calls with it.

        The ledger enforces the same rule in SQL (`programs._EXT_TAKE`); a property test
        holds the two to the same answers.
        """
        day, month = periods(now, timezone)
        s, left = self.settings, None
        if s.daily_cap is not None:
            left = s.daily_cap - (self.day_spent if self.day == day else 0) - self.reserved
        if s.monthly_cap is not None:
            m = s.monthly_cap - (self.month_spent if self.month == month else 0) - self.reserved
            left = m if left is None else min(left, m)
        return left


@dataclass(frozen=True, slots=True)
class CallDetails:
    """What the activity record says about a call; all optional but the times."""

    started_at: int = 0
    ended_at: int = 0
    dialed: str = ""
    e164: str = ""
    destination: str = ""
    kind: str = ""
    billable_seconds: int = 0
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class Reservation:
    call_id: str
    account_id: str
    ext: str
    amount: int
    created_at: int
    updated_at: int
    deadline: int
    details: str = ""


@dataclass(frozen=True, slots=True)
class ReserveResult:
    ok: bool
    refusal: Refusal | None = None
    reserved: int = 0
    """The call's whole reservation after this operation."""
    alert: bool = False
    """This refusal raised the account's velocity alert (once an hour): tell someone."""


@dataclass(frozen=True, slots=True)
class TopupRequest:
    """An automatic top-up the ledger decided on; the payment runs outside the transaction."""

    reference: str
    account_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class SettleResult:
    settled: bool
    """False when the call had already been settled (nothing changed) or was unknown."""
    already: bool = False
    unknown: bool = False
    cost: int = 0
    reserved: int = 0
    overdraft: bool = False
    balance_after: int = 0
    topup: TopupRequest | None = None
    crossed_threshold: bool = False
    """This settle took the balance below the account's threshold (told once, by a notice)."""


@dataclass(frozen=True, slots=True)
class ActivityRow:
    call_id: str
    account_id: str
    ext: str
    started_at: int
    ended_at: int
    dialed: str
    e164: str
    destination: str
    kind: str
    billable_seconds: int
    cost: int
    balance_after: int
    estimated: bool
    overdraft: bool


@dataclass(frozen=True, slots=True)
class Topup:
    reference: str
    account_id: str
    amount: int
    at: int
    source: str
    status: TopupStatus
    detail: str = ""
    action_url: str = ""
    """Pending on the customer (3-D Secure): the provider's page where they confirm the payment."""


@dataclass(frozen=True, slots=True)
class Notice:
    """Something an account's administrators are told by email, once (see `rating_engine.notices`)."""

    id: int
    account_id: str
    kind: str
    key: str
    detail: str = ""
    url: str = ""
    amount: int = 0
    created_at: int = 0
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Card:
    """An account's card on file as the payment provider reports it; never a card number."""

    account_id: str
    provider: str
    customer: str
    payment_method: str = ""
    """Empty until a card is saved (the customer exists from the first "Edit")."""
    brand: str = ""
    last4: str = ""
    exp_month: int = 0
    exp_year: int = 0


USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}", re.ASCII)


@dataclass(frozen=True, slots=True)
class User:
    """Someone who logs in to the page: an account's administrator, or an operator (no account)."""

    username: str
    password_hash: str
    account_id: str | None
    language: str = ""
    """The language they chose on the page ("" until they do: the browser's is used)."""
    created_at: int = 0
    email: str = ""
    """Where an administrator's notices go ("" for none)."""

    @property
    def operator(self) -> bool:
        return self.account_id is None

    def __repr__(self) -> str:  # the hash stays out of logs and tracebacks
        return f"User({self.username!r}, account={self.account_id!r})"


def check_username(username: str) -> str:
    if not isinstance(username, str) or USERNAME.fullmatch(username) is None:
        raise LedgerError(
            f"user name {username[:40]!r}: 1 to 100 ASCII letters, digits, '.', '_', '@', '+' or '-', "
            "starting with a letter or digit"
        )
    return username


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of an account's audit list: a settings change, an alert, a top-up event."""

    account_id: str
    at: int
    actor: str
    action: str
    detail: str


@dataclass(frozen=True, slots=True)
class CheckProblem:
    account_id: str
    message: str


@dataclass(slots=True)
class ExtensionTotals:
    ext: str
    calls: int = 0
    seconds: int = 0
    cost: int = 0


@dataclass(frozen=True, slots=True)
class DaySpending:
    """What one extension spent on one day of the account's calendar (YYYY-MM-DD)."""

    day: str
    ext: str
    cost: int


def extension_totals(rows: list[ActivityRow]) -> list[ExtensionTotals]:
    """Calls, billable seconds and cost per extension, in extension order."""
    totals: dict[str, ExtensionTotals] = {}
    for r in rows:
        t = totals.setdefault(r.ext, ExtensionTotals(r.ext))
        t.calls += 1
        t.seconds += r.billable_seconds
        t.cost += r.cost
    return [totals[ext] for ext in sorted(totals)]
