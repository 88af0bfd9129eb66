"""The engine: authorize a call, follow it while it talks, settle it when it ends.

Rules live here and in `rating/`; `asterisk/` only translates the wire. The money rule:
a running call never spends money that is not reserved for it. Authorize reserves the first
quota; at answer the deadline is set in Asterisk (TIMEOUT(absolute)), and before it runs out
the next quota is reserved and the deadline moved; at hangup the billable time is priced
with the same function that granted it, debited, and the rest released.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from .asterisk.cdr import CdrRecords
from .calls import Answered, Authorization, AuthorizeRequest, CallEvent, CdrBilled, HungUp
from .clock import Clock
from .config import EngineSection
from .contract import ALL_CLASSES, REASON_OF, DestinationClass, Reason, Refusal, Status
from .errors import TariffError
from .event_times import EventTimes
from .ledger import Account, CallDetails, Extension, Ledger, LedgerError, SettleResult, TopupRequest
from .ledger.models import zone
from .numbering import Classification, Kind, classify
from .rating.catalog import TariffStore
from .rating.decision import ExtensionRules, decide, destination_classes, rating_digits
from .rating.price import Fare, Price
from .spool import Pending, Spool

log = logging.getLogger("rating_engine.engine")
MAX_UID = 150
"""Longer than any Asterisk Uniqueid ("1795535109.42", or a ChannelId an application chose)."""
KNOWN_MAX = 100_000
CALLERS_KEPT = 16_384
"""Extensions whose account and rules are kept for the next call's single trip. A few objects
each, walked at every full pass of the cyclic collector; an extension not kept costs its next
call one read more."""


class Pbx(Protocol):
    """What the engine asks of Asterisk (the AMI client implements it)."""

    @property
    def connected(self) -> bool:
        """Logged in and following events: without it no deadline can be set or answer seen."""
        ...

    async def set_timeout(self, channel: str, seconds: int) -> bool: ...

    async def play_warning(self, channel: str, digit: str) -> bool:
        """Make the caller hear the warning (the DTMF feature mapped to `digit`)."""
        ...

    async def live_channels(self) -> dict[str, str]: ...


@dataclass(slots=True)
class Call:
    call_id: str
    account_id: str
    ext: str
    dialed: str
    e164: str
    kind: str
    destination: str
    fare: Fare
    """The price from the start of billing on (the authorization's estimate, then the answer)."""
    granted: int
    reserved: int
    started_at: float
    uid: str = ""
    """The caller channel's Uniqueid: AMI events name the call by it."""
    channel: str = ""
    dest_channel: str = ""
    """The called channel (DialEnd's DestChannel): its TIMEOUT(absolute), set by Dial's U() at the
    answer, is the deadline that holds even if the engine is gone."""
    dest_uid: str = ""
    answered_at: float | None = None
    cdr_billable: int | None = None
    follower: asyncio.Task[None] | None = field(default=None, repr=False)
    fare_at: Callable[[int], Fare | None] | None = field(default=None, repr=False)
    """The fare for a billing start, where time bands make it depend on the answer's time."""

    @property
    def deadline(self) -> float:
        return (self.answered_at or self.started_at) + self.granted

    def details(self, node: str) -> str:
        """What the reservation keeps of the call, so that an engine restarted can follow it: the
        JSON `json.dumps` gives for these keys, written out here (a dict and the encoder for every
        authorization were a tenth of the engine's time), the fare's part once per fare."""
        q = _quoted
        return (
            f'{{"node": {q(node)}, "uid": {q(self.uid)}, "channel": {q(self.channel)},'
            f' "dest_channel": {q(self.dest_channel)}, "dest_uid": {q(self.dest_uid)}, "dialed": {q(self.dialed)},'
            f' "e164": {q(self.e164)}, "kind": {q(self.kind)}, "destination": {q(self.destination)},'
            f' {_fare_json(self.fare)}, "granted": {int(self.granted)},'
            f' "answered_at": {_number(self.answered_at)}, "started_at": {_number(self.started_at)}}}'
        )


_quoted: Callable[[str], str] = json.encoder.encode_basestring_ascii
"""A JSON string as `json.dumps` writes it (ASCII, escaped), in C."""


def _number(x: float | None) -> str:
    """A number as `json.dumps` writes it."""
    if x is None:
        return "null"
    if type(x) is float and math.isfinite(x):
        return float.__repr__(x)
    return json.dumps(x)


@lru_cache(maxsize=4096)
def _fare_json(fare: Fare) -> str:
    """The `price` and `fare` members of a call's details (calls at one price share their fare)."""
    price = _price_list(fare.first)
    pieces = [[o, *_price_list(p)] for o, p in fare.pieces]
    return f'"price": {json.dumps(price)}, "fare": {json.dumps(pieces)}'


def _price_list(p: Price) -> list[int]:
    return [p.per_minute, p.connect_fee, p.initial, p.increment, p.minimum]


def _emergency_only(c: Classification, call_id: str = "") -> Authorization:
    """What nothing known to be free or priced allows: an emergency number goes through (no
    reservation made, so no call id), every other call is refused as the engine's error."""
    if c.kind is Kind.EMERGENCY:
        return Authorization(Status.ALLOW, Reason.EMERGENCY, c.e164)
    return Authorization(Status.DENY, Reason.ENGINE_ERROR, c.e164, call_id=call_id)


@dataclass(slots=True)
class EngineStats:
    outcomes: dict[str, int] = field(default_factory=dict)
    settled: int = 0
    released: int = 0
    extended: int = 0
    estimated: int = 0
    cdr_mismatches: int = 0
    warnings: int = 0
    velocity_alerts: int = 0
    low_balances: int = 0
    """Settles that took an account below its threshold."""
    renew_failures: int = 0
    """Renewals the ledger could not take (each try)."""

    def count(self, reason: str) -> None:
        self.outcomes[reason] = self.outcomes.get(reason, 0) + 1


class Engine:
    def __init__(
        self,
        tariffs: TariffStore,
        ledger: Ledger,
        clock: Clock | None = None,
        settings: EngineSection | None = None,
        pbx: Pbx | None = None,
    ) -> None:
        self.tariffs = tariffs
        self.ledger = ledger
        self.clock = clock or Clock()
        self.settings = settings or EngineSection()
        self.pbx = pbx
        self.calls: dict[str, Call] = {}
        """Live charged calls by call id (the reservation's key)."""
        self._by_uid: dict[str, str] = {}
        """Channel Uniqueid (caller's or called's) → call id: AMI events name channels."""
        self._deciding: dict[str, float | None] = {}
        """Caller channels with an authorization under way → when the channel hung up meanwhile."""
        self.cdr_records: CdrRecords | None = None
        """Asterisk's own durable record of each call, read when reconciling (see cdr.py)."""
        self.stats = EngineStats()
        self.accepting = True
        self._background: set[asyncio.Task[None]] = set()
        ledger.on_late_reservation = self._give_back_late
        self.on_topup: Callable[[TopupRequest], None] | None = None
        """Pays an automatic top-up a settle asked for (payments.TopupRunner.start); never awaited."""
        self.observer: Callable[[str, dict[str, Any]], None] | None = None
        """Told of each step of each call (the demo prints them); must not block."""
        self.spool: Spool | None = None
        """Where a call's settlement waits while the ledger cannot be reached (see spool.py)."""
        self._known: dict[tuple[str, str], tuple[str, ExtensionRules]] = {}
        """(account, extension) → its plan and rules, as last read: with the ledger away, what the
        plan includes still goes through (nothing is reserved for a free call)."""
        self._callers: dict[tuple[str, str], tuple[Account, Extension | None]] = {}
        """(account, extension) → both as last read: a chargeable call is decided with them and
        reserved on the condition that their settings have not changed since (`Ledger.reserve`)."""
        self._plans_missing: dict[str, float] = {}
        """Plans accounts are on that no loaded file defines → when that was last logged."""
        self._flushing = asyncio.Lock()
        self.event_times = EventTimes()
        """The PBX's event times on this engine's clock: a call's deadline and its bill read one clock."""

    def _notify(self, what: str, **fields: Any) -> None:
        if self.observer is not None:
            self.observer(what, fields)

    # ------------------------------------------------------------ authorize
    def fallback(self, request: AuthorizeRequest, why: str) -> Authorization:
        """Answer without the ledger: emergency numbers still go through, the rest is refused."""
        c = classify(request.dialed, self.settings.default_country)
        self.stats.count(f"fallback_{why}")
        known = self._known.get((request.account, request.extension))
        if known is not None and c.kind is not Kind.EMERGENCY:
            tariffs = self.tariffs.current
            try:
                plan = tariffs.plan(known[0])
            except TariffError:  # the plan is gone since (a reload): nothing is known to be free
                pass
            else:
                d = decide(plan, tariffs.rates_for(plan), request.dialed, self.clock.now_int(), known[1])
                if d.reason is Reason.INCLUDED:
                    return Authorization(Status.ALLOW, Reason.INCLUDED, d.number.e164)
        return _emergency_only(c)

    async def authorize(self, request: AuthorizeRequest) -> Authorization:
        s = self.settings
        uid, dialed, ext, account_id = request.uniqueid, request.dialed, request.extension, request.account
        now = self.clock.now()
        # Each authorization is its own call, even on a channel that dials again: the id names
        # the engine, the channel and the moment, so two PBXes or two Dials cannot collide.
        call_id = f"{s.node}:{uid}:{int(now * 1000)}" if uid else ""

        def allow(reason: Reason, e164: str) -> Authorization:
            return self._done(Authorization(Status.ALLOW, reason, e164, call_id=call_id))

        def deny(reason: Reason, e164: str) -> Authorization:
            return self._done(Authorization(Status.DENY, reason, e164, call_id=call_id))

        # The account's settings and the extension's rules as this engine last read them: the call is
        # decided with them and reserved in one trip, on the condition that they are still those
        # (their revisions); if they changed, or the money looks short, read them and decide again.
        cached = self._callers.get((account_id, ext)) if account_id else None
        self._deciding[uid] = None  # a Hangup of this channel meanwhile is noted there
        try:
            for _ in range(3):
                if cached is None:
                    account, extension = await self._read_caller(account_id, ext) if account_id else (None, None)
                else:
                    account, extension = cached
                if account is None:
                    c = classify(dialed, s.default_country)
                    if c.kind is Kind.EMERGENCY:
                        return allow(Reason.EMERGENCY, c.e164)
                    return deny(Reason.UNKNOWN_ACCOUNT, c.e164)
                answer = await self._authorize_as(request, call_id, now, account, extension, fresh=cached is None)
                if answer is not None:
                    return self._done(answer)
                cached = None
            return deny(Reason.ENGINE_ERROR, classify(dialed, s.default_country).e164)
        finally:
            self._deciding.pop(uid, None)

    async def _read_caller(self, account_id: str, ext: str) -> tuple[Account | None, Extension | None]:
        """Read the account and the extension, and keep them for the extension's next call."""
        account, extension = await self.ledger.caller(account_id, ext)
        if account is not None:
            if len(self._callers) >= CALLERS_KEPT:
                self._callers.clear()
            self._callers[(account_id, ext)] = (account, extension)
        return account, extension

    async def _authorize_as(
        self,
        request: AuthorizeRequest,
        call_id: str,
        now: float,
        account: Account,
        extension: Extension | None,
        *,
        fresh: bool,
    ) -> Authorization | None:
        """The answer for this account and extension as given; None: they may be out of date (not
        `fresh`, or the ledger said their settings changed), read them and decide again."""
        s = self.settings
        uid, dialed, ext, account_id = request.uniqueid, request.dialed, request.extension, account.id
        at = int(now)
        tariffs = self.tariffs.current
        if account.settings.plan not in tariffs.plans:
            return self._without_plan(account, dialed, call_id)
        plan = tariffs.plan(account.settings.plan)
        rates = tariffs.rates_for(plan)
        rules = _rules(extension, account)
        if len(self._known) >= KNOWN_MAX:
            self._known.clear()
        self._known[(account_id, ext)] = (account.settings.plan, rules)
        tz = account.settings.timezone
        d = decide(plan, rates, dialed, at, rules, tz=tz)
        e164 = d.number.e164
        if d.reason is Reason.EMERGENCY:
            return Authorization(Status.ALLOW, d.reason, e164, call_id=call_id)
        if not fresh and (d.reason is Reason.INCLUDED or not d.allowed):
            return None  # free or refused by the settings: only on settings as they are now
        if d.reason is Reason.INCLUDED:
            return Authorization(Status.ALLOW, d.reason, e164, call_id=call_id)
        if not d.allowed or d.row is None or d.fare is None:
            return Authorization(Status.DENY, d.reason, e164, call_id=call_id)
        if not self.accepting or not uid or len(uid) > MAX_UID or (self.pbx is not None and not self.pbx.connected):
            # Shutting down, a channel AMI could not name, or the AMI link is down: a charged call
            # could be neither timed nor followed. Included and emergency calls went through above.
            return Authorization(Status.DENY, Reason.ENGINE_ERROR, e164, call_id=call_id)
        if _outside_hours(account, d.number, plan.country, at):
            return None if not fresh else Authorization(Status.DENY, Reason.OUTSIDE_HOURS, e164, call_id=call_id)
        fare = d.fare
        budget = _budget(account, extension, at)
        if not fresh and budget < fare.cost(s.quota_seconds):
            return None  # the money looked short last time: the amount must be sized on what is there now
        previous = self._by_uid.get(uid)
        if previous is not None and previous in self.calls:
            # The channel is back in the dialplan: its previous Dial is over.
            await self._finish(self._forget(self.calls[previous]), now)
        call = Call(
            call_id, account_id, ext, dialed, e164, d.number.kind.value, d.row.destination, fare, 0, 0, now, uid
        )
        if rates.bands is not None:
            digits = rating_digits(d.number, plan)
            call.fare_at = lambda when: rates.fare_at(digits, when, tz)
        # The settings this call was decided with: a retry below reads the money again, not the rules.
        decided_with = (account.settings_rev, 0 if extension is None else extension.settings_rev)
        for attempt in range(2):
            seconds = min(s.quota_seconds, fare.max_seconds(budget))
            if seconds <= 0:
                reason = (
                    Reason.CAP_REACHED
                    if _cap_binding(account, extension, at)
                    else _refusal_reason(account.shortfall(fare.cost(1)))
                )
                return Authorization(Status.DENY, reason, e164, call_id=call_id)
            call.granted, call.reserved = seconds, fare.cost(seconds)
            held = await self.ledger.reserve(
                call_id,
                account_id,
                ext,
                call.reserved,
                at,
                at + s.ring_timeout + seconds,
                call.details(s.node),
                expect=decided_with,
            )
            hung_up_at = self._deciding.get(uid)
            if held.ok and hung_up_at is not None:
                # The channel hung up while its authorization was under way (its Hangup came before
                # the call was the engine's to follow): no Dial will come, so the money goes back.
                await self._finish(call, hung_up_at)
                return Authorization(Status.DENY, Reason.ENGINE_ERROR, e164, call_id=call_id)
            if held.ok:
                self.calls[call_id] = call
                self._by_uid[uid] = call_id
                return Authorization(Status.ALLOW, Reason.CHARGED, e164, s.ring_timeout + seconds, seconds, call_id)
            if held.refusal is Refusal.SETTINGS_CHANGED:
                return None
            if held.alert:
                self.stats.velocity_alerts += 1
                log.warning(
                    "velocity limit reached: chargeable calls refused until spending falls",
                    extra={"account": account_id, "limit": account.settings.velocity_limit},
                )
            if attempt == 0 and held.refusal in (
                Refusal.INSUFFICIENT_FUNDS,
                Refusal.CAP_REACHED,
                Refusal.ACCOUNT_BLOCKED,
            ):
                fresh_account, extension = await self._read_caller(account_id, ext)  # another call took money
                if fresh_account is None:
                    return None
                account = fresh_account
                budget = _budget(account, extension, at)
                continue
            return Authorization(Status.DENY, _refusal_reason(held.refusal), e164, call_id=call_id)
        return Authorization(Status.DENY, Reason.INSUFFICIENT_FUNDS, e164, call_id=call_id)

    def _without_plan(self, account: Account, dialed: str, call_id: str) -> Authorization:
        """An account on a plan no loaded file defines (removed from the config, or a reload that
        dropped it): nothing is known to be free or priced, so only emergency calls go through; said
        once a minute per plan, not as a traceback at every call."""
        c = classify(dialed, self.settings.default_country)
        name = account.settings.plan
        now = self.clock.now()
        if now - self._plans_missing.get(name, -math.inf) >= 60:
            self._plans_missing[name] = now
            loaded = ", ".join(sorted(self.tariffs.current.plans)) or "none"
            log.error(
                "an account's plan is not loaded: its chargeable and included calls are refused",
                extra={"account": account.id, "plan": name, "loaded": loaded},
            )
        return _emergency_only(c, call_id)

    def _done(self, a: Authorization) -> Authorization:
        self.stats.count(f"{a.status.lower()}_{a.reason}")
        self._notify(
            "authorized",
            call_id=a.call_id,
            status=a.status,
            reason=a.reason,
            e164=a.e164,
            guard=a.guard_seconds,
            call=self.calls.get(a.call_id),
        )
        return a

    # ------------------------------------------------------------ following calls
    def _when(self, at: float | None) -> float:
        """An event's time on the engine's clock (its own time when the PBX gave none)."""
        now = self.clock.now()
        return now if at is None else self.event_times.here(at, now)

    def pinged(self, at: float, round_trip: float) -> None:
        """The PBX answered a Ping at `at` on its clock, `round_trip` real seconds after it was sent."""
        received = self.clock.now()
        self.event_times.pinged(at, received - round_trip * self.clock.speed, received)

    def follow_system_clock(self) -> float | None:
        """Take a step of the system clock into the engine's clock, so that the ledger's times (the
        activity, the days of the caps) are the wall's again; returns the seconds it moved. Only
        while no call is followed or being decided (None otherwise): a live call's answer and
        deadline are times on the clock as it was. What was read of the PBX's clock is forgotten:
        the next event or Ping reads it again against the engine's."""
        if self.calls or self._deciding:
            return None
        moved = self.clock.follow_system()
        self.event_times.forget()
        return moved

    def _call_of(self, uid: str) -> Call | None:
        key = self._by_uid.get(uid)
        return None if key is None else self.calls.get(key)

    def _forget(self, call: Call) -> Call:
        """Stop following a call (it ended): no event reaches it any more."""
        self.calls.pop(call.call_id, None)
        for uid in (call.uid, call.dest_uid):
            if uid and self._by_uid.get(uid) == call.call_id:
                del self._by_uid[uid]
        return call

    async def handle(self, event: CallEvent) -> None:
        """One event of a call, in the order Asterisk sent them."""
        at = self._when(event.at) if not isinstance(event, CdrBilled) else 0.0
        if isinstance(event, HungUp) and event.uniqueid in self._deciding:
            self._deciding[event.uniqueid] = at  # see `_authorize_as`
        call = self._call_of(event.uniqueid)
        if call is None:
            return
        if isinstance(event, Answered):
            if call.answered_at is None:
                call.answered_at = at
                self._bill_from_answer(call)
                call.channel = event.channel or call.channel
                call.dest_channel, call.dest_uid = event.called_channel, event.called_uniqueid
                if call.dest_uid:
                    self._by_uid[call.dest_uid] = call.call_id
                self._spawn(self._push_deadline(call))  # at once, and not cancelled by a quick hangup
                call.follower = asyncio.get_running_loop().create_task(self._follow(call))
                self._notify("answered", call=call)
        elif isinstance(event, CdrBilled):
            call.cdr_billable = event.billable_seconds
        elif isinstance(event, HungUp):
            # Whichever leg hangs up first ends the bridge: the caller's, or the called channel's
            # (its paid deadline, set by U(), ends it there).
            await self._finish(self._forget(call), at)

    @staticmethod
    def _bill_from_answer(call: Call) -> None:
        """With time bands, the fare starts at the answer, not at the authorization: the granted
        time shrinks to what the reservation pays at that fare (never more than was held). If the
        reservation cannot pay even the first increment at the answer's fare, the call keeps the
        fare it was authorized at: an account is never overdrawn by a band change during ringing."""
        if call.fare_at is None or call.answered_at is None:
            return
        fare = call.fare_at(math.floor(call.answered_at))
        if fare is None:
            return
        paid = fare.max_seconds(call.reserved)
        if paid < 1:
            log.info("answered in a dearer band than the reservation pays: the authorized fare kept",
                     extra={"call_id": call.call_id})  # fmt: skip
            return
        call.fare = fare
        call.granted = min(call.granted, paid)

    async def _follow(self, call: Call) -> None:
        """Hold the deadline in Asterisk and move it forward while the account can pay.

        The next quota is reserved `renew_margin` seconds before the deadline, or earlier
        when the caller must be warned earlier than that: a warning is only for a call whose
        next quota cannot be paid.
        """
        s = self.settings
        lead = max(s.renew_margin, s.warning_seconds)
        try:
            while call.call_id in self.calls:
                await self.clock.sleep_until(call.deadline - lead)
                if call.call_id not in self.calls:
                    return
                if await self._try_renew(call, call.deadline - max(s.warning_seconds, 1)):
                    await self._push_deadline(call)
                    continue
                log.info(
                    "quota not renewed: the call ends at its deadline",
                    extra={"call_id": call.call_id, "granted": call.granted},
                )
                if not await self._warn_until_deadline(call):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "following a call failed; its deadline in Asterisk still holds", extra={"call_id": call.call_id}
            )

    async def _warn_until_deadline(self, call: Call) -> bool:
        """Warn the caller `warning_seconds`, then `final_warning_seconds`, before a deadline that
        cannot be moved; before each warning try once more to renew (a top-up may have landed).
        True when a renewal moved the deadline after all: no further warning, follow on."""
        s = self.settings
        sent = False
        for before in sorted({w for w in (s.warning_seconds, s.final_warning_seconds) if w > 0}, reverse=True):
            at = call.deadline - before
            if at > self.clock.now():
                await self.clock.sleep_until(at)
                if call.call_id not in self.calls:
                    return False
                if await self._try_renew(call, at):
                    await self._push_deadline(call)
                    return True
            elif sent:
                continue  # both moments are past (a short grant): one warning is enough
            sent = True
            if self.pbx is not None and call.channel:
                self.stats.warnings += 1
                self._notify("warned", call=call, seconds_left=max(0, round(call.deadline - self.clock.now())))
                await self.pbx.play_warning(call.channel, s.warning_digit)
        return False

    async def _try_renew(self, call: Call, give_up_at: float) -> bool:
        """A renewal the ledger cannot take now (the database is away) is tried again every second
        until `give_up_at`: the deadline in Asterisk holds meanwhile, and if the database is back
        in time the call goes on as if nothing happened."""
        while True:
            try:
                return await self._renew(call)
            except Exception as exc:  # any failure of the ledger: the deadline stands
                self.stats.renew_failures += 1
                again = self.clock.now() + 1 < give_up_at and call.call_id in self.calls
                log.warning(
                    "renewal failed; the deadline in Asterisk stands",
                    extra={"call_id": call.call_id, "error": type(exc).__name__, "retry": again},
                )
                if not again:
                    return False
                await self.clock.sleep(1)
                if call.call_id not in self.calls:
                    return False

    def _give_back_late(self, call_id: str) -> None:
        """A reservation held after its authorization gave up (the fallback told the dialplan no):
        no call will follow it, so it is released now, through the spool if the ledger is away,
        rather than held until a reconciliation bills it as a call whose end was never seen."""
        self._spawn(self._write_late_release(call_id))

    async def _write_late_release(self, call_id: str) -> None:
        try:
            await self._write(Pending("release", call_id, self.clock.now_int()))
        except LedgerError:
            log.exception("a late reservation could not be released", extra={"call_id": call_id})

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _push_deadline(self, call: Call) -> None:
        """Set the deadline in Asterisk first (it is what stops the call), then note it in the ledger.

        On both legs: the caller's guard (set before Dial, ringing included) and the called
        channel's paid time (set by Dial's U() at the answer) must both move, or the earlier cuts.
        """
        remaining = max(1, math.floor(call.deadline - self.clock.now()))
        if self.pbx is not None:
            for channel in (call.channel, call.dest_channel):
                if channel:
                    await self.pbx.set_timeout(channel, remaining)
        if call.call_id in self.calls:
            try:
                await self.ledger.annotate(call.call_id, math.floor(call.deadline), call.details(self.settings.node))
            except Exception as exc:  # a note for crash recovery; the deadline is set
                log.warning(
                    "the deadline is set in Asterisk but not noted in the ledger",
                    extra={"call_id": call.call_id, "error": type(exc).__name__},
                )

    async def _renew(self, call: Call) -> bool:
        s = self.settings
        for _ in range(2):
            found, extension = await self.ledger.caller(call.account_id, call.ext)
            if found is None:
                return False
            account = found
            budget = call.reserved + _budget(account, extension, self.clock.now_int())
            more = min(s.quota_seconds, call.fare.max_seconds(budget) - call.granted)
            if more <= 0:
                return False
            amount = call.fare.cost(call.granted + more) - call.reserved
            if amount <= 0:  # the next seconds are already paid for by the billing increment
                call.granted += more
                return True
            held = await self.ledger.extend(
                call.call_id, amount, self.clock.now_int(), math.floor(call.deadline + more)
            )
            if held.alert:
                self.stats.velocity_alerts += 1
                log.warning("velocity limit reached: a live call is not renewed", extra={"account": call.account_id})
            if held.ok:
                call.granted += more
                call.reserved += amount
                self.stats.extended += 1
                self._notify("renewed", call=call, more=more, amount=amount)
                return True
        return False

    async def _finish(self, call: Call, ended_at: float, estimated: bool = False) -> None:
        if call.follower is not None:
            call.follower.cancel()
        if call.answered_at is None:
            if await self._write(Pending("release", call.call_id, int(ended_at))) is not None:
                self.stats.released += 1
                self._notify("released", call=call)
            return
        billable = max(0, math.floor(ended_at - call.answered_at))
        if billable > call.granted:
            log.warning(
                "call outlived its deadline; billing the granted time",
                extra={"call_id": call.call_id, "billable": billable, "granted": call.granted},
            )
            billable = call.granted
        if call.cdr_billable is not None and abs(call.cdr_billable - billable) > self.settings.cdr_tolerance:
            self.stats.cdr_mismatches += 1
            log.warning(
                "Cdr BillableSeconds differs from answer-to-hangup",
                extra={"call_id": call.call_id, "cdr": call.cdr_billable, "ours": billable},
            )
        amount = call.fare.cost(billable)
        details = CallDetails(
            int(call.started_at),
            int(ended_at),
            call.dialed,
            call.e164,
            call.destination,
            call.kind,
            billable,
            estimated,
        )
        result = await self._write(Pending("settle", call.call_id, int(ended_at), amount, details))
        if isinstance(result, SettleResult) and result.settled:
            self._notify(
                "settled",
                call=call,
                billable=billable,
                cost=amount,
                balance=result.balance_after,
                estimated=estimated,
                cut=ended_at >= call.deadline - 2,
            )

    async def _apply(self, entry: Pending) -> SettleResult | bool:
        if entry.kind == "release":
            return await self.ledger.release(entry.call_id, entry.at)
        result = await self.ledger.settle(entry.call_id, entry.cost, entry.details, entry.at)
        self.stats.low_balances += result.crossed_threshold
        if result.topup is not None:
            if self.on_topup is not None:
                self.on_topup(result.topup)
            else:
                log.warning("auto top-up left pending: no payment runner", extra={"reference": result.topup.reference})
        if result.settled:
            self.stats.settled += 1
            self.stats.estimated += entry.details.estimated
        return result

    async def _write(self, entry: Pending) -> SettleResult | bool | None:
        """Settle or release in the ledger; when it cannot be reached, keep the entry in the spool
        (durably before returning None, where its disk allows) to be written when it answers again."""
        try:
            return await self._apply(entry)
        except LedgerError:
            raise
        except Exception as exc:
            if self.spool is None:
                raise
            await self.spool.keep(entry)
            log.warning(
                "ledger unreachable: the call's settlement is kept in the spool",
                extra={"call_id": entry.call_id, "kind": entry.kind, "error": type(exc).__name__},
            )
            return None

    async def flush_spool(self) -> int:
        """Write what the spool holds, oldest first, until the ledger fails again; how many were written."""
        if self.spool is None or not self.spool.entries:
            return 0
        async with self._flushing:
            taken: list[Pending] = []
            for entry in list(self.spool.entries):
                try:
                    await self._apply(entry)
                except LedgerError as exc:  # can never be written: said loudly, not retried forever
                    log.error(
                        "spooled settlement refused by the ledger", extra={"call_id": entry.call_id, "error": str(exc)}
                    )
                except Exception:
                    break
                taken.append(entry)
            if taken:
                await self.spool.drop(taken)
                log.info("spooled settlements written", extra={"written": len(taken), "left": len(self.spool.entries)})
            return len(taken)

    # ------------------------------------------------------------ restart and reconnect
    async def reconcile(self) -> tuple[int, int]:
        """Settle reservations whose channel is gone; follow again those still up. (settled, followed)

        A call that ended while the engine was away is billed from Asterisk's own CDR record when
        one is configured and found (not estimated), and released when that record names no called
        channel; otherwise from what the engine had seen, and when it never saw the answer, up to
        the paid time Asterisk would have allowed (estimated).
        """
        if self.pbx is None:
            return 0, 0
        await self.flush_spool()  # what ended while the ledger was away is billed as measured, first
        waiting = {e.call_id for e in self.spool.entries} if self.spool is not None else set()
        live = await self.pbx.live_channels()
        settled = followed = 0
        gone: list[Call] = []
        for r in await self.ledger.reservations():
            try:
                info = json.loads(r.details) if r.details else {}
            except ValueError:
                info = {}
            uid = str(info.get("uid") or r.call_id)  # reservations of 0.1 were keyed by the Uniqueid
            if info.get("node") != self.settings.node or (r.call_id in self.calls and uid in live):
                continue
            if r.call_id in waiting:  # its settlement is in the spool, still to be written
                continue
            call = self.calls.get(r.call_id) or _call_from(r.call_id, r.account_id, r.ext, r.amount, info)
            call.uid = uid
            if uid in live:
                call.channel = live[uid] or call.channel
                self.calls[r.call_id] = call
                self._by_uid[uid] = r.call_id
                if call.dest_uid:
                    self._by_uid[call.dest_uid] = r.call_id
                if call.answered_at is not None and (call.follower is None or call.follower.done()):
                    call.follower = asyncio.get_running_loop().create_task(self._follow(call))
                followed += 1
            else:
                gone.append(self._forget(call))
        records = await asyncio.to_thread(self.cdr_records.find, [c.uid for c in gone]) if self.cdr_records else {}
        now = self.clock.now()
        for call in gone:
            record = records.get(call.uid)
            if record is not None and record.dstchannel:
                if record.answer is None:
                    call.answered_at = None  # busy, unanswered: nothing to pay
                    await self._finish(call, record.end or now)
                else:
                    call.answered_at = record.answer
                    await self._finish(call, record.answer + record.billsec)
            elif record is not None and call.answered_at is None:
                # Asterisk recorded the caller and no called channel: every Dial gives the caller's
                # record one, even busy or unanswered. So it never dialed (refused, or the engine
                # was gone before it answered): nothing was talked.
                await self._finish(call, record.end or now)
            elif call.answered_at is not None:
                await self._finish(call, min(now, call.deadline), estimated=True)
            else:
                # Never saw the answer and no record of the call: Asterisk may have let it talk for
                # the paid quota (U() starts it at the answer), so that is what is billed, estimated.
                call.answered_at = min(now, call.started_at + self.settings.ring_timeout)
                await self._finish(call, call.deadline, estimated=True)
            settled += 1
        return settled, followed

    async def drain(self, grace: float) -> None:
        """Shutdown: keep following live calls until they end or `grace` (clock seconds) passes."""
        self.accepting = False
        waited = 0.0
        while self.calls and waited < grace:
            await self.clock.sleep(0.5)
            waited += 0.5
        for call in list(self.calls.values()):
            if call.follower is not None:
                call.follower.cancel()


def _rules(extension: Extension | None, account: Account) -> ExtensionRules:
    blocked = account.settings.blocked_prefixes
    if extension is None:
        return ExtensionRules(blocked_prefixes=blocked)
    s = extension.settings
    classes = ALL_CLASSES if s.classes is None else s.classes
    return ExtensionRules(chargeable=s.chargeable, classes=classes, blocked_prefixes=blocked)


OFF_HOURS_CLASSES = frozenset(
    {DestinationClass.INTERNATIONAL, DestinationClass.MOBILE_ABROAD, DestinationClass.PREMIUM}
)
"""What an account's office hours restrict: the destinations toll fraud goes for."""


def _outside_hours(account: Account, number: Classification, country: str, now: int) -> bool:
    """Refused for the office's hours: the number's classes are worked out only for an account
    that has hours (most have none)."""
    hours = account.settings.hours
    return (
        hours is not None
        and bool(destination_classes(number, country) & OFF_HOURS_CLASSES)
        and not hours.contains(now, zone(account.settings.timezone))
    )


def _cap_left(account: Account, extension: Extension | None, now: int) -> int | None:
    return None if extension is None else extension.cap_left(now, account.settings.timezone)


def _budget(account: Account, extension: Extension | None, now: int) -> int:
    cap = _cap_left(account, extension, now)
    return max(0, account.available if cap is None else min(account.available, cap))


def _cap_binding(account: Account, extension: Extension | None, now: int) -> bool:
    cap = _cap_left(account, extension, now)
    return cap is not None and cap < account.available


def _refusal_reason(refusal: Refusal | None) -> Reason:
    """A refusal without a code is the ledger failing: an engine error, never a guessed reason."""
    return Reason.ENGINE_ERROR if refusal is None else REASON_OF[refusal]


def _call_from(call_id: str, account_id: str, ext: str, reserved: int, info: dict[str, Any]) -> Call:
    """Rebuild a call from its reservation after a restart (the price it started with)."""
    pieces = info.get("fare") or [[0, *(info.get("price") or [0, 0, 1, 1, 0])]]
    fare = Fare(tuple((int(p[0]), Price(*(int(x) for x in p[1:]))) for p in pieces))
    answered = info.get("answered_at")
    call = Call(
        call_id,
        account_id,
        ext,
        str(info.get("dialed", "")),
        str(info.get("e164", "")),
        str(info.get("kind", "")),
        str(info.get("destination", "")),
        fare,
        int(info.get("granted", 0)),
        reserved,
        float(info.get("started_at", 0)),
        str(info.get("uid", "")),
        str(info.get("channel", "")),
        answered_at=float(answered) if answered is not None else None,
    )
    call.dest_channel = str(info.get("dest_channel", ""))
    call.dest_uid = str(info.get("dest_uid", ""))
    return call
