"""Several engine processes on one PBX, one FastAGI port (`reuse_port`), one PostgreSQL.

Each process follows the calls it authorized and no other: its own `node`, so that its start and
its reconnections reconcile its own reservations only. Two processes started as the same node
would both follow, renew and warn each other's calls; the second one refuses to start instead.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from rating_engine.asterisk.simulator import AsteriskSimulator, CallResult, Scenario
from rating_engine.clock import Clock
from rating_engine.ledger import AccountSettings
from rating_engine.ledger.postgres import PostgresLedger

from .engine_process import SECRET, Engine, free_port
from .ledgers import until_settled

PREMIUM = "0899123456"


async def _account(url: str, balance: int) -> None:
    ledger = PostgresLedger(url)
    async with ledger:
        await ledger.create_account("shared", AccountSettings("office-fr", "EUR"))
        await ledger.topup("shared", balance, "opening")


async def test_a_second_process_as_the_same_node_refuses_to_start_and_the_first_goes_on(
    pg_url: str, tmp_path: Path
) -> None:
    await _account(pg_url, 10_000_000)
    sim = AsteriskSimulator(Clock(), agi_port=0, secret=SECRET)
    port = free_port()
    first = Engine("pbx1", pg_url, await sim.start(), tmp_path, agi_port=port, reuse_port=True)
    second = Engine("pbx1", pg_url, sim.port, tmp_path, agi_port=port, reuse_port=True)  # one config file
    try:
        await first.start()
        sim.agi_port = port
        code, lines = await second.refused()
        assert code == 2 and len(lines) == 1, lines
        assert "node 'pbx1'" in lines[0] and "its own [engine] node" in lines[0]
        call = await sim.place_call(Scenario(PREMIUM, "201", ring=0.2, talk=2))
        assert call.reason == "charged"  # the first one was not disturbed, and still answers alone
        ledger = PostgresLedger(pg_url)
        async with ledger:
            await until_settled(ledger)
            [row] = await ledger.activity("shared")
            assert row.call_id == call.variables["RATING_CALLID"] and await ledger.check() == []
    finally:
        await first.stop()
        await sim.close()


async def test_two_processes_on_one_port_each_follow_and_settle_only_their_own_calls(
    pg_url: str, tmp_path: Path
) -> None:
    balance = 50_000_000
    await _account(pg_url, balance)
    sim = AsteriskSimulator(Clock(), agi_port=0, secret=SECRET)
    ami, port = await sim.start(), free_port()
    engines = [
        Engine(node, pg_url, ami, tmp_path, agi_port=port, reuse_port=True, metrics=True)
        for node in ("pbx1-a", "pbx1-b")
    ]
    rng = random.Random(7)

    async def one(i: int) -> CallResult:
        await asyncio.sleep(rng.uniform(0, 4.0))
        return await sim.place_call(Scenario(PREMIUM, f"2{i % 10:02d}", ring=0.2, talk=rng.uniform(1.0, 14.0)))

    try:
        for engine in engines:
            await engine.start()
        sim.agi_port = port
        calls = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(40))), 90)
        ledger = PostgresLedger(pg_url)
        async with ledger:
            await until_settled(ledger)
            assert await ledger.reservations() == [] and await ledger.check() == []
            rows = {r.call_id: r for r in await ledger.activity("shared")}
            account = await ledger.account("shared")
        metrics = [await engine.metrics() for engine in engines]
    finally:
        for engine in engines:
            await engine.stop()
        await sim.close()

    charged = {c.variables["RATING_CALLID"]: c for c in calls if c.reason == "charged"}
    assert len(charged) == 40 and set(rows) == set(charged)  # every call charged and settled, once
    assert account.balance == balance - sum(r.cost for r in rows.values())
    for c in charged.values():  # billed as it happened: nobody estimated, nobody cut it short
        row = rows[c.variables["RATING_CALLID"]]
        assert not row.estimated and abs(row.billable_seconds - c.billable) <= 1 and not c.cut_by_deadline
    for engine, m in zip(engines, metrics, strict=True):
        own = [i for i in charged if i.startswith(f"{engine.node}:")]
        assert own, f"the kernel gave {engine.node} no call"
        assert m["rating_settled_total"] == len(own)  # its own calls, and no other's
        assert m["rating_live_calls"] == 0
        assert m["rating_ledger_fallbacks_total"] == 0  # the batches went the function's way, none failed
        assert "rating_ledger_races_total" in m  # two engines on one account: a row may change under one
    assert sum(m["rating_extended_total"] for m in metrics) > 0  # calls outlived their first quota
