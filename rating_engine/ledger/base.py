"""The ledger's public interface; a backend only says how to run a program.

Storage only: an automatic top-up decided inside a settle is reported in its result, and paid by
`payments.TopupRunner` outside the transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

from ..metrics import Histogram
from . import programs as P
from .models import (
    Account,
    AccountSettings,
    ActivityRow,
    AuditEntry,
    CallDetails,
    Card,
    CheckProblem,
    DaySpending,
    Extension,
    ExtensionSettings,
    ExtensionTotals,
    Notice,
    Reservation,
    ReserveResult,
    SettleResult,
    Topup,
    User,
)

T = TypeVar("T")
log = logging.getLogger("rating_engine.ledger")
SLOW_BATCH = 1.0
"""Seconds a batch of the call path may take before it is logged: a disk or a server that slow holds
every authorization of that moment (they are refused at `answer_timeout`)."""


class Ledger(ABC):
    dialect: str = ""

    def __init__(self) -> None:
        self.create = True
        """False: `open()` refuses a ledger that does not exist yet instead of creating it."""
        self.on_late_reservation: Callable[[str], None] | None = None
        """Given the call id of a reservation held after its caller stopped waiting for it (the
        authorization ran past `answer_timeout` and the dialplan was told no): the money is held
        for a call that will not be made, and must be given back. The engine writes the release,
        through its spool when the ledger cannot take it; without a taker the ledger releases it."""
        self.late_reservations = 0
        self._late: set[asyncio.Task[bool]] = set()
        self.batch_seconds = Histogram()
        """Each batch of the call path from its start to its outcome (`rating_ledger_batch_seconds`)."""

    def _batch_took(self, seconds: float, operations: int) -> None:
        self.batch_seconds.observe(seconds)
        if seconds >= SLOW_BATCH:
            log.warning("a ledger batch was slow", extra={"seconds": round(seconds, 3), "operations": operations})

    def _held_too_late(self, call_id: str) -> None:
        """A reservation committed after its caller had given up (its future was cancelled)."""
        self.late_reservations += 1
        log.warning("a reservation was held after its authorization gave up: released", extra={"call_id": call_id})
        if self.on_late_reservation is not None:
            self.on_late_reservation(call_id)
            return
        task = asyncio.get_running_loop().create_task(self._release_late(call_id))
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def _release_late(self, call_id: str) -> bool:
        try:
            return await self.release(call_id)
        except Exception:  # closing, or the database away again: a reconciliation will find it
            log.exception("a late reservation could not be released", extra={"call_id": call_id})
            return False

    # -- backend
    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def _run(self, program: Callable[..., P.Program[T]], *args: Any) -> T:
        """Run `program(*args)` in a transaction; a backend may build it again to retry."""

    @abstractmethod
    async def _close(self) -> None: ...

    async def close(self) -> None:
        await self._close()

    async def hold_node(self, node: str) -> str:
        """Hold `node` for this engine while the ledger is open: '' when held, else who holds it.
        A ledger on one machine has nothing to do here: the spool's lock says it there."""
        return ""

    @property
    def fallbacks(self) -> int:
        """Batches the fast way failed on and that ran again as programs (a bug, logged)."""
        return 0

    @property
    def races(self) -> int:
        """Operations undone because another writer changed one of their rows between a look and its
        lock (PostgreSQL's one statement): each answered by its program; each an ERROR in the server's log."""
        return 0

    @property
    def node_conflicts(self) -> int:
        """Times this engine found its node held by another after losing it (see `pg_node`)."""
        return 0

    async def __aenter__(self) -> Ledger:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    def _now(now: int | None) -> int:
        return int(time.time()) if now is None else now

    # -- accounts
    async def create_account(self, account_id: str, settings: AccountSettings, now: int | None = None) -> Account:
        return await self._run(P.create_account, account_id, settings, self._now(now))

    async def update_settings(
        self, account_id: str, settings: AccountSettings, actor: str = "", now: int | None = None
    ) -> Account:
        """Change the settings; each changed field is recorded in the audit list with `actor`."""
        return await self._run(P.update_settings, account_id, settings, actor, self._now(now))

    # -- people who log in to the page
    async def add_user(self, user: User) -> User:
        return await self._run(P.add_user, user)

    async def find_user(self, username: str) -> User | None:
        return await self._run(P.find_user, username)

    async def account_users(self, account_id: str) -> list[User]:
        return await self._run(P.account_users, account_id)

    async def set_user_language(self, username: str, language: str) -> bool:
        return await self._run(P.set_user_language, username, language)

    async def audit(self, account_id: str, limit: int = 100) -> list[AuditEntry]:
        """The account's audit list, newest first."""
        return await self._run(P.audit_list, account_id, limit)

    async def account(self, account_id: str) -> Account:
        return await self._run(P.get_account, account_id)

    async def find_account(self, account_id: str) -> Account | None:
        return await self._run(P.find_account, account_id)

    async def accounts(self) -> list[Account]:
        return await self._run(P.list_accounts)

    async def topup(
        self,
        account_id: str,
        amount: int,
        reference: str,
        source: str = "manual",
        now: int | None = None,
        *,
        actor: str = "",
    ) -> tuple[Topup, bool]:
        return await self._run(P.topup, account_id, amount, reference, source, self._now(now), actor)

    async def request_topup(
        self, account_id: str, amount: int, reference: str, source: str, now: int | None = None
    ) -> tuple[Topup, bool]:
        return await self._run(P.request_topup, account_id, amount, reference, source, self._now(now))

    async def complete_topup(
        self, reference: str, ok: bool, detail: str = "", now: int | None = None, *, actor: str = ""
    ) -> Topup:
        return await self._run(P.complete_topup, reference, ok, detail, self._now(now), actor)

    async def set_topup_action(self, reference: str, url: str, now: int | None = None) -> bool:
        return await self._run(P.set_topup_action, reference, url, self._now(now))

    # -- notices
    async def claim_notices(self, now: int, until: int, limit: int = 50) -> list[Notice]:
        return await self._run(P.claim_notices, now, until, limit)

    async def notice_sent(self, notice_id: int, now: int) -> None:
        await self._run(P.notice_sent, notice_id, now)

    async def notice_failed(self, notice_id: int, next_at: int) -> None:
        await self._run(P.notice_failed, notice_id, next_at)

    async def note_expiring_cards(self, now: int | None = None) -> int:
        return await self._run(P.note_expiring_cards, self._now(now))

    # -- the card on file and the payment provider's events
    async def card(self, account_id: str) -> Card | None:
        return await self._run(P.get_card, account_id)

    async def card_of_customer(self, provider: str, customer: str) -> Card | None:
        return await self._run(P.card_of_customer, provider, customer)

    async def set_customer(self, account_id: str, provider: str, customer: str, now: int | None = None) -> Card:
        return await self._run(P.set_customer, account_id, provider, customer, self._now(now))

    async def once_per_event(
        self, event_id: str, event_type: str, action: Callable[..., P.Program[T]], *args: Any, now: int | None = None
    ) -> T | None:
        """Run the ledger program `action(*args)` once per provider event id (None when replayed)."""
        return await self._run(P.event_once, event_id, event_type, self._now(now), action, *args)

    async def pending_topups(self) -> list[Topup]:
        return await self._run(P.pending_topups)

    async def find_topup(self, reference: str) -> Topup | None:
        return await self._run(P.find_topup, reference)

    async def topups(self, account_id: str) -> list[Topup]:
        return await self._run(P.list_topups, account_id)

    # -- extensions
    async def set_extension(self, account_id: str, ext: str, settings: ExtensionSettings) -> Extension:
        return await self._run(P.set_extension, account_id, ext, settings)

    async def extension(self, account_id: str, ext: str) -> Extension | None:
        return await self._run(P.find_extension, account_id, ext)

    async def caller(self, account_id: str, ext: str) -> tuple[Account | None, Extension | None]:
        """The account and the extension a call comes from, read together."""
        return await self._run(P.caller, account_id, ext)

    async def extensions(self, account_id: str) -> list[Extension]:
        return await self._run(P.list_extensions, account_id)

    # -- money held back
    async def reserve(
        self,
        call_id: str,
        account_id: str,
        ext: str,
        amount: int,
        now: int | None = None,
        deadline: int = 0,
        details: str = "",
        expect: tuple[int, int] | None = None,
    ) -> ReserveResult:
        """`expect`: the settings revisions the call was decided with (see `programs.reserve`)."""
        return await self._run(P.reserve, call_id, account_id, ext, amount, self._now(now), deadline, details, expect)

    async def extend(self, call_id: str, amount: int, now: int | None = None, deadline: int = 0) -> ReserveResult:
        return await self._run(P.extend, call_id, amount, self._now(now), deadline)

    async def annotate(self, call_id: str, deadline: int, details: str) -> bool:
        return await self._run(P.annotate, call_id, deadline, details)

    async def release(self, call_id: str, now: int | None = None) -> bool:
        return await self._run(P.release, call_id, self._now(now))

    async def settle(
        self, call_id: str, cost: int, details: CallDetails | None = None, now: int | None = None
    ) -> SettleResult:
        result = await self._run(P.settle, call_id, cost, details or CallDetails(), self._now(now))
        if result.overdraft:
            log.warning("overdraft", extra={"call_id": call_id, "cost": cost, "reserved": result.reserved})
        return result

    async def reservations(self, account_id: str | None = None) -> list[Reservation]:
        return await self._run(P.live_reservations, account_id)

    # -- activity and proof
    async def activity(
        self, account_id: str, ext: str | None = None, since: int | None = None, until: int | None = None
    ) -> list[ActivityRow]:
        return await self._run(P.activity, account_id, ext, since, until)

    async def activity_page(
        self,
        account_id: str,
        ext: str | None = None,
        since: int | None = None,
        until: int | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 100,
    ) -> list[ActivityRow]:
        return await self._run(P.activity_page, account_id, ext, since, until, before, limit)

    async def activity_day_totals(
        self, account_id: str, ext: str | None = None, first_day: str | None = None, last_day: str | None = None
    ) -> list[ExtensionTotals]:
        return await self._run(P.activity_day_totals, account_id, ext, first_day, last_day)

    async def activity_days(self, account_id: str, ext: str | None, first_day: str, last_day: str) -> list[DaySpending]:
        return await self._run(P.activity_days, account_id, ext, first_day, last_day)

    async def check(self) -> list[CheckProblem]:
        return await self._run(P.check)
