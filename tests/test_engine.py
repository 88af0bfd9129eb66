"""The engine on its own: typed requests and events in, a fake PBX and an in-memory ledger around it,
and a clock the test moves. No socket and no sleep: each step awaits what the engine does next."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from rating_engine.asterisk.cdr import CdrRecord, CdrRecords, format_row
from rating_engine.calls import Answered, AuthorizeRequest, CdrBilled, HungUp
from rating_engine.clock import Clock
from rating_engine.config import EngineSection
from rating_engine.contract import Reason, Status
from rating_engine.engine import Engine
from rating_engine.ledger import AccountSettings, Ledger, OnLow, make_ledger
from rating_engine.payments import TopupRunner
from rating_engine.rating.catalog import TariffStore
from rating_engine.rating.price import cost

from .conftest import OFFICE_FR
from .helpers import EUR
from .payment_doubles import ScriptedProvider

T0 = 1_795_535_109.0
PREMIUM = "0899123456"
SHORT = 930_000
"""0899 costs 0.12 EUR to connect and 0.80 a minute, by the second: this pays 60 s and not 61."""


class ManualClock(Clock):
    """Time moves only when the test says so; sleepers wake in order of their deadlines."""

    def __init__(self, start: float = T0) -> None:
        super().__init__(start=start)
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + max(seconds, 0.0))

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._order), waiter))
        await waiter

    def advance(self, seconds: float) -> None:
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)


@dataclass
class FakePbx:
    """Records what the engine asks of Asterisk, in order; the test awaits each action."""

    connected: bool = True
    actions: asyncio.Queue[tuple[str, str, object]] = field(default_factory=asyncio.Queue)
    live: dict[str, str] = field(default_factory=dict)

    async def set_timeout(self, channel: str, seconds: int) -> bool:
        await self.actions.put(("timeout", channel, seconds))
        return True

    async def play_warning(self, channel: str, digit: str) -> bool:
        await self.actions.put(("warning", channel, digit))
        return True

    async def live_channels(self) -> dict[str, str]:
        return dict(self.live)

    async def next(self) -> tuple[str, str, object]:
        return await asyncio.wait_for(self.actions.get(), 5)


@dataclass
class Rig:
    engine: Engine
    ledger: Ledger
    clock: ManualClock
    pbx: FakePbx


@asynccontextmanager
async def rig(
    balance: int = 10 * EUR, account: AccountSettings | None = None, **settings: object
) -> AsyncIterator[Rig]:
    ledger = make_ledger("sqlite:///")  # in memory
    await ledger.open()
    await ledger.create_account("acme", account or AccountSettings("office-fr", "EUR"))
    if balance:
        await ledger.topup("acme", balance, "opening")
    clock, pbx = ManualClock(), FakePbx()
    opts = {"quota_seconds": 60, "renew_margin": 10, "warning_seconds": 30, "final_warning_seconds": 10, **settings}
    engine = Engine(TariffStore([OFFICE_FR]), ledger, clock, EngineSection(**opts), pbx)  # type: ignore[arg-type]
    try:
        yield Rig(engine, ledger, clock, pbx)
    finally:
        await ledger.close()


def request(dialed: str = PREMIUM, uid: str = "1795535109.7", ext: str = "201") -> AuthorizeRequest:
    return AuthorizeRequest(uid, dialed, ext, "acme")


def answered(uid: str, at: float) -> Answered:
    return Answered(uid, at, f"PJSIP/201-{uid}", f"PJSIP/trunk-{uid}", f"{uid}-callee")


async def settled(r: Rig, call_id: str) -> tuple[int, int, bool]:
    """(billable seconds, cost, estimated) of the call's activity row."""
    [row] = [x for x in await r.ledger.activity("acme") if x.call_id == call_id]
    return row.billable_seconds, row.cost, row.estimated


async def test_a_charged_call_is_answered_renewed_and_settled_on_the_clock() -> None:
    async with rig() as r:
        a = await r.engine.authorize(request())
        assert (a.status, a.reason, a.quota_seconds, a.guard_seconds) == (Status.ALLOW, Reason.CHARGED, 60, 120)
        price = r.engine.calls[a.call_id].fare.first
        r.clock.advance(4)  # ringing
        await r.engine.handle(answered("1795535109.7", T0 + 4))
        # at the answer the deadline is set on both legs: the caller's and the called channel
        assert {await r.pbx.next(), await r.pbx.next()} == {
            ("timeout", "PJSIP/201-1795535109.7", 60),
            ("timeout", "PJSIP/trunk-1795535109.7", 60),
        }
        r.clock.advance(30)  # 30 s before the deadline: the next quota is reserved, the deadline moved
        assert (await r.pbx.next())[0::2] == ("timeout", 90)
        assert (await r.pbx.next())[0::2] == ("timeout", 90)
        r.clock.advance(20)
        await r.engine.handle(CdrBilled("1795535109.7", 50))
        await r.engine.handle(HungUp("1795535109.7", T0 + 54))
        assert await settled(r, a.call_id) == (50, cost(50, price), False)
        acc = await r.ledger.account("acme")
        assert acc.balance == 10 * EUR - cost(50, price) and acc.reserved == 0
        assert await r.ledger.check() == [] and r.engine.calls == {}


@pytest.mark.parametrize("pbx_ahead", [3600.0, 0.5])
async def test_a_pbx_clock_ahead_of_the_engine_s_gives_no_free_talk(pbx_ahead: float) -> None:
    """Asterisk stamps its events with its own clock. An hour ahead of the engine's (an engine started
    before the boot's clock step, another host without NTP), the answer still sets the paid quota, not
    an hour more; the renewal comes at its moment and the bill is the time talked."""
    async with rig() as r:
        a = await r.engine.authorize(request())
        price = r.engine.calls[a.call_id].fare.first
        r.clock.advance(4)
        await r.engine.handle(answered("1795535109.7", T0 + 4 + pbx_ahead))
        assert {await r.pbx.next(), await r.pbx.next()} == {
            ("timeout", "PJSIP/201-1795535109.7", 60),
            ("timeout", "PJSIP/trunk-1795535109.7", 60),
        }
        r.clock.advance(31)
        assert [(await r.pbx.next())[0::2] for _ in range(2)] == [("timeout", 89)] * 2
        r.clock.advance(19)
        await r.engine.handle(HungUp("1795535109.7", T0 + 54 + pbx_ahead))
        assert await settled(r, a.call_id) == (50, cost(50, price), False)
        assert await r.ledger.check() == [] and r.engine.calls == {}


async def test_a_pbx_clock_behind_the_engine_s_is_read_from_a_ping() -> None:
    async with rig() as r:
        a = await r.engine.authorize(request())
        r.engine.pinged(T0 - 3600 + 0.002, 0.004)  # Asterisk's time in its Ping reply, 4 ms there and back
        await r.engine.handle(answered("1795535109.7", T0 - 3600))
        # the quota less the round trip's few ms at most (never more than paid), in whole seconds down
        assert [(await r.pbx.next())[2] for _ in range(2)] == [59, 59]
        r.clock.advance(45)
        await r.engine.handle(HungUp("1795535109.7", T0 - 3600 + 45))
        assert (await settled(r, a.call_id))[0] == 45 and await r.ledger.check() == []


async def test_a_pbx_clock_behind_the_engine_s_cuts_calls_early_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """Without a Ping answered, behind cannot be told from events handled late: nothing is corrected,
    no more time is given than paid, and the log says why calls end early."""
    async with rig() as r:
        a = await r.engine.authorize(request())
        with caplog.at_level("WARNING", "rating_engine.engine"):
            await r.engine.handle(answered("1795535109.7", T0 - 3600))
        assert [(await r.pbx.next())[2] for _ in range(2)] == [1, 1]  # the deadline passed: cut at once
        assert "the PBX's clock is behind" in caplog.text
        await r.engine.handle(HungUp("1795535109.7", T0 - 3599))
        assert (await settled(r, a.call_id))[0] == 1 and await r.ledger.check() == []


async def test_a_call_the_account_cannot_extend_is_warned_twice_then_left_to_its_deadline() -> None:
    async with rig(balance=SHORT) as r:
        a = await r.engine.authorize(request())
        assert a.quota_seconds is not None and a.quota_seconds <= 60
        await r.engine.handle(answered("1795535109.7", T0))
        await r.pbx.next(), await r.pbx.next()
        quota = a.quota_seconds
        r.clock.advance(quota - 30)
        assert await r.pbx.next() == ("warning", "PJSIP/201-1795535109.7", "D")
        r.clock.advance(20)
        assert await r.pbx.next() == ("warning", "PJSIP/201-1795535109.7", "D")
        r.clock.advance(10)
        await r.engine.handle(HungUp("1795535109.7", T0 + quota))  # Asterisk cut it at its deadline
        billable, charged, _ = await settled(r, a.call_id)
        assert billable == quota and (await r.ledger.account("acme")).balance == SHORT - charged
        assert r.pbx.actions.empty()


async def test_a_top_up_during_the_warning_moves_the_deadline_and_stops_the_warnings() -> None:
    async with rig(balance=SHORT) as r:
        a = await r.engine.authorize(request())
        await r.engine.handle(answered("1795535109.7", T0))
        await r.pbx.next(), await r.pbx.next()
        assert a.quota_seconds is not None
        r.clock.advance(a.quota_seconds - 30)
        assert (await r.pbx.next())[0] == "warning"
        await r.ledger.topup("acme", 20 * EUR, "card")
        r.clock.advance(20)  # the second warning's moment: renewed instead
        kind, _, seconds = await r.pbx.next()
        assert kind == "timeout" and seconds == 10 + 60
        assert (await r.pbx.next())[0] == "timeout"  # the other leg
        await r.engine.handle(HungUp("1795535109.7", r.clock.now()))
        assert r.pbx.actions.empty()


async def test_an_unanswered_call_costs_nothing_and_releases_its_reservation() -> None:
    async with rig() as r:
        a = await r.engine.authorize(request())
        assert (await r.ledger.account("acme")).reserved > 0
        r.clock.advance(20)
        await r.engine.handle(HungUp("1795535109.7", r.clock.now()))
        acc = await r.ledger.account("acme")
        assert (acc.balance, acc.reserved) == (10 * EUR, 0) and await r.ledger.activity("acme") == []
        assert a.call_id not in r.engine.calls and r.pbx.actions.empty()


async def test_events_of_other_channels_change_nothing() -> None:
    async with rig() as r:
        a = await r.engine.authorize(request())
        await r.engine.handle(answered("9.9", T0))
        await r.engine.handle(HungUp("9.9", T0))
        assert r.engine.calls[a.call_id].answered_at is None and r.pbx.actions.empty()


async def test_with_the_pbx_link_down_only_free_calls_go_through() -> None:
    async with rig() as r:
        r.pbx.connected = False
        assert (await r.engine.authorize(request())).reason is Reason.ENGINE_ERROR
        assert (await r.engine.authorize(request("0612345678"))).reason is Reason.INCLUDED
        assert (await r.engine.authorize(request("112"))).reason is Reason.EMERGENCY
        assert await r.ledger.reservations() == []


async def test_after_a_restart_a_call_that_ended_meanwhile_is_settled_up_to_its_deadline() -> None:
    async with rig() as r:
        a = await r.engine.authorize(request())
        await r.engine.handle(answered("1795535109.7", T0))
        await r.pbx.next(), await r.pbx.next()
        ledger, clock = r.ledger, r.clock
        for call in r.engine.calls.values():  # the engine dies: its followers with it
            assert call.follower is not None
            call.follower.cancel()
        clock.advance(300)
        fresh = Engine(TariffStore([OFFICE_FR]), ledger, clock, r.engine.settings, FakePbx())
        assert await fresh.reconcile() == (1, 0)
        billable, _, estimated = await settled(r, a.call_id)
        assert (billable, estimated) == (60, True) and await ledger.reservations() == []


def _cdr_row(uid: str, answer: float | None, end: float, dst: str, disposition: str) -> str:
    """A line of the CDR file as cdr_custom writes it (asterisk_conf/cdr_custom.conf)."""
    billsec = int(end - answer) if answer is not None else 0
    return format_row(CdrRecord(uid, answer, end, billsec, disposition, dst))


@pytest.mark.parametrize("asterisk_wrote", ["a record without a called channel", "nothing", "the dial's records"])
async def test_after_a_restart_a_call_that_never_dialed_is_released_by_its_cdr_record(
    tmp_path: Path, asterisk_wrote: str
) -> None:
    """The engine died after its reservation was written and before it answered: the dialplan hung
    the call up without dialing, and the restart found the money held for a call it never saw
    answered. It billed the whole first quota, estimated. Asterisk's CDR file says more: a caller
    that dialed always has a record naming the called channel (even busy or unanswered; after a
    failed Dial, another without one, as the recorded transcripts show), so a caller whose only
    records name none never dialed, and is released. With no record at all (cdr.conf's default
    `unanswered = no` writes none for such a call) nothing is known: billed as before."""
    uid, cdr_file = "1795535109.7", tmp_path / "rating-engine.csv"
    async with rig() as r:
        a = await r.engine.authorize(request(uid=uid))
        lines = {
            "a record without a called channel": [_cdr_row(uid, None, T0 + 1, "", "NO ANSWER")],
            "nothing": [],
            "the dial's records": [  # answered after 4 s, talked 42 s; a record without one on each side
                _cdr_row(uid, None, T0 + 1, "", "NO ANSWER"),
                _cdr_row(uid, T0 + 4, T0 + 46, "PJSIP/trunk-00000002", "ANSWERED"),
                _cdr_row(uid, None, T0 + 46, "", "NO ANSWER"),
            ],
        }[asterisk_wrote]
        cdr_file.write_text("".join(lines))
        r.clock.advance(300)  # the engine is away; Asterisk has long ended the call
        fresh = Engine(TariffStore([OFFICE_FR]), r.ledger, r.clock, r.engine.settings, FakePbx())
        fresh.cdr_records = CdrRecords(cdr_file)
        assert await fresh.reconcile() == (1, 0)
        assert await r.ledger.reservations() == [] and await r.ledger.check() == []
        if asterisk_wrote == "a record without a called channel":
            assert await r.ledger.activity("acme") == [] and fresh.stats.released == 1
            assert (await r.ledger.account("acme")).balance == 10 * EUR
        else:
            billable, _, estimated = await settled(r, a.call_id)
            assert (billable, estimated) == ((60, True) if asterisk_wrote == "nothing" else (42, False))


async def _failures(r: Rig, n: int) -> None:
    """Wait until the follower has failed `n` times in all (it then sleeps on the clock)."""
    for _ in range(1000):
        if r.engine.stats.renew_failures >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{r.engine.stats.renew_failures} renewal failures, not {n}")


@pytest.mark.parametrize("back_after", [3, None])
async def test_a_renewal_the_database_cannot_take_is_tried_each_second_and_the_deadline_stands(
    back_after: int | None,
) -> None:
    async with rig(warning_seconds=0, final_warning_seconds=0) as r:
        a = await r.engine.authorize(request())
        await r.engine.handle(answered("1795535109.7", T0))
        await r.pbx.next(), await r.pbx.next()  # the deadline: T0 + 60
        read = r.ledger.caller
        away = [back_after if back_after is not None else 10**9]

        async def caller(account_id: str, ext: str) -> object:
            if away[0] > 0:
                away[0] -= 1
                raise ConnectionResetError("the database is away")
            return await read(account_id, ext)

        r.ledger.caller = caller  # type: ignore[method-assign,assignment]
        r.clock.advance(50)  # renew_margin 10 s before the deadline: the first try fails
        tries = back_after if back_after is not None else 9  # each second, until a second before it
        for n in range(1, tries):
            await _failures(r, n)
            assert r.pbx.actions.empty()  # nothing moved, nothing cut: the deadline in Asterisk stands
            r.clock.advance(1)
        await _failures(r, tries)
        if back_after is None:
            r.clock.advance(1)
            for _ in range(100):
                await asyncio.sleep(0)
            assert r.engine.stats.renew_failures == 9 and r.pbx.actions.empty()  # given up: no more tries
            await r.engine.handle(HungUp("1795535109.7", T0 + 60))  # Asterisk cut it at its deadline
            assert (await settled(r, a.call_id))[0] == 60
            return
        r.clock.advance(1)  # the database is back: renewed, the deadline moved on both legs
        assert await r.pbx.next() == ("timeout", "PJSIP/201-1795535109.7", 120 - 53)
        assert (await r.pbx.next())[0::2] == ("timeout", 67)
        r.clock.advance(17)
        await r.engine.handle(HungUp("1795535109.7", T0 + 70))
        assert (await settled(r, a.call_id))[0] == 70 and r.engine.stats.extended == 1
        assert await r.ledger.check() == []


@pytest.mark.parametrize("behaviour", ["ok", "hang"])
async def test_a_top_up_a_settle_asks_for_is_paid_aside_and_no_call_waits_for_it(behaviour: str) -> None:
    low = AccountSettings("office-fr", "EUR", threshold=9 * EUR, on_low=OnLow.TOPUP, topup_amount=20 * EUR)
    async with rig(account=low) as r:
        provider = ScriptedProvider(behaviour)
        runner = TopupRunner(r.ledger, provider, timeout=0.5, retry_delays=())
        r.engine.on_topup = runner.start
        a = await r.engine.authorize(request())
        await r.engine.handle(answered("1795535109.7", T0))
        await r.pbx.next(), await r.pbx.next()
        r.clock.advance(100)  # renewed once at 30 s before the deadline
        await r.pbx.next(), await r.pbx.next()
        await r.engine.handle(HungUp("1795535109.7", T0 + 100))  # 1.45 EUR: the balance falls below 9
        _, charged, _ = await settled(r, a.call_id)
        assert len(provider.charges) <= 1 and r.engine.stats.low_balances == 1
        b = await asyncio.wait_for(r.engine.authorize(request(uid="1795535109.8")), 1)  # never waits on a payment
        assert b.reason is Reason.CHARGED
        await runner.drain()
        [(_, amount, _)] = provider.charges
        acc = await r.ledger.account("acme")
        assert acc.balance == 10 * EUR - charged + (amount if behaviour == "ok" else 0)
        assert not acc.topup_failed  # a provider that never answers leaves the top-up pending, not failed
        assert (acc.topup_pending is None) is (behaviour == "ok")


async def test_an_extension_s_own_rules_are_read_with_its_account() -> None:
    """What an extension may call is its row's, read with the account at each authorization: a
    reservation alone would let it call anything its account can pay for."""
    from rating_engine.contract import DestinationClass
    from rating_engine.ledger import ExtensionSettings

    async with rig() as r:
        await r.ledger.set_extension("acme", "201", ExtensionSettings(classes=frozenset({DestinationClass.NATIONAL})))
        premium = await r.engine.authorize(request(PREMIUM, "1.1", "201"))
        abroad = await r.engine.authorize(request("00447400123456", "1.2", "201"))  # a UK mobile
        refused = (Status.DENY, Reason.EXTENSION_NOT_ALLOWED)
        assert (premium.status, premium.reason) == (abroad.status, abroad.reason) == refused
        assert (await r.ledger.account("acme")).reserved == 0
        national = await r.engine.authorize(request("0123456789", "1.3", "201"))
        other = await r.engine.authorize(request(PREMIUM, "1.4", "202"))  # no row of its own: every class
        assert (national.status, other.status, other.reason) == (Status.ALLOW, Status.ALLOW, Reason.CHARGED)


class CountingReads:
    """Counts the authorizations' reads of an account and an extension (`Ledger.caller`)."""

    def __init__(self, ledger: Ledger) -> None:
        self.reads = 0
        self._read = ledger.caller

        async def caller(account_id: str, ext: str) -> object:
            self.reads += 1
            return await self._read(account_id, ext)

        ledger.caller = caller  # type: ignore[assignment,method-assign]


async def test_a_chargeable_call_of_a_known_extension_takes_one_trip_and_sees_every_change() -> None:
    """The second call of an extension is decided with what the first read and reserved in one trip;
    an administrator's change of the rules or of the account's settings is seen by the very next
    call, and another engine's spending by its size."""
    from rating_engine.contract import DestinationClass
    from rating_engine.ledger import ExtensionSettings

    async with rig() as r:
        counting = CountingReads(r.ledger)
        first = await r.engine.authorize(request(PREMIUM, "1.1"))
        second = await r.engine.authorize(request(PREMIUM, "1.2"))
        assert (first.reason, second.reason, counting.reads) == (Reason.CHARGED, Reason.CHARGED, 1)

        await r.ledger.set_extension("acme", "201", ExtensionSettings(classes=frozenset({DestinationClass.NATIONAL})))
        refused = await r.engine.authorize(request(PREMIUM, "1.3"))
        assert (refused.status, refused.reason, counting.reads) == (Status.DENY, Reason.EXTENSION_NOT_ALLOWED, 2)
        await r.ledger.set_extension("acme", "201", ExtensionSettings())
        assert (await r.engine.authorize(request(PREMIUM, "1.4"))).reason is Reason.CHARGED
        assert counting.reads == 3

        account = await r.ledger.account("acme")
        await r.ledger.update_settings("acme", replace(account.settings, blocked_prefixes=("33899",)))
        blocked = await r.engine.authorize(request(PREMIUM, "1.5"))
        assert (blocked.status, blocked.reason) == (Status.DENY, Reason.BLOCKED_DESTINATION)
        await r.ledger.update_settings("acme", account.settings)

        # Another engine takes all but 0.50 EUR: the next call is granted what is left, as if it had read first.
        left = (await r.ledger.account("acme")).available
        assert (await r.ledger.reserve("elsewhere", "acme", "299", left - EUR // 2)).ok
        short = await r.engine.authorize(request(PREMIUM, "1.6"))
        held = {c.call_id: c.amount for c in await r.ledger.reservations()}
        assert short.reason is Reason.CHARGED and short.quota_seconds is not None and 0 < short.quota_seconds < 60
        price = r.engine.calls[short.call_id].fare.first
        granted = short.quota_seconds
        assert held[short.call_id] == cost(granted, price) <= EUR // 2 < cost(granted + 1, price)
        assert (await r.ledger.account("acme")).available >= 0
        assert await r.ledger.check() == []


async def test_a_retry_for_money_still_asks_for_the_settings_the_call_was_decided_with() -> None:
    """Money taken between the read and the reservation makes the engine read again and size the
    call on what is left; if the rules changed meanwhile too, it decides again instead of holding
    money for a call the new rules refuse."""
    from rating_engine.contract import DestinationClass
    from rating_engine.ledger import ExtensionSettings

    async with rig() as r:
        read = r.ledger.caller
        reads = 0

        async def caller(account_id: str, ext: str) -> object:
            nonlocal reads
            reads += 1
            if reads == 2:  # the retry's read: an administrator has just saved new rules
                national = ExtensionSettings(classes=frozenset({DestinationClass.NATIONAL}))
                await r.ledger.set_extension("acme", "201", national)
            found = await read(account_id, ext)
            if reads == 1:  # another engine takes all but 0.50 EUR before this one reserves
                left = (await r.ledger.account("acme")).available
                assert (await r.ledger.reserve("elsewhere", "acme", "299", left - EUR // 2)).ok
            return found

        r.ledger.caller = caller  # type: ignore[assignment,method-assign]
        refused = await r.engine.authorize(request(PREMIUM, "1.1"))
        assert (refused.status, refused.reason, reads) == (Status.DENY, Reason.EXTENSION_NOT_ALLOWED, 3)
        assert [c.call_id for c in await r.ledger.reservations()] == ["elsewhere"]


async def test_the_extensions_kept_for_one_trip_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """What is kept per extension stays bounded however many extensions call (each kept one is
    walked by the cyclic collector); one that was let go costs its next call a read, no more."""
    import rating_engine.engine as engine_module

    monkeypatch.setattr(engine_module, "CALLERS_KEPT", 50)
    async with rig(balance=1_000 * EUR) as r:
        counting = CountingReads(r.ledger)
        for i in range(120):
            a = await r.engine.authorize(request(PREMIUM, f"1.{i}", f"{300 + i}"))
            assert a.reason is Reason.CHARGED
            assert len(r.engine._callers) <= 50
        assert counting.reads == 120
        again = await r.engine.authorize(request(PREMIUM, "2.1", "419"))  # the last one, still kept
        assert again.reason is Reason.CHARGED and counting.reads == 120


@pytest.mark.parametrize("hung_up_during", ["the read", "the reservation"])
async def test_a_channel_that_hangs_up_while_it_is_authorized_leaves_no_money_held(hung_up_during: str) -> None:
    """The caller hangs up while the engine is still deciding (the ledger is slow, or the caller
    quick): Asterisk's Hangup arrives before the call is the engine's to follow, and was dropped
    as the event of an unknown channel. The reservation made after it was then followed by
    nothing: the money stayed held until a reconciliation billed the whole first quota, estimated.
    Now the Hangup is noted, and the reservation goes back as soon as it is made."""
    async with rig() as r:
        gate = asyncio.Event()
        slow = "caller" if hung_up_during == "the read" else "reserve"
        real = getattr(r.ledger, slow)

        async def held_up(*args: object, **kw: object) -> object:
            await gate.wait()
            return await real(*args, **kw)

        setattr(r.ledger, slow, held_up)
        deciding = asyncio.create_task(r.engine.authorize(request()))
        await asyncio.sleep(0.05)
        await r.engine.handle(HungUp("1795535109.7", T0 + 1))
        gate.set()
        answer = await deciding
        assert (answer.status, answer.reason) == (Status.DENY, Reason.ENGINE_ERROR)  # to a channel that is gone
        assert r.engine.calls == {} and r.engine.stats.released == 1
        assert await r.ledger.reservations() == [] and (await r.ledger.account("acme")).reserved == 0
        assert await r.ledger.activity("acme") == [] and await r.ledger.check() == []
        setattr(r.ledger, slow, real)
        later = await r.engine.authorize(request(uid="1795535109.8"))  # the next call is not affected
        assert later.reason is Reason.CHARGED and later.call_id in r.engine.calls


async def test_an_account_on_a_plan_no_file_defines_is_refused_with_one_line_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plan removed from the config (or dropped by a reload) while accounts are still on it:
    nothing is known to be free or priced. Emergency calls go through; every other is refused
    (engine_error), said once a minute per plan, not as a traceback at every call."""
    async with rig(account=AccountSettings("office-de", "EUR")) as r:
        with caplog.at_level("ERROR", "rating_engine.engine"):
            a = await r.engine.authorize(request(PREMIUM, uid="1795535109.1"))
            b = await r.engine.authorize(request("0612345678", uid="1795535109.2"))  # included in office-fr
            e = await r.engine.authorize(request("112", uid="1795535109.3"))
            r.clock.advance(61)
            await r.engine.authorize(request(PREMIUM, uid="1795535109.4"))
        assert (a.status, a.reason, b.status, b.reason) == (Status.DENY, Reason.ENGINE_ERROR) * 2
        assert (e.status, e.reason, e.e164) == (Status.ALLOW, Reason.EMERGENCY, "112")
        said = [x for x in caplog.records if x.name == "rating_engine.engine"]
        assert [(x.getMessage(), x.plan, x.loaded) for x in said] == [  # type: ignore[attr-defined]
            ("an account's plan is not loaded: its chargeable and included calls are refused", "office-de", "office-fr")
        ] * 2
        assert not [x for x in caplog.records if x.exc_info]
        assert (await r.ledger.account("acme")).reserved == 0 and r.engine.calls == {}
