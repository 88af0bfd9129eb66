"""One engine per node on a shared PostgreSQL (`ledger/pg_node.py`).

Two PBXes whose engines were given the same node (a copied config file) would each reconcile the
other's reservations and settle its live calls as gone. The second engine to start as a node
refuses to; an engine that lost its session and finds its node taken says so and counts it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import pytest

from rating_engine.asterisk.simulator import AsteriskSimulator, Scenario
from rating_engine.clock import Clock
from rating_engine.ledger import AccountSettings
from rating_engine.ledger.pg_node import node_key
from rating_engine.ledger.postgres import PostgresLedger

from .engine_process import SECRET, Engine


async def _node_sessions(url: str, node: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", f"rating-engine {node}")
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


def test_node_keys_are_stable_and_fit_a_postgresql_integer() -> None:
    keys = {node_key(f"pbx{i}") for i in range(1000)}
    assert len(keys) == 1000 and all(-(2**31) <= k < 2**31 for k in keys)
    assert node_key("pbx1") == node_key("pbx1") != node_key("pbx2")


async def test_a_node_is_held_by_one_ledger_at_a_time(pg_url: str) -> None:
    first, second = PostgresLedger(pg_url), PostgresLedger(pg_url)
    async with first, second:
        assert await first.hold_node("pbx1") == ""
        assert await first.hold_node("pbx1") == ""  # again: still its own
        holder = await second.hold_node("pbx1")
        assert "(rating-engine pbx1)" in holder and " since " in holder
        assert await second.hold_node("pbx2") == ""  # another node is free
        await first.close()  # as a stopping engine does: the node is free at once
        assert await second.hold_node("pbx1") == ""
    assert await _node_sessions(pg_url, "pbx1") == [] and await _node_sessions(pg_url, "pbx2") == []


async def test_a_node_lost_and_taken_by_another_is_said_counted_and_taken_back_once_free(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rating_engine.ledger")
    mine, other = PostgresLedger(pg_url), PostgresLedger(pg_url)
    # Its check comes a second after the cut: time for the other engine to take the node first,
    # however slow the machine (at 0.1 s it sometimes took it back before the other connected).
    mine.node_check_every = 1.0
    async with mine, other:
        assert await mine.hold_node("pbx1") == ""
        admin = await asyncpg.connect(pg_url)
        try:
            [pid] = await _node_sessions(pg_url, "pbx1")
            await admin.execute("SELECT pg_terminate_backend($1)", pid)  # a cut, a restart: the session is gone
            for _ in range(100):  # the signal is sent; the session and its lock go when it has exited
                if pid not in await _node_sessions(pg_url, "pbx1"):
                    break
                await asyncio.sleep(0.01)
        finally:
            await admin.close()
        assert await other.hold_node("pbx1") == ""  # a second engine as pbx1 starts meanwhile
        for _ in range(100):
            if mine.node_conflicts:
                break
            await asyncio.sleep(0.05)
        assert mine.node_conflicts >= 1
        said = [r for r in caplog.records if r.getMessage().startswith("another engine holds this node")]
        assert said and getattr(said[0], "node", None) == "pbx1"
        await other.close()
        for _ in range(100):
            if any(r.getMessage() == "node held again" for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        assert len(await _node_sessions(pg_url, "pbx1")) == 1  # its own again
    assert await _node_sessions(pg_url, "pbx1") == []


async def test_a_second_pbx_started_as_the_same_node_refuses_to_start(pg_url: str, tmp_path: Path) -> None:
    ledger = PostgresLedger(pg_url)
    async with ledger:
        await ledger.create_account("shared", AccountSettings("office-fr", "EUR"))
        await ledger.topup("shared", 10_000_000, "opening")
    sims = [AsteriskSimulator(Clock(), agi_port=0, secret=SECRET) for _ in range(2)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()  # two machines: two spools, so only the ledger can tell
    first = Engine("pbx1", pg_url, await sims[0].start(), tmp_path / "a")
    copied = Engine("pbx1", pg_url, await sims[1].start(), tmp_path / "b")
    try:
        await first.start()
        sims[0].agi_port = first.agi_port
        code, lines = await copied.refused()
        assert code == 2 and len(lines) == 1, lines
        assert "node 'pbx1' on this ledger" in lines[0] and "(rating-engine pbx1)" in lines[0]
        call = await sims[0].place_call(Scenario("0899123456", "201", ring=0.2, talk=2))
        assert call.reason == "charged"  # the first PBX's engine goes on
    finally:
        await first.stop()
        for sim in sims:
            await sim.close()
