"""SQLite's walk of the call path (`sqlite_batch`) answers and writes exactly what the programs do.

The PostgreSQL function's equivalence rounds (`test_pg_batch`), on two SQLite ledgers: one that runs
every operation as its program, one that walks each batch's call-path operations in memory and hands
the others back. The answers and every table the operations touch must be the same, row for row.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from rating_engine.contract import Refusal
from rating_engine.ledger import AccountSettings, CallDetails
from rating_engine.ledger.sqlite import SqliteLedger

from .test_pg_batch import NOW, _play, _setup, _sqlite_tables, rounds

_examples = itertools.count()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=rounds)
def test_the_walk_equals_the_programs(tmp_path: Path, plan: list[Any]) -> None:
    prefix = f"w{next(_examples)}"
    programs_path, walk_path = tmp_path / f"{prefix}-p.sqlite3", tmp_path / f"{prefix}-w.sqlite3"

    async def both() -> tuple[list[str], list[str], SqliteLedger]:
        programs, walk = SqliteLedger(programs_path, walk=False), SqliteLedger(walk_path)
        async with programs, walk:
            ours = await _play(programs, await _setup(programs, prefix), prefix, plan)
            theirs = await _play(walk, await _setup(walk, prefix), prefix, plan)
            assert await walk.check() == []
        return ours, theirs, walk

    by_programs, walked, walk = asyncio.run(both())
    assert walked == by_programs
    assert _sqlite_tables(walk_path, prefix) == _sqlite_tables(programs_path, prefix)
    assert walk.counts.walk_failures == 0


def test_the_call_path_is_walked(tmp_path: Path) -> None:
    """A round of reservations and settles goes the walk's way, in one batch, and leaves the ledger whole."""

    async def run() -> SqliteLedger:
        ledger = SqliteLedger(tmp_path / "walk.sqlite3")
        async with ledger:
            await ledger.create_account("a", AccountSettings("office-fr", "EUR"), now=NOW)
            await ledger.topup("a", 10**9, "opening", now=NOW)
            reserved = await asyncio.gather(
                *(ledger.reserve(f"c{i}", "a", f"2{i % 4:02d}", 10**6, NOW) for i in range(40))
            )
            assert all(r.ok for r in reserved)
            details = CallDetails(NOW, NOW + 60, "0612345678", "+33612345678", "FR", "mobile", 60)
            settled = await asyncio.gather(*(ledger.settle(f"c{i}", 300_000, details, NOW + 60) for i in range(40)))
            assert all(s.settled for s in settled)
            assert await ledger.check() == [] and await ledger.reservations() == []
            assert (await ledger.account("a")).balance == 10**9 - 40 * 300_000
        return ledger

    ledger = asyncio.run(run())
    assert ledger.counts.walked == 80 and ledger.counts.handed_back == 0


def test_a_walk_that_fails_leaves_the_batch_to_the_programs(tmp_path: Path, monkeypatch: Any) -> None:
    """A bug in the walk must not cost a call: the batch is rolled back, runs again as programs,
    and every caller gets the programs' answer; the failure is counted."""
    from rating_engine.ledger import sqlite_batch

    def broken(cur: Any, ops: Any, kept: Any = None) -> Any:
        cur.execute("UPDATE accounts SET balance = balance + 1")  # written, then the walk breaks
        raise KeyError("a bug")

    monkeypatch.setattr(sqlite_batch, "walk", broken)

    async def run() -> SqliteLedger:
        ledger = SqliteLedger(tmp_path / "broken.sqlite3")
        async with ledger:
            await ledger.create_account("a", AccountSettings("office-fr", "EUR"), now=NOW)
            await ledger.topup("a", 10**9, "opening", now=NOW)
            reserved = await asyncio.gather(*(ledger.reserve(f"c{i}", "a", "201", 10**6, NOW) for i in range(5)))
            assert all(r.ok for r in reserved)
            assert len(await ledger.reservations()) == 5 and await ledger.check() == []
            assert (await ledger.account("a")).balance == 10**9  # the walk's write was undone
        return ledger

    ledger = asyncio.run(run())
    assert ledger.counts.walk_failures >= 1 and ledger.counts.walked == 0
    assert ledger.fallbacks == ledger.counts.walk_failures  # the engine's rating_ledger_fallbacks_total


def test_refusals_are_walked_with_the_programs_reasons_and_leftovers(tmp_path: Path) -> None:
    """Reservations and renewals that the money, a floor, the extension's rules, a cap or a call or
    attempt limit refuse, on accounts that have run out or nearly (first calls of an extension
    without a row among them): the walk answers every one itself, with what the programs answer and
    leave in the tables (a refused first call leaves no row, a refused attempt is not counted).
    Each refusal used to end the walk and run its program."""
    from rating_engine.ledger import ExtensionSettings

    async def play(ledger: SqliteLedger) -> list[Any]:
        async with ledger:
            await ledger.create_account("r-dry", AccountSettings("office-fr", "EUR"), now=NOW)
            await ledger.create_account("r-few", AccountSettings("office-fr", "EUR", threshold=3 * 10**6), now=NOW)
            await ledger.topup("r-few", 6 * 10**6, "r-few-opening", now=NOW)
            await ledger.set_extension("r-few", "210", ExtensionSettings(chargeable=False))
            await ledger.set_extension("r-few", "211", ExtensionSettings(daily_cap=10**6 // 2))
            await ledger.set_extension("r-few", "212", ExtensionSettings(max_calls=1))
            await ledger.set_extension("r-few", "213", ExtensionSettings(max_attempts=1))
            await ledger.set_extension("r-dry", "201", ExtensionSettings())
            await ledger.set_extension("r-dry", "213", ExtensionSettings(max_attempts=1))
            first = await asyncio.gather(
                *(ledger.reserve(f"d-{i}", "r-dry", f"2{i % 3:02d}", 10**6, NOW + i) for i in range(9)),
                ledger.reserve("f-1", "r-few", "201", 10**6, NOW),
                ledger.reserve("f-2", "r-few", "212", 10**6, NOW),
                ledger.reserve("f-3", "r-few", "213", 10**6, NOW),
                ledger.reserve("f-4", "r-few", "201", 10**6, NOW),  # the threshold's floor of 3: blocked
                ledger.reserve("f-5", "r-few", "210", 10**6, NOW),
                ledger.reserve("f-6", "r-few", "211", 10**6, NOW),
                ledger.reserve("f-7", "r-few", "212", 1, NOW),  # a second call at once
                ledger.reserve("f-8", "r-few", "213", 1, NOW),  # a second attempt this minute
                ledger.reserve("d-x1", "r-dry", "213", 10**6, NOW),  # refused by the account: not counted,
                ledger.reserve("d-x2", "r-dry", "213", 10**6, NOW),  # so this one is not over the limit
            )
            renewed = await asyncio.gather(
                ledger.extend("f-1", 10**6, NOW + 30, NOW + 120), ledger.extend("f-2", 10**6, NOW + 30, NOW + 120)
            )
            assert await ledger.check() == []
            return [*first, *renewed]

    programs, walk = SqliteLedger(tmp_path / "r-p.sqlite3", walk=False), SqliteLedger(tmp_path / "r-w.sqlite3")
    walked, as_programs = asyncio.run(play(walk)), asyncio.run(play(programs))
    assert walked == as_programs
    assert _sqlite_tables(tmp_path / "r-w.sqlite3", "r") == _sqlite_tables(tmp_path / "r-p.sqlite3", "r")
    assert [(r.ok, r.refusal) for r in walked[9:]] == [
        (True, None),
        (True, None),
        (True, None),
        (False, Refusal.ACCOUNT_BLOCKED),
        (False, Refusal.EXTENSION_NOT_ALLOWED),
        (False, Refusal.CAP_REACHED),
        (False, Refusal.TOO_MANY_CALLS),
        (False, Refusal.RATE_LIMITED),
        (False, Refusal.INSUFFICIENT_FUNDS),
        (False, Refusal.INSUFFICIENT_FUNDS),
        (False, Refusal.ACCOUNT_BLOCKED),
        (False, Refusal.ACCOUNT_BLOCKED),
    ]
    assert {r.refusal for r in walked[:9]} == {Refusal.INSUFFICIENT_FUNDS}
    assert walk.counts.handed_back == 0 and walk.counts.walked >= 12  # the first of each gather goes alone


def test_other_programs_in_the_batch_cut_the_walk_and_keep_their_order(tmp_path: Path) -> None:
    """A top-up, a settings change and a read queued between the call path's operations run as
    programs in their place: what each operation answers, and what the tables hold, is what the
    programs alone give."""
    details = CallDetails(NOW, NOW + 60, "0612345678", "+33612345678", "FR", "mobile", 60)

    async def play(ledger: SqliteLedger) -> list[str]:
        async with ledger:
            await ledger.create_account("o-a", AccountSettings("office-fr", "EUR", threshold=3 * 10**6), now=NOW)
            await ledger.topup("o-a", 4 * 10**6, "o-a-opening", now=NOW)
            work = [
                ledger.reserve("o-1", "o-a", "201", 10**6, NOW),
                # refused: the threshold blocks below it (a floor of 3), so 4 leaves room for one call
                ledger.reserve("o-2", "o-a", "202", 10**6, NOW),
                ledger.reserve("o-3", "o-a", "201", 10**6, NOW),
                ledger.topup("o-a", 2 * 10**6, "o-a-more", now=NOW + 1),
                ledger.reserve("o-4", "o-a", "203", 10**6, NOW + 1),
                ledger.extend("o-1", 10**6, NOW + 2, NOW + 120),
                ledger.account("o-a"),
                ledger.settle("o-1", 1_500_000, details, NOW + 60),  # below the threshold: a notice
                ledger.settle("o-2", 200_000, details, NOW + 60),
                ledger.release("o-4", NOW + 60),
                ledger.update_settings("o-a", AccountSettings("office-fr", "EUR"), "admin", now=NOW + 61),
                ledger.reserve("o-5", "o-a", "201", 10**6, NOW + 61),
            ]
            answers = [repr(a) for a in await asyncio.gather(*work, return_exceptions=True)]
            assert await ledger.check() == []
            return answers

    programs, walk = SqliteLedger(tmp_path / "o-p.sqlite3", walk=False), SqliteLedger(tmp_path / "o-w.sqlite3")
    assert asyncio.run(play(walk)) == asyncio.run(play(programs))
    assert _sqlite_tables(tmp_path / "o-w.sqlite3", "o") == _sqlite_tables(tmp_path / "o-p.sqlite3", "o")
    assert walk.counts.walked >= 4 and walk.counts.handed_back >= 1  # both ways were taken


async def _account_k(ledger: SqliteLedger) -> None:
    """Account k with 10 units and no floor, and a first walk of two 1-unit reservations: its rows kept."""
    await ledger.create_account("k", AccountSettings("office-fr", "EUR"), now=NOW)
    await ledger.topup("k", 10 * 10**6, "opening", now=NOW)
    assert all(r.ok for r in await _pairs(ledger, "first-", 10**6, NOW))
    assert ledger.kept.accounts["k"].reserved == 2 * 10**6


def _pairs(ledger: SqliteLedger, prefix: str, amount: int, now: int, n: int = 2) -> Any:
    """`n` reservations in one batch: a walk (two or more call-path operations)."""
    return asyncio.gather(*(ledger.reserve(f"{prefix}{i}", "k", f"20{i}", amount, now) for i in range(n)))


def test_rows_kept_between_walks_give_way_to_another_connection(tmp_path: Path) -> None:
    """The next walk starts from the rows the last one wrote; once another connection to the file
    (a second engine, the web page's process, the command line) has taken the account's money, they
    are read again: the walk refuses what the money left no longer covers, as the programs do."""
    path = tmp_path / "kept.sqlite3"

    async def run() -> None:
        ours, other = SqliteLedger(path), SqliteLedger(path)
        async with ours, other:
            await _account_k(ours)
            assert (await other.reserve("theirs", "k", "299", 7 * 10**6, NOW)).ok  # 1 of 10 left free
            second = await _pairs(ours, "second-", 10**6, NOW + 1)
            assert [r.ok for r in second] == [True, False]
            account = await ours.account("k")
            assert account.reserved == 10 * 10**6 and account.balance == 10 * 10**6
            assert await ours.check() == []

    asyncio.run(run())


def test_rows_kept_between_walks_give_way_to_a_program_that_wrote(tmp_path: Path) -> None:
    """A program of the same connection that writes (here a settings change limiting the account to
    three calls at once) between two walks: the second walk reads the account again and refuses."""

    async def run() -> None:
        ledger = SqliteLedger(tmp_path / "kept-program.sqlite3")
        async with ledger:
            await _account_k(ledger)
            assert (await ledger.account("k")).reserved == 2 * 10**6
            assert "k" in ledger.kept.accounts  # a read wrote nothing: the rows stay kept
            await ledger.update_settings("k", AccountSettings("office-fr", "EUR", max_calls=3), "admin", now=NOW)
            assert not ledger.kept.accounts  # the program wrote: nothing kept
            second = await _pairs(ledger, "second-", 10**6, NOW + 1)
            assert [(r.ok, r.refusal) for r in second] == [(True, None), (False, Refusal.TOO_MANY_CALLS)]
            assert (await ledger.account("k")).live_calls == 3
            assert await ledger.check() == []
        # the refusal walked too: the walk read the account's new limit, and gave the program's reason
        assert ledger.counts.walked == 4 and ledger.counts.handed_back == 0

    asyncio.run(run())


def test_rows_kept_are_dropped_when_the_batch_does_not_commit(tmp_path: Path) -> None:
    """A walk changes the rows it keeps; if its batch then cannot commit (here COMMIT is refused, as a
    full disk would), the reservations never happened and the next walk must not start from them."""
    import sqlite3

    def no_commit(action: int, arg: str | None, *_: Any) -> int:
        refused = action == sqlite3.SQLITE_TRANSACTION and arg == "COMMIT"
        return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK

    async def run() -> None:
        ledger = SqliteLedger(tmp_path / "kept-rollback.sqlite3")
        async with ledger:
            await _account_k(ledger)
            await ledger._in_db_thread(lambda conn: conn.set_authorizer(no_commit))
            with pytest.raises(sqlite3.DatabaseError):
                await _pairs(ledger, "lost-", 4 * 10**6, NOW + 1)
            await ledger._in_db_thread(lambda conn: conn.set_authorizer(None))
            assert (await ledger.account("k")).reserved == 2 * 10**6
            third = await _pairs(ledger, "third-", 4 * 10**6, NOW + 2)
            assert [r.ok for r in third] == [True, True]  # 2 + 8 of 10: the lost batch held nothing
            assert (await ledger.account("k")).reserved == 10 * 10**6
            assert await ledger.check() == []
        assert ledger.counts.walk_failures == 0 and ledger.counts.walked == 6

    asyncio.run(run())
