"""Account use cases: what the operator and an office's administrator do with a prepaid account.

The CLI, the demo and the web page call these, so each rule is written once: settings not named
in a change are kept, a plan change keeps the account's currency, a top-up is positive and has a
reference (a repeated reference credits nothing), an extension's rules change field by field.
Callers parse their own input into typed values and show the results; a refusal is an
`AccountError` with a message fit to show (one line in the CLI, beside the field on the page).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .errors import RatingEngineError
from .ledger import (
    Account,
    AccountSettings,
    ActivityRow,
    AuditEntry,
    Extension,
    ExtensionSettings,
    ExtensionTotals,
    Ledger,
    LedgerError,
    Reservation,
    Topup,
    TopupRequest,
)
from .ledger.programs import settings_changes
from .payments import TopupRunner
from .rating.plan import Plan


class AccountError(RatingEngineError, ValueError):
    """A change refused before anything was written."""


@dataclass(frozen=True, slots=True)
class Overview:
    """An account as its administrator sees it: the money, its extensions, the calls now."""

    account: Account
    extensions: list[Extension]
    live: list[Reservation]


@dataclass(frozen=True, slots=True)
class TopupDone:
    account: Account
    topup: Topup
    created: bool
    """False: the reference was already recorded, nothing was added."""


@dataclass(frozen=True, slots=True)
class Activity:
    account: Account
    calls: list[ActivityRow]
    topups: list[Topup]


@dataclass(frozen=True, slots=True)
class ActivityPage:
    """One page of an account's activity, newest first, with the totals of the whole selection."""

    account: Account
    calls: list[ActivityRow]
    totals: list[ExtensionTotals]
    older: tuple[int, str] | None
    """Where the next (older) page starts; None on the last page."""


ACCOUNT_FIELDS = frozenset(f.name for f in fields(AccountSettings))
EXTENSION_FIELDS = frozenset(f.name for f in fields(ExtensionSettings))


def day_span(account: Account, first_day: date | None, last_day: date | None) -> tuple[int | None, int | None]:
    """Unix times from the first day's midnight to the midnight after the last day, in the account's
    time zone (a day of 23 or 25 hours included)."""
    tz = ZoneInfo(account.settings.timezone)
    since = int(datetime.combine(first_day, time(), tz).timestamp()) if first_day else None
    until = int(datetime.combine(last_day + timedelta(days=1), time(), tz).timestamp()) if last_day else None
    return since, until


def _only_settings(given: Mapping[str, Any]) -> None:
    """The plan (and with it the currency) is given as a `Plan`, every other setting by name."""
    bad = (set(given) - ACCOUNT_FIELDS) | ({"plan", "currency"} & set(given))
    if bad:
        raise AccountError(f"not an account setting to give by name: {', '.join(sorted(bad))}")


def _checked(kind: type[Any], values: Mapping[str, Any]) -> Any:
    try:
        return kind(**values)
    except LedgerError as exc:
        raise AccountError(str(exc)) from None


class Accounts:
    """The use cases on one ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @staticmethod
    def new_settings(plan: Plan, /, **settings: Any) -> AccountSettings:
        """The settings of a new account on `plan` (its currency, and its time zone unless one is
        given), the others as given, else the defaults; checked without touching the ledger."""
        _only_settings(settings)
        chosen = {"timezone": plan.timezone, **settings, "plan": plan.name, "currency": plan.currency}
        checked: AccountSettings = _checked(AccountSettings, chosen)
        return checked

    async def create(self, account_id: str, chosen: AccountSettings) -> Account:
        """A new account (`new_settings` makes its settings)."""
        try:
            return await self.ledger.create_account(account_id, chosen)
        except LedgerError as exc:
            raise AccountError(str(exc)) from None

    async def change(
        self, account_id: str, changes: Mapping[str, Any], *, actor: str, plan: Plan | None = None
    ) -> list[tuple[str, str]]:
        """Change the settings named in `changes` (and the plan, if given), keep the others; every
        change is audited with `actor`. Returns what changed, (setting, "old → new"); [] for nothing."""
        _only_settings(changes)
        current = (await self.ledger.account(account_id)).settings
        wanted = dict(changes)
        if plan is not None:
            if plan.currency != current.currency:
                raise AccountError(f"--plan: its currency {plan.currency} is not the account's ({current.currency})")
            wanted["plan"] = plan.name
        updated = _checked(AccountSettings, {**{f: getattr(current, f) for f in ACCOUNT_FIELDS}, **wanted})
        if updated == current:
            return []
        await self.ledger.update_settings(account_id, updated, actor=actor)
        return settings_changes(current, updated)

    @staticmethod
    def check_topup(amount: int, reference: str | None) -> None:
        if amount <= 0:
            raise AccountError("amount: a top-up must be positive")
        if reference is not None and not reference.strip():
            raise AccountError(
                "--reference: empty; give the bank transfer's id, or leave the option out to generate one"
            )

    async def top_up(
        self, account_id: str, amount: int, reference: str | None = None, *, source: str, actor: str = ""
    ) -> TopupDone:
        """Credit `amount` once per reference; without one a fresh reference is made (a bank
        transfer should give its own, so that entering it twice credits once). With an `actor`,
        who added the funds is in the audit list."""
        self.check_topup(amount, reference)
        ref = reference.strip() if reference is not None else f"{source}:{uuid.uuid4().hex}"
        try:
            topup, created = await self.ledger.topup(account_id, amount, ref, source=source, actor=actor)
        except LedgerError as exc:
            raise AccountError(str(exc)) from None
        return TopupDone(await self.ledger.account(account_id), topup, created)

    async def buy(self, account_id: str, amount: int, key: str, runner: TopupRunner, *, source: str) -> Topup:
        """Add Funds: charge `amount` through the account's payment provider, credited once per
        `key` (one per purchase: pressing "Buy" twice or reloading charges nothing more). The top-up
        comes back succeeded, failed (with the provider's reason) or pending (awaiting the operator
        or the customer)."""
        if amount <= 0:
            raise AccountError("amount: a top-up must be positive")
        if not key or len(key) > 64 or not key.isascii() or not key.replace("-", "").isalnum():
            raise AccountError("a purchase needs its key (reload the page)")
        reference = f"{source}:{account_id}:{key}"
        try:
            topup, created = await self.ledger.request_topup(account_id, amount, reference, source)
        except LedgerError as exc:
            raise AccountError(str(exc)) from None
        if created:
            await runner.pay(TopupRequest(reference, account_id, amount))
        found = await self.ledger.find_topup(reference)
        return found or topup

    async def confirm_topup(self, reference: str, ok: bool, detail: str, *, actor: str = "") -> Topup:
        """The outcome of a pending (manual) top-up, decided by `actor`: credited once if `ok`."""
        try:
            return await self.ledger.complete_topup(reference, ok=ok, detail=detail, actor=actor)
        except LedgerError as exc:
            raise AccountError(str(exc)) from None

    async def overview(self, account_id: str) -> Overview:
        account = await self.ledger.account(account_id)
        return Overview(account, await self.ledger.extensions(account_id), await self.ledger.reservations(account_id))

    async def activity(
        self, account_id: str, ext: str | None = None, since: int | None = None, until: int | None = None
    ) -> Activity:
        account = await self.ledger.account(account_id)
        calls = await self.ledger.activity(account_id, ext, since, until)
        return Activity(account, calls, await self.ledger.topups(account_id))

    async def activity_page(
        self,
        account_id: str,
        ext: str | None = None,
        first_day: date | None = None,
        last_day: date | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 100,
    ) -> ActivityPage:
        """Calls of whole days of the account's calendar (both days included), newest first, a page
        at a time; the totals per extension are those of the whole selection."""
        account = await self.ledger.account(account_id)
        since, until = day_span(account, first_day, last_day)
        calls = await self.ledger.activity_page(account_id, ext, since, until, before, limit + 1)
        older = (calls[limit - 1].ended_at, calls[limit - 1].call_id) if len(calls) > limit else None
        totals = await self.ledger.activity_day_totals(
            account_id, ext, first_day.isoformat() if first_day else None, last_day.isoformat() if last_day else None
        )
        return ActivityPage(account, calls[:limit], totals, older)

    async def audit(self, account_id: str, limit: int = 50) -> list[AuditEntry]:
        return await self.ledger.audit(account_id, limit=max(1, limit))

    async def change_extension(
        self, account_id: str, ext: str, changes: Mapping[str, Any]
    ) -> tuple[Account, Extension]:
        """Change the rules named in `changes` for one extension, keep the others (a new extension
        starts from the defaults: it may spend like any other)."""
        unknown = set(changes) - EXTENSION_FIELDS
        if unknown:
            raise AccountError(f"unknown extension setting(s): {', '.join(sorted(unknown))}")
        account = await self.ledger.account(account_id)
        current = await self.ledger.extension(account_id, ext)
        base = current.settings if current is not None else ExtensionSettings()
        updated = _checked(ExtensionSettings, {**{f: getattr(base, f) for f in EXTENSION_FIELDS}, **changes})
        try:
            return account, await self.ledger.set_extension(account_id, ext, updated)
        except LedgerError as exc:
            raise AccountError(str(exc)) from None


__all__ = ["AccountError", "Accounts", "Activity", "ActivityPage", "Overview", "TopupDone"]
