"""End to end over real sockets: the engine service against the Asterisk simulator, time sped up."""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rating_engine.asterisk.simulator import AsteriskSimulator, CallResult, Scenario
from rating_engine.clock import Clock
from rating_engine.config import (
    AgiSection,
    AmiSection,
    Config,
    EngineSection,
    LedgerSection,
    MetricsSection,
    TariffsSection,
)
from rating_engine.ledger import AccountSettings, ExtensionSettings, Ledger, make_ledger
from rating_engine.rating.catalog import load_tariffs
from rating_engine.rating.deck import RateRow
from rating_engine.rating.price import cost
from rating_engine.service import Service

from .conftest import OFFICE_FR
from .helpers import EUR

SPEED = 25.0


def _premium_0899() -> RateRow:
    row = load_tariffs([OFFICE_FR]).tables[OFFICE_FR.parent.joinpath("world.csv").resolve()].lookup("33899123456", 0)
    assert row is not None
    return row


PREMIUM_0899 = _premium_0899()


@dataclass
class World:
    sim: AsteriskSimulator
    clock: Clock
    config: Config
    ledger_url: str
    service: Service | None = None
    ended: dict[str, asyncio.Event] = field(default_factory=dict)
    """Call id → set when the engine has settled or released that call (awaited, not polled)."""

    def _observe(self, what: str, fields: dict[str, Any]) -> None:
        if what in ("settled", "released"):
            self.ended_event(fields["call"].call_id).set()

    def ended_event(self, call_id: str) -> asyncio.Event:
        return self.ended.setdefault(call_id, asyncio.Event())

    async def start_engine(self) -> Service:
        service = Service(self.config, clock=self.clock, ami_secret="simulator")
        service.engine.observer = self._observe
        await service.start()
        self.sim.agi_port = service.agi_port
        assert service.ami is not None and await service.ami.wait_logged_in(5)
        await asyncio.sleep(0.05)  # let the login's reconciliation run
        self.service = service
        return service

    async def kill_engine(self) -> None:
        """As SIGKILL would: no drain, nothing flushed beyond what was committed."""
        s = self.service
        assert s is not None
        for call in s.engine.calls.values():
            if call.follower:
                call.follower.cancel()
        s.engine.calls.clear()
        assert s.ami is not None
        await s.ami.close()
        await s.agi.close()
        await s.metrics.close()
        await s.ledger.close()
        assert s.engine.spool is not None
        s.engine.spool.let_go()  # as the kernel does for a process that dies
        self.service = None

    async def ledger(self) -> Ledger:
        ledger = make_ledger(self.ledger_url)
        await ledger.open()
        return ledger


@asynccontextmanager
async def world(
    tmp_path: Path,
    balance: int = 10 * EUR,
    threshold: int = 0,
    quota: int = 60,
    cdr: bool = False,
    pbx_ahead: float = 0.0,
    speed: float = SPEED,
) -> AsyncIterator[World]:
    """`pbx_ahead`: seconds the simulated Asterisk's clock is ahead of the engine's (its events'
    Timestamps, and its deadlines, on its own clock). `speed` 1: the engine on the wall clock."""
    clock = Clock(speed=speed)
    cdr_file = tmp_path / "rating-engine.csv" if cdr else None
    pbx_clock = Clock(speed=speed, start=clock.now() + pbx_ahead) if pbx_ahead else clock
    sim = AsteriskSimulator(pbx_clock, agi_port=0, cdr_file=cdr_file)
    port = await sim.start()
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    ledger = make_ledger(url)
    await ledger.open()
    await ledger.create_account("acme", AccountSettings("office-fr", "EUR", threshold=threshold))
    if balance:
        await ledger.topup("acme", balance, "opening")
    await ledger.set_extension("acme", "204", ExtensionSettings(chargeable=False))
    await ledger.close()
    config = Config(
        engine=EngineSection(
            quota_seconds=quota,
            renew_margin=10,
            ring_timeout=30,
            cdr_file=str(cdr_file) if cdr_file else "",
        ),
        agi=AgiSection(bind="127.0.0.1:0", account="fixed:acme"),  # a free port: never one in use
        ami=AmiSection(port=port, ping_interval=1.0),
        ledger=LedgerSection(url=url),
        tariffs=TariffsSection(plans=(str(OFFICE_FR),)),
        metrics=MetricsSection(bind="127.0.0.1:0"),
    )
    w = World(sim, clock, config, url)
    await w.start_engine()
    try:
        yield w
    finally:
        if w.service is not None:
            await w.service.stop(grace=0)
        await sim.close()


async def settled(w: World, call: CallResult) -> tuple[int, int]:
    """(billable seconds, cost) the ledger recorded for a call, after it settles."""
    assert w.service is not None
    call_id = call.variables["RATING_CALLID"]
    try:
        await asyncio.wait_for(w.ended_event(call_id).wait(), 5)
    except TimeoutError:
        raise AssertionError(f"call {call_id} never settled") from None
    [row] = [r for r in await w.service.ledger.activity("acme") if r.call_id == call_id]
    return row.billable_seconds, row.cost


async def test_answered_call_is_billed_exactly_its_billable_seconds(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        call = await w.sim.place_call(Scenario("0899123456", talk=95))
        assert (call.status, call.reason, call.dial_status) == ("ALLOW", "charged", "ANSWER")
        assert call.variables["RATING_E164"] == "+33899123456" and call.variables["RATING_GUARDSEC"] == "90"
        billable, charged = await settled(w, call)
        assert abs(billable - call.billable) <= 1
        assert charged == cost(billable, PREMIUM_0899.price)
        assert len(call.timeouts_set) >= 2, "the deadline was set at answer and moved forward"
        assert await w.service.ledger.reservations() == []  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "scenario",
    [
        Scenario("0899123456", outcome="busy"),
        Scenario("0899123456", outcome="noanswer"),
        Scenario("0899123456", outcome="cancel", ring=3),
    ],
)
async def test_unanswered_calls_cost_nothing_and_release_their_reservation(tmp_path: Path, scenario: Scenario) -> None:
    async with world(tmp_path) as w:
        call = await w.sim.place_call(scenario)
        assert call.status == "ALLOW" and call.answered_at is None
        await asyncio.sleep(0.1)
        ledger = w.service.ledger  # type: ignore[union-attr]
        assert await ledger.activity("acme") == [] and await ledger.reservations() == []
        assert (await ledger.account("acme")).balance == 10 * EUR


async def test_caller_hanging_up_first_is_billed_to_its_hangup(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        call = await w.sim.place_call(Scenario("+1 212 555 0100", talk=47, hangup_by="caller"))
        billable, _ = await settled(w, call)
        assert abs(billable - 47) <= 1


@pytest.mark.parametrize(
    ("ext", "dialed", "balance", "reason"),
    [
        ("201", "0899123456", 0, "insufficient_funds"),
        ("204", "+1 212 555 0100", 10 * EUR, "extension_not_allowed"),
        ("201", "0123", 10 * EUR, "invalid_number"),
    ],
)
async def test_denied_calls_never_reach_the_trunk(
    tmp_path: Path, ext: str, dialed: str, balance: int, reason: str
) -> None:
    async with world(tmp_path, balance=balance) as w:
        call = await w.sim.place_call(Scenario(dialed, ext))
        assert (call.status, call.reason, call.dial_status) == ("DENY", reason, "")
        assert await w.service.ledger.reservations() == []  # type: ignore[union-attr]


async def test_included_and_emergency_calls_have_no_deadline_and_no_charge(tmp_path: Path) -> None:
    async with world(tmp_path, balance=0) as w:
        for dialed, reason in (("0612345678", "included"), ("112", "emergency")):
            call = await w.sim.place_call(Scenario(dialed, "204", talk=20))
            assert (call.status, call.reason, call.variables["RATING_GUARDSEC"]) == ("ALLOW", reason, "")
            assert call.timeouts_set == [] and not call.cut_by_deadline


async def test_a_call_the_account_cannot_pay_ends_at_its_paid_deadline(tmp_path: Path) -> None:
    async with world(tmp_path, balance=EUR) as w:  # 1 EUR buys 66 s of 0899
        call = await w.sim.place_call(Scenario("0899123456", talk=600))
        assert call.cut_by_deadline
        billable, charged = await settled(w, call)
        assert billable <= 66 and charged <= EUR
        acc = await w.service.ledger.account("acme")  # type: ignore[union-attr]
        assert acc.balance >= 0 and acc.balance == EUR - charged


async def test_a_pbx_clock_an_hour_ahead_still_ends_the_call_at_its_paid_deadline(tmp_path: Path) -> None:
    """Asterisk's events carry its own time; an hour ahead of the engine's clock, the deadline the
    engine sets at the answer and moves at each renewal is still the paid time, not an hour more."""
    async with world(tmp_path, balance=EUR, pbx_ahead=3600) as w:  # 1 EUR buys 66 s of 0899
        call = await w.sim.place_call(Scenario("0899123456", talk=300))
        assert call.cut_by_deadline
        billable, charged = await settled(w, call)
        assert 60 <= billable <= 66 and charged <= EUR
        acc = await w.service.ledger.account("acme")  # type: ignore[union-attr]
        assert acc.balance >= 0 and acc.balance == EUR - charged
        assert w.service is not None
        metrics = w.service.metrics.render()
        lead = float(re.search(r"^rating_pbx_clock_lead_seconds (\S+)$", metrics, re.M)[1])  # type: ignore[index]
        assert 3599 < lead < 3601 and "rating_pbx_events_late 0" in metrics


async def test_a_pbx_clock_an_hour_behind_is_read_from_its_ping_and_its_calls_talk_their_paid_time(
    tmp_path: Path,
) -> None:
    """Behind, the events alone look like events handled an hour late; the Ping's reply, which carries
    Asterisk's time too, tells which. Without it every charged call was cut a second after its answer."""
    async with world(tmp_path, pbx_ahead=-3600) as w:
        assert w.service is not None
        times = w.service.engine.event_times
        assert -3600 <= times.lead < -3599  # read from the Ping sent at the login
        call = await w.sim.place_call(Scenario("0899123456", talk=95))
        assert call.dial_status == "ANSWER" and not call.cut_by_deadline
        billable, charged = await settled(w, call)
        assert abs(billable - call.billable) <= 1 and billable >= 94
        assert charged == cost(billable, PREMIUM_0899.price) and not times.behind


async def test_an_engine_started_before_the_boot_s_clock_step_takes_it_in_between_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system clock steps an hour forward after the engine started (NTP at boot), Asterisk on
    the same host with it. A call live then is billed its time and keeps the old clock; once no
    call is live the engine's clock takes the step in, and the activity is on the wall's again."""
    real = time.time
    async with world(tmp_path, speed=1, pbx_ahead=3600) as w:
        assert w.service is not None
        service = w.service
        monkeypatch.setattr(time, "time", lambda: real() + 3600)
        first = asyncio.create_task(w.sim.place_call(Scenario("0899123456", ring=0.2, talk=2)))
        for _ in range(500):
            if service.engine.calls:
                break
            await asyncio.sleep(0.01)
        assert service.engine.calls, "the first call never came up"
        service._watch_clock_step()  # the flush loop's, every 5 s
        assert service.clock_step == pytest.approx(3600, abs=1) and abs(w.clock.now() - real()) < 1
        call = await first
        billable, _ = await settled(w, call)
        assert billable == call.billable == 2 and not call.cut_by_deadline
        service._watch_clock_step()
        assert service.clock_step == 0.0 and service.clock_steps_followed == 1
        assert abs(w.clock.now() - time.time()) < 1
        await asyncio.sleep(0.1)  # the Ping sent when the clock moved
        assert service.engine.event_times.lead == 0.0 and not service.engine.event_times.behind
        second = await w.sim.place_call(Scenario("0899123456", ring=0.2, talk=2))
        billable, _ = await settled(w, second)
        assert billable == second.billable == 2 and not second.cut_by_deadline
        rows = {r.call_id: r for r in await service.ledger.activity("acme")}
        before, after = rows[call.variables["RATING_CALLID"]], rows[second.variables["RATING_CALLID"]]
        assert abs(before.started_at - real()) < 30  # the engine's clock as it was
        assert abs(after.started_at - time.time()) < 30  # the wall's again


async def test_a_hangup_action_mid_call_is_billed_to_that_moment(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        task = asyncio.create_task(w.sim.place_call(Scenario("0899123456", talk=300)))
        await w.clock.sleep(40)
        [caller] = [c for c in w.sim.channels.values() if c.name.startswith("PJSIP/201")]
        assert w.service and w.service.ami
        reply = await w.service.ami.action({"Action": "Hangup", "Channel": caller.name, "Cause": "16"})
        assert reply is not None and reply.get("Response") == "Success"
        call = await task
        assert call.hung_up_by_action
        billable, _ = await settled(w, call)
        assert 30 <= billable <= 45


async def test_twenty_concurrent_calls_on_a_small_balance_never_go_below_the_floor(tmp_path: Path) -> None:
    async with world(tmp_path, balance=5 * EUR, threshold=EUR) as w:
        calls = await asyncio.gather(*(w.sim.place_call(Scenario("0899123456", f"2{i:02d}", talk=300, ring=1 + i % 3))
                                       for i in range(20)))  # fmt: skip
        await asyncio.sleep(0.3)
        ledger = w.service.ledger  # type: ignore[union-attr]
        acc = await ledger.account("acme")
        rows = {r.call_id: r for r in await ledger.activity("acme")}
        assert acc.balance >= acc.floor == EUR and acc.reserved == 0
        allowed = [c for c in calls if c.status == "ALLOW"]
        assert allowed and any(c.reason in ("insufficient_funds", "account_blocked") for c in calls)
        for c in allowed:
            row = rows[c.variables["RATING_CALLID"]]
            assert row.cost == cost(row.billable_seconds, PREMIUM_0899.price) and not row.overdraft
            assert c.cut_by_deadline, "every call outlived the money and ended at its deadline"
        assert sum(r.cost for r in rows.values()) == 5 * EUR - acc.balance
        assert await ledger.check() == []


async def test_engine_restart_mid_call_settles_correctly(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        task = asyncio.create_task(w.sim.place_call(Scenario("0899123456", talk=150)))
        await w.clock.sleep(30)
        await w.kill_engine()
        await w.clock.sleep(10)
        await w.start_engine()  # reconciles: the channel is up, so the call is followed again
        call = await task
        billable, charged = await settled(w, call)
        assert abs(billable - call.billable) <= 1 and charged == cost(billable, PREMIUM_0899.price)
        assert not call.cut_by_deadline, "the new engine renewed the quota"


async def test_a_call_that_ends_while_the_engine_is_down_is_settled_at_its_deadline(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        task = asyncio.create_task(w.sim.place_call(Scenario("0899123456", talk=40)))
        await w.clock.sleep(20)
        await w.kill_engine()
        call = await task
        await w.start_engine()
        ledger = w.service.ledger  # type: ignore[union-attr]
        [row] = await ledger.activity("acme")
        assert row.call_id == call.variables["RATING_CALLID"] and row.estimated
        assert call.billable <= row.billable_seconds <= 60  # up to the granted deadline, never beyond
        assert await ledger.reservations() == [] and await ledger.check() == []


async def test_an_ami_disconnect_loses_no_call(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        task = asyncio.create_task(w.sim.place_call(Scenario("0899123456", talk=90)))
        lost = asyncio.create_task(w.sim.place_call(Scenario("0899123456", "202", talk=45)))
        await w.clock.sleep(35)
        await w.sim.drop_ami_clients()  # the second call's Hangup falls in the gap
        call, gone = await asyncio.gather(task, lost)
        assert w.service and w.service.ami and w.service.ami.logins >= 2
        assert len(w.service.ami._tasks) <= 4  # its pump, its watchdog, the last login's: not every login's
        billable, _ = await settled(w, call)
        assert abs(billable - call.billable) <= 1
        gone_billable, _ = await settled(w, gone)
        assert gone.billable <= gone_billable <= 60
        assert await w.service.ledger.reservations() == []


async def test_metrics_are_served_in_prometheus_text_format(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.sim.place_call(Scenario("0612345678", talk=5))
        assert w.service is not None
        await asyncio.sleep(0.25)  # the loop watch's timers, every 0.1 s
        gc.collect()  # a pass of the collector, which the service times
        reader, writer = await asyncio.open_connection("127.0.0.1", w.service.metrics_port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        body = (await reader.read()).decode()
        assert body.startswith("HTTP/1.1 200 OK")
        assert 'rating_authorizations_total{outcome="allow_included"} 1' in body
        assert "rating_ami_connected 1" in body and "rating_authorize_seconds_count 1" in body
        assert "# TYPE rating_event_loop_lag_seconds histogram" in body  # where a slow answer waited
        assert not re.search(r"^rating_event_loop_lag_seconds_count 0$", body, re.M), "the loop watch is not running"
        assert "# TYPE rating_ledger_batch_seconds histogram" in body
        assert not re.search(r"^rating_collector_pause_seconds_count 0$", body, re.M), "the collector is not timed"


async def test_a_caller_who_cannot_pay_more_hears_two_warnings_before_the_cut(tmp_path: Path) -> None:
    async with world(tmp_path, balance=EUR) as w:  # 66 s of 0899: one quota of 60, then 6 more
        call = await w.sim.place_call(Scenario("0899123456", talk=600))
        assert call.cut_by_deadline and call.ended_at is not None and len(call.warnings) == 2
        first, final = (call.ended_at - t for t in call.warnings)
        assert abs(first - 30) <= 2 and abs(final - 10) <= 2  # engine.warning_seconds, final_warning_seconds
        assert w.service is not None and w.service.engine.stats.warnings == 2
        billable, charged = await settled(w, call)
        assert billable <= 66 and charged <= EUR


async def test_a_top_up_during_the_warning_moves_the_deadline_and_stops_the_warnings(tmp_path: Path) -> None:
    async with world(tmp_path, balance=EUR) as w:
        task = asyncio.create_task(w.sim.place_call(Scenario("0899123456", talk=150)))
        for _ in range(400):
            heard = [ch.result for ch in w.sim.channels.values() if ch.result is not None and ch.result.warnings]
            if heard:
                break
            await asyncio.sleep(0.01)
        assert heard, "the first warning never came"
        assert w.service is not None
        await w.service.ledger.topup("acme", 10 * EUR, "bank-1")
        call = await task
        assert len(call.warnings) == 1 and not call.cut_by_deadline
        billable, _ = await settled(w, call)
        assert abs(billable - 150) <= 1


async def test_the_warning_also_comes_before_an_extension_cap_cuts_the_call(tmp_path: Path) -> None:
    async with world(tmp_path, balance=10 * EUR) as w:
        await w.service.ledger.set_extension("acme", "201", ExtensionSettings(daily_cap=EUR))  # type: ignore[union-attr]
        call = await w.sim.place_call(Scenario("0899123456", talk=600))
        assert call.cut_by_deadline and len(call.warnings) == 2


async def test_free_calls_are_never_warned(tmp_path: Path) -> None:
    async with world(tmp_path, balance=0) as w:
        call = await w.sim.place_call(Scenario("0612345678", talk=100))
        assert call.warnings == [] and not call.cut_by_deadline


@pytest.mark.parametrize("cdr", [True, False])
async def test_an_engine_killed_while_the_call_rings_gives_no_free_talk(tmp_path: Path, cdr: bool) -> None:
    """Checked on a real Asterisk: before U(), a call answered after the engine died talked until the
    caller's guard (ring + quota) and was then released as unanswered. Now the called channel's paid
    time starts at the answer, and the restarted engine bills the call from Asterisk's CDR record."""
    async with world(tmp_path, cdr=cdr) as w:
        task = asyncio.create_task(w.sim.place_call(Scenario("0899123456", talk=300, ring=8)))
        await w.clock.sleep(3)
        await w.kill_engine()  # while it rings
        call = await task
        assert call.answered_at is not None and call.ended_at is not None and call.cut_by_deadline
        talked = call.ended_at - call.answered_at
        assert abs(talked - 60) <= 1, "the quota reserved for it, from the answer: not ring + quota"
        await w.start_engine()
        ledger = w.service.ledger  # type: ignore[union-attr]
        [row] = await ledger.activity("acme")
        assert row.call_id == call.variables["RATING_CALLID"]
        assert row.estimated is not cdr
        assert row.billable_seconds == (call.billable if cdr else 60)
        assert row.cost == cost(row.billable_seconds, PREMIUM_0899.price) and not row.overdraft
        assert await ledger.reservations() == [] and await ledger.check() == []


async def test_a_busy_call_that_ends_while_the_engine_is_away_costs_nothing_with_a_cdr_record(tmp_path: Path) -> None:
    async with world(tmp_path, cdr=True) as w:
        task = asyncio.create_task(w.sim.place_call(Scenario("0899123456", outcome="busy", ring=6)))
        await w.clock.sleep(2)
        await w.kill_engine()
        await task
        await w.start_engine()
        ledger = w.service.ledger  # type: ignore[union-attr]
        assert await ledger.activity("acme") == [] and await ledger.reservations() == []
        assert (await ledger.account("acme")).balance == 10 * EUR


class _HangingProvider:
    """A payment provider that never answers (a dead gateway)."""

    def __init__(self) -> None:
        self.asked = 0

    async def charge(self, account_id: str, amount: int, idempotency_key: str) -> Any:
        self.asked += 1
        await asyncio.Event().wait()


async def test_a_payment_provider_that_hangs_never_delays_an_answer_in_the_dialplan(tmp_path: Path) -> None:
    import time
    from dataclasses import replace

    from rating_engine.ledger import OnLow

    async with world(tmp_path, balance=2 * EUR) as w:
        assert w.service is not None
        provider = _HangingProvider()
        w.service.topups.provider = provider
        w.service.topups.timeout, w.service.topups.retry_delays = 2.0, ()
        s = (await w.service.ledger.account("acme")).settings
        await w.service.ledger.update_settings(
            "acme", replace(s, on_low=OnLow.TOPUP, threshold=2 * EUR, topup_amount=10 * EUR)
        )
        first = await w.sim.place_call(Scenario("+1 212 555 0100", talk=30))
        await settled(w, first)  # below the threshold: an automatic top-up is asked of the dead provider
        await asyncio.sleep(0.05)
        assert provider.asked == 1
        for i in range(5):  # while it hangs, every call set-up is answered at once
            started = time.monotonic()
            call = await w.sim.place_call(Scenario("+1 212 555 0100", f"21{i}", outcome="busy"))
            assert call.variables["RATING_STATUS"] == "ALLOW", call.variables
            assert time.monotonic() - started < 1.0
        acc = await w.service.ledger.account("acme")
        assert acc.topup_pending is not None and not acc.topup_failed  # pending: asked again later, same key
