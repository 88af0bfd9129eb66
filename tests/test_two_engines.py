"""Two PBXes, one ledger: two `rating-engine run` processes (nodes pbx1 and pbx2), each following
its own simulated Asterisk, share one small prepaid account through PostgreSQL. A storm of 200
concurrent chargeable calls across both never takes the account below its floor, every charged
call is settled exactly once, and `ledger check` passes — with pbx1 killed (SIGKILL) mid-storm and
started again: its calls end at their deadlines in Asterisk and are settled after the restart,
while pbx2's calls are billed as they happened."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import asyncpg

from rating_engine.asterisk.simulator import AsteriskSimulator, CallResult, Scenario
from rating_engine.clock import Clock
from rating_engine.ledger import AccountSettings
from rating_engine.ledger.postgres import PostgresLedger

from .engine_process import SECRET, Engine
from .ledgers import until_settled

PREMIUM = "0899123456"
BALANCE = 4_000_000  # 4 EUR: a dozen calls at once, not 200


async def storm(sim: AsteriskSimulator, rng: random.Random, n: int) -> list[CallResult]:
    async def one(i: int) -> CallResult:
        await asyncio.sleep(rng.uniform(0, 8.0))
        return await sim.place_call(Scenario(PREMIUM, f"2{i % 20:02d}", ring=0.2, talk=rng.uniform(1.0, 12.0)))

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def test_two_engines_share_one_account_and_one_is_killed_mid_storm(pg_url: str, tmp_path: Path) -> None:
    url = pg_url
    ledger = PostgresLedger(url)
    async with ledger:
        await ledger.create_account("shared", AccountSettings("office-fr", "EUR"))
        await ledger.topup("shared", BALANCE, "opening")
    clock = Clock()
    sims = [AsteriskSimulator(clock, agi_port=0, secret=SECRET) for _ in range(2)]
    engines = [Engine(f"pbx{i + 1}", url, await sim.start(), tmp_path) for i, sim in enumerate(sims)]
    try:
        for sim, engine in zip(sims, engines, strict=True):
            await engine.start()
            sim.agi_port = engine.agi_port
        rng = random.Random(13)
        calls = asyncio.gather(storm(sims[0], rng, 100), storm(sims[1], rng, 100))
        await asyncio.sleep(2.5)
        await engines[0].kill()  # mid-storm: its calls go on in Asterisk until their deadlines
        killed_at = clock.now()
        await asyncio.sleep(6)
        await engines[0].start()  # reconciles pbx1's reservations with its Asterisk
        back_at = clock.now()
        first, second = await asyncio.wait_for(calls, 90)
        ledger = PostgresLedger(url)
        async with ledger:
            await until_settled(ledger, 20)  # pbx1's calls that ended while it was away: after its restart
            assert await ledger.reservations() == []
            rows = {r.call_id: r for r in await ledger.activity("shared")}
            assert await ledger.check() == []
            account = await ledger.account("shared")
    finally:
        for engine in engines:
            await engine.stop()
        for sim in sims:
            await sim.close()
    conn = await asyncpg.connect(url)
    try:
        lowest = await conn.fetchval("SELECT MIN(balance_after) FROM journal WHERE account_id = 'shared'")
    finally:
        await conn.close()

    assert lowest >= 0 and account.balance >= 0 and account.reserved == 0  # never below the floor
    charged = {c.variables["RATING_CALLID"]: c for c in [*first, *second] if c.reason == "charged"}
    assert {i.split(":")[0] for i in charged} == {"pbx1", "pbx2"} and len(charged) >= 5
    assert any(c.reason == "insufficient_funds" for c in [*first, *second])
    assert set(rows) == set(charged)  # each charged call settled, once (the activity's key is the call)
    assert account.balance == BALANCE - sum(r.cost for r in rows.values())
    pbx2 = [rows[i] for i in charged if i.startswith("pbx2:")]
    assert pbx2 and not any(r.estimated for r in pbx2)  # the other engine was not disturbed
    for call_id in charged:
        if call_id.startswith("pbx2:") and charged[call_id].answered_at is not None:
            assert abs(rows[call_id].billable_seconds - charged[call_id].billable) <= 1
    # Calls pbx1 had answered and that ended while it was dead: cut at their deadline by Asterisk
    # at the latest, and billed after the restart, never beyond what was paid for.
    orphans = [
        c
        for i, c in charged.items()
        if i.startswith("pbx1:")
        and c.answered_at is not None
        and c.answered_at < killed_at
        and c.ended_at is not None
        and c.ended_at < back_at
    ]
    assert orphans
    for c in orphans:
        row = rows[c.variables["RATING_CALLID"]]
        assert c.billable <= row.billable_seconds <= int(c.variables["RATING_QUOTASEC"]) + 1
