"""What the ledger stores and answers: plain frozen records, amounts in micro-units."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache

from ..errors import RatingEngineError


class LedgerError(RatingEngineError):
    """A ledger operation that cannot be done as asked (unknown account, bad settings, …)."""


class SchemaTooNew(LedgerError):
    """The database was written by a newer rating-engine; refusing to touch it."""


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

    def __post_init__(self) -> None:
        if self.threshold < 0 or self.topup_amount < 0:
            raise LedgerError("threshold and top-up amount cannot be negative")
        if self.on_low is OnLow.TOPUP and self.topup_amount <= 0:
            raise LedgerError("auto top-up needs a positive --topup-amount")


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    settings: AccountSettings
    balance: int
    reserved: int
    floor: int
    topup_failed: bool
    topup_pending: str | None

    @property
    def available(self) -> int:
        """What new reservations may take: balance − live reservations − floor."""
        return self.balance - self.reserved - self.floor

    def shortfall(self, amount: int) -> Refusal:
        """Why `amount` cannot be held: the money is there but below the threshold, or it is not there."""
        if self.floor > 0 and self.balance - self.reserved >= amount:
            return Refusal.ACCOUNT_BLOCKED
        return Refusal.INSUFFICIENT_FUNDS


@dataclass(frozen=True, slots=True)
class ExtensionSettings:
    chargeable: bool = True
    classes: frozenset[str] | None = None
    """Destination classes allowed for chargeable calls; None: all."""
    daily_cap: int | None = None
    monthly_cap: int | None = None


def periods(now: int) -> tuple[str, str]:
    """The cap periods a moment falls in: UTC day and month."""
    return _periods_of_day(now // 86400)


@lru_cache(maxsize=64)
def _periods_of_day(day: int) -> tuple[str, str]:
    # Unix time has no leap seconds: every UTC day is 86,400 s, so the day number is the key.
    d = datetime.fromtimestamp(day * 86400, UTC)
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

    def cap_left(self, now: int) -> int | None:
        """What the caps still allow at `now` (None: no cap); the engine sizes calls with it.

        The ledger enforces the same rule in SQL (`programs._EXT_TAKE`); a property test
        holds the two to the same answers.
        """
        day, month = periods(now)
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


class Refusal(StrEnum):
    """Why a reservation was refused; maps onto RATING_REASON."""

    INSUFFICIENT_FUNDS = "insufficient_funds"
    ACCOUNT_BLOCKED = "account_blocked"
    CAP_REACHED = "cap_reached"
    EXTENSION_NOT_ALLOWED = "extension_not_allowed"
    UNKNOWN_ACCOUNT = "unknown_account"
    UNKNOWN_CALL = "unknown_call"
    DUPLICATE_CALL = "duplicate_call"


@dataclass(frozen=True, slots=True)
class ReserveResult:
    ok: bool
    refusal: Refusal | None = None
    reserved: int = 0
    """The call's whole reservation after this operation."""


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


def extension_totals(rows: list[ActivityRow]) -> list[ExtensionTotals]:
    """Calls, billable seconds and cost per extension, in extension order."""
    totals: dict[str, ExtensionTotals] = {}
    for r in rows:
        t = totals.setdefault(r.ext, ExtensionTotals(r.ext))
        t.calls += 1
        t.seconds += r.billable_seconds
        t.cost += r.cost
    return [totals[ext] for ext in sorted(totals)]
