"""A real PostgreSQL restart under a running engine (`rating-engine run`, its simulated Asterisk):
the server of the test's own is stopped (`pg_ctl stop -m fast`: every connection cut) while a
charged call talks, and started again later.

While it is away: a new chargeable call is refused within `answer_timeout` with `engine_error`,
included and emergency calls go through, the talking call keeps its deadline (its renewals fail
and are retried, the deadline stands, Asterisk ends the call there) and its settlement is kept in
the spool. When the server is back: the spool is written once, the pool has reconnected by itself
(a new call is charged), and the metrics and logs say what happened."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from rating_engine.asterisk.simulator import AsteriskSimulator, Scenario
from rating_engine.clock import Clock
from rating_engine.ledger import AccountSettings
from rating_engine.ledger.postgres import PostgresLedger

from .engine_process import SECRET, Engine
from .pg_server import Server, private_postgres

PREMIUM = "0899123456"
ANSWER_TIMEOUT = 1.0


@pytest.fixture
def server() -> Iterator[Server]:
    with private_postgres() as s:
        yield s


async def test_a_postgresql_restart_under_a_running_engine(server: Server, tmp_path: object) -> None:
    ledger = PostgresLedger(server.url)
    async with ledger:
        await ledger.create_account("acme", AccountSettings("office-fr", "EUR"))
        await ledger.topup("acme", 20_000_000, "opening")
    clock = Clock()
    sim = AsteriskSimulator(clock, agi_port=0, secret=SECRET)
    engine = Engine(
        "pbx1", server.url, await sim.start(), tmp_path,  # type: ignore[arg-type]
        account="acme", extra=f"answer_timeout = {ANSWER_TIMEOUT}\n", metrics=True,
    )  # fmt: skip
    try:
        await engine.start()
        sim.agi_port = engine.agi_port
        talking = asyncio.create_task(sim.place_call(Scenario(PREMIUM, "201", ring=0.2, talk=40)))
        await asyncio.sleep(1.0)  # answered: its deadline is 10 s after the answer
        await asyncio.to_thread(server.stop)

        started = time.monotonic()
        refused = await sim.place_call(Scenario(PREMIUM, "202", ring=0.2, talk=1))
        assert time.monotonic() - started < ANSWER_TIMEOUT + 0.5  # no call hangs in the dialplan
        assert (refused.status, refused.reason) == ("DENY", "engine_error")
        included = await sim.place_call(Scenario("0612345678", "201", ring=0.2, talk=0.5))
        emergency = await sim.place_call(Scenario("112", "299", ring=0.2, talk=0.5))
        assert [(c.status, c.reason) for c in (included, emergency)] == [("ALLOW", "included"), ("ALLOW", "emergency")]

        cut = await asyncio.wait_for(talking, 20)  # its renewals fail: Asterisk ends it at its deadline
        assert cut.reason == "charged" and cut.cut_by_deadline and 9 <= cut.billable <= 11
        assert await engine.says("renewal failed; the deadline in Asterisk stands")
        [spooled] = await engine.says("ledger unreachable: the call's settlement is kept in the spool")
        assert spooled["call_id"] == cut.variables["RATING_CALLID"]
        down = await engine.metrics()
        assert down["rating_spool_waiting"] == 1 and down["rating_renew_failures_total"] >= 1

        await asyncio.to_thread(server.start)
        [written] = await engine.says("spooled settlements written", timeout=20)  # tried every 5 s
        assert (written["written"], written["left"]) == (1, 0)
        after = await sim.place_call(Scenario(PREMIUM, "203", ring=0.2, talk=1))
        assert after.reason == "charged"  # the pool has reconnected by itself
        up = await engine.metrics()
        assert up["rating_spool_waiting"] == 0 and up["rating_spool_written_total"] == 1
        assert up['rating_authorizations_total{outcome="allow_charged"}'] >= 2
        assert await engine.says("node held again", timeout=10)  # its node is its own again, checked every 5 s
        assert up["rating_node_conflicts_total"] == 0
        assert up["rating_late_reservations_total"] == 0  # a server that is gone takes nothing late
    finally:
        await engine.stop()
        await sim.close()
    ledger = PostgresLedger(server.url)
    async with ledger:
        rows = {r.call_id: r for r in await ledger.activity("acme")}
        assert set(rows) == {cut.variables["RATING_CALLID"], after.variables["RATING_CALLID"]}  # each once
        row = rows[cut.variables["RATING_CALLID"]]
        assert abs(row.billable_seconds - cut.billable) <= 1 and not row.estimated
        account = await ledger.account("acme")
        assert account.balance == 20_000_000 - sum(r.cost for r in rows.values()) and account.reserved == 0
        assert await ledger.reservations() == [] and await ledger.check() == []
