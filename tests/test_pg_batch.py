"""PostgreSQL's batched call path answers and writes exactly what the programs do.

Random rounds of concurrent operations (reservations, renewals, releases, settles, notes; refused,
duplicated, unknown; across midnight in two time zones, under caps, call limits, a velocity limit,
a block threshold and an automatic top-up) run on SQLite, where every operation is its program,
and on PostgreSQL, where they go through `rating_engine_batch_v14`. The answers and every table
the operations touch must be the same, row for row.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rating_engine.contract import Refusal
from rating_engine.ledger import AccountSettings, CallDetails, ExtensionSettings, Ledger, OnLow, SettleResult
from rating_engine.ledger.postgres import PostgresLedger
from rating_engine.ledger.sqlite import SqliteLedger

from .ledgers import pg_database

NOW = 1_795_564_000  # 2026-11-24 21:46 UTC: the rounds cross midnight in Paris and in New York
_examples = itertools.count()

op = st.one_of(
    # 204 has no rules of its own: its first call makes its row (and a refused first call leaves none)
    # decided with no settings revisions, with the current ones, or with ones changed since
    st.tuples(
        st.just("reserve"),
        st.integers(0, 2),
        st.sampled_from(["201", "201", "202", "203", "204"]),
        st.integers(1, 4),
        st.sampled_from(["none", "current", "current", "changed"]),
    ),
    st.tuples(st.just("extend"), st.integers(0, 40), st.integers(1, 3)),
    st.tuples(st.just("release"), st.integers(0, 40)),
    st.tuples(st.just("settle"), st.integers(0, 40), st.integers(0, 5)),
    st.tuples(st.just("annotate"), st.integers(0, 40)),
    st.tuples(st.just("duplicate"), st.integers(0, 40)),
    st.tuples(st.just("burst"), st.integers(0, 2), st.integers(2, 7)),  # a dialer: many calls of one extension
)
step = st.one_of(st.integers(0, 120), st.integers(3600, 9 * 3600), st.integers(20 * 86400, 40 * 86400))
# before a round's operations: an administrator saves an account's settings ("") or an extension's
# rules (its revision goes up), or not
rules = st.one_of(st.none(), st.tuples(st.integers(0, 2), st.sampled_from(["", "201", "202", "204"])))
rounds = st.lists(st.tuples(step, st.lists(op, min_size=1, max_size=16), rules), min_size=1, max_size=8)

MONEY = 250_000
ACCOUNTS = (
    AccountSettings("office-fr", "EUR", threshold=2 * MONEY, timezone="Europe/Paris", max_calls=4),
    AccountSettings(
        "office-fr",
        "EUR",
        threshold=3 * MONEY,
        on_low=OnLow.TOPUP,
        topup_amount=10 * MONEY,
        timezone="America/New_York",
    ),
    AccountSettings("office-fr", "EUR", velocity_limit=9 * MONEY, max_attempts=6),
)
EXTENSIONS = {
    "201": ExtensionSettings(monthly_cap=8 * MONEY, max_attempts=3),
    "202": ExtensionSettings(daily_cap=6 * MONEY, max_calls=2),
    "203": ExtensionSettings(chargeable=False),
}
NO_RULES = ExtensionSettings()


async def _setup(ledger: Ledger, prefix: str) -> list[str]:
    names = [f"{prefix}-{i}" for i in range(len(ACCOUNTS))]
    for name, s in zip(names, ACCOUNTS, strict=True):
        await ledger.create_account(name, s, now=NOW)
        await ledger.topup(name, 30 * MONEY, f"{name}-opening", now=NOW)
        for ext, e in EXTENSIONS.items():
            await ledger.set_extension(name, ext, e)
    return names


async def _play(ledger: Ledger, names: list[str], prefix: str, plan: list[Any]) -> list[str]:
    calls: list[str] = []
    answers: list[str] = []
    now = NOW
    serial = itertools.count()

    def call(i: int) -> str:
        return calls[i % len(calls)] if calls else f"{prefix}-none"

    revs = {(a, e): 1 for a in names for e in EXTENSIONS}  # set_extension raised each once; 204 has none
    for step, ops, saved in plan:
        now += step
        if saved is not None and saved[1]:
            changed = await ledger.set_extension(names[saved[0]], saved[1], EXTENSIONS.get(saved[1], NO_RULES))
            revs[names[saved[0]], saved[1]] = changed.settings_rev
        elif saved is not None:
            revs[names[saved[0]], ""] = (await ledger.update_settings(names[saved[0]], ACCOUNTS[saved[0]])).settings_rev
        work: list[Awaitable[object]] = []
        for o in itertools.chain.from_iterable(
            [("reserve", o[1], "201", 1, "current")] * o[2] if o[0] == "burst" else [o] for o in ops
        ):
            kind = o[0]
            if kind in ("reserve", "duplicate"):
                call_id = f"{prefix}-c{next(serial)}" if kind == "reserve" else call(o[1])
                account, ext, units = (names[o[1]], o[2], o[3]) if kind == "reserve" else (names[0], "201", 1)
                expect = None
                if kind == "reserve" and o[4] != "none":
                    arev, erev = revs.get((account, ""), 0), revs.get((account, ext), 0)
                    expect = (arev, erev + 1) if o[4] == "changed" and o[3] % 2 else (arev + (o[4] == "changed"), erev)
                calls.append(call_id)
                work.append(
                    ledger.reserve(call_id, account, ext, units * MONEY, now, now + 90, f"d{call_id}", expect=expect)
                )
            elif kind == "extend":
                work.append(ledger.extend(call(o[1]), o[2] * MONEY, now, now + 120))
            elif kind == "release":
                work.append(ledger.release(call(o[1]), now))
            elif kind == "settle":
                details = CallDetails(
                    now - 60, now if o[2] % 2 else 0, "0612345678", "+33612345678", "FR", "mobile", 60
                )
                work.append(ledger.settle(call(o[1]), o[2] * MONEY // 2, details, now))
            else:
                work.append(ledger.annotate(call(o[1]), now + 30, f"n{now}"))
        for answer in await asyncio.gather(*work, return_exceptions=True):
            answers.append(repr(answer))
        # Then every authorization's read at once (batched on PostgreSQL): known or not, as it stands.
        reads = [ledger.caller(a, e) for a in [*names, f"{prefix}-nobody"] for e in ("201", "202", "203", "204", "299")]
        answers.extend(repr(r) for r in await asyncio.gather(*reads, return_exceptions=True))
    return answers


TABLES = {
    "accounts": "SELECT * FROM accounts WHERE id LIKE {p} ORDER BY id",
    "extensions": "SELECT * FROM extensions WHERE account_id LIKE {p} ORDER BY account_id, ext",
    "reservations": "SELECT * FROM reservations WHERE account_id LIKE {p} ORDER BY call_id",
    "activity": "SELECT * FROM activity WHERE account_id LIKE {p} ORDER BY call_id",
    "activity_days": "SELECT * FROM activity_days WHERE account_id LIKE {p} ORDER BY account_id, day, ext",
    "journal": "SELECT account_id, at, entry, amount, reference, balance_after FROM journal WHERE account_id LIKE {p}"
    " ORDER BY account_id, reference, entry",
    "topups": "SELECT * FROM topups WHERE account_id LIKE {p} ORDER BY reference",
    "notices": "SELECT account_id, kind, key, detail, amount, created_at FROM notices WHERE account_id LIKE {p}"
    " ORDER BY key",
    "audit": "SELECT account_id, at, actor, action, detail FROM audit WHERE account_id LIKE {p}"
    " ORDER BY account_id, at, action, detail",
}


def _sqlite_tables(path: Path, prefix: str) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        return {t: [tuple(r) for r in conn.execute(q.format(p="?"), (prefix + "-%",))] for t, q in TABLES.items()}


async def _pg_tables(url: str, prefix: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(url)
    try:
        return {t: [tuple(r) for r in await conn.fetch(q.format(p="$1"), prefix + "-%")] for t, q in TABLES.items()}
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with pg_database() as url:
        yield url


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=rounds, split=st.booleans(), lone=st.booleans())
@example(  # a duplicate reservation of a call once put the call's renewal in the wrong part of a cut batch
    plan=[
        (
            0,
            [
                ("annotate", 0),
                ("reserve", 1, "201", 1, "none"),
                ("reserve", 1, "201", 4, "none"),
                ("extend", 38, 1),
                ("burst", 1, 2),
                ("reserve", 0, "201", 1, "none"),
            ],
            None,
        ),
        (20, [("duplicate", 0), ("extend", 0, 1), ("reserve", 1, "201", 1, "none")], None),
    ],
    split=True,
    lone=False,
)
def test_batched_postgres_equals_the_programs(
    pg_url: str, tmp_path: Path, plan: list[Any], split: bool, lone: bool
) -> None:
    """`split`: every batch of two operations or more is cut by account, its parts run side by side.
    `lone`: a batch of one operation runs as its program; else as the function, like the others."""
    prefix = f"x{next(_examples)}"
    path = tmp_path / f"{prefix}.sqlite3"

    async def both() -> tuple[list[str], list[str], PostgresLedger]:
        sqlite = SqliteLedger(path)
        # one writer: a round's operations run in the order given (each account's, when cut)
        pg = PostgresLedger(pg_url, writers=1, split_from=2 if split else 10**6, lone_as_program=lone)
        async with sqlite, pg:
            ours = await _play(sqlite, await _setup(sqlite, prefix), prefix, plan)
            theirs = await _play(pg, await _setup(pg, prefix), prefix, plan)
            assert await pg.check() == []
        return ours, theirs, pg

    programs, batched, pg = asyncio.run(both())
    assert batched == programs
    assert 0 < pg.read_batches <= 2 * len(plan)  # 20 reads a round, in one or two batches
    assert pg.lone == 0 or lone
    assert asyncio.run(_pg_tables(pg_url, prefix)) == _sqlite_tables(path, prefix)
    assert pg.function_failures == 0


def test_the_call_path_goes_the_fast_way(pg_url: str) -> None:
    """A plain reservation and settle take no program at all once the account's zone is known (each
    sent alone, but as the function, as a batch of several is)."""

    async def run() -> PostgresLedger:
        pg = PostgresLedger(pg_url)
        async with pg:
            await pg.create_account("fast", AccountSettings("office-fr", "EUR", timezone="Europe/Paris"), now=NOW)
            await pg.topup("fast", 100 * MONEY, "fast-opening", now=NOW)
            await pg.set_extension("fast", "201", ExtensionSettings())
        pg = PostgresLedger(pg_url, lone_as_program=False)  # a new engine: it reads the accounts' zones when it opens
        async with pg:
            for i in range(20):
                held = await pg.reserve(f"fast-{i}", "fast", "201", MONEY, NOW + i)
                assert held.ok
                done = await pg.settle(f"fast-{i}", MONEY // 3, CallDetails(NOW, NOW + 30), NOW + i + 30)
                assert done.settled and done.balance_after == 100 * MONEY - (i + 1) * (MONEY // 3)
        return pg

    pg = asyncio.run(run())
    assert (pg.slow, pg.function_failures, pg.lone) == (0, 0, 0)
    assert pg.batches >= 40


def test_first_calls_and_known_extensions_in_one_batch_go_the_fast_way(pg_url: str) -> None:
    """A batch makes the rows of its first calls' extensions (and only looks for them when one is
    missing): first calls beside known extensions, first calls alone, and known extensions alone
    are all held by the function, none handed back to its program."""

    async def run() -> PostgresLedger:
        pg = PostgresLedger(pg_url, writers=1, lone_as_program=False)
        async with pg:
            await pg.create_account("first", AccountSettings("office-fr", "EUR"), now=NOW)
            await pg.topup("first", 100 * MONEY, "first-opening", now=NOW)
            await pg.set_extension("first", "201", ExtensionSettings())
            rounds = [["201", "301", "302"], ["401", "402", "403"], ["201", "301", "401"]]
            for r, exts in enumerate(rounds):
                calls = [f"first-{r}-{e}" for e in exts]
                held = await asyncio.gather(
                    *(pg.reserve(c, "first", e, MONEY, NOW + r) for c, e in zip(calls, exts, strict=True))
                )
                assert all(h.ok for h in held)
                done = await asyncio.gather(*(pg.settle(c, MONEY // 2, None, NOW + r + 30) for c in calls))
                assert all(d.settled for d in done)
            extensions = {e.ext: e for e in await pg.extensions("first")}
            assert sorted(extensions) == ["201", "301", "302", "401", "402", "403"]
            assert all(e.live_calls == 0 and e.reserved == 0 for e in extensions.values())
            assert await pg.check() == []
        return pg

    pg = asyncio.run(run())
    assert (pg.slow, pg.function_failures, pg.lone) == (0, 0, 0)
    assert pg.batches == 6


def test_an_extension_seen_before_is_not_looked_for_and_if_its_row_is_gone_its_program_makes_it(
    pg_url: str,
) -> None:
    """An engine knows which extensions have a row (read when it opens, and from every call held),
    and the function does not look for those rows to make them. Were one gone since (an operator's
    DELETE: the ledger itself never deletes a row that has held a call), its reservation is handed
    to its program, which makes the row again, and the batch goes on."""

    async def run() -> tuple[PostgresLedger, PostgresLedger]:
        first = PostgresLedger(pg_url, writers=1, lone_as_program=False)
        async with first:
            await first.create_account("seen", AccountSettings("office-fr", "EUR"), now=NOW)
            await first.topup("seen", 100 * MONEY, "seen-opening", now=NOW)
            held = await asyncio.gather(*(first.reserve(f"seen-{e}", "seen", e, MONEY, NOW) for e in ("201", "202")))
            assert all(h.ok for h in held)
            assert {("seen", "201"), ("seen", "202")} <= first.zones.with_rows
            await asyncio.gather(*(first.settle(f"seen-{e}", MONEY // 2, None, NOW + 30) for e in ("201", "202")))
        pg = PostgresLedger(pg_url, writers=1, lone_as_program=False)  # a new engine: it reads them when it opens
        async with pg:
            assert {("seen", "201"), ("seen", "202")} <= pg.zones.with_rows
            conn = await asyncpg.connect(pg_url)
            try:
                await conn.execute("DELETE FROM extensions WHERE account_id = 'seen' AND ext = '201'")
            finally:
                await conn.close()
            held = await asyncio.gather(
                *(pg.reserve(f"again-{e}", "seen", e, MONEY, NOW + 60) for e in ("201", "202", "203"))
            )
            assert all(h.ok for h in held)
            extensions = {e.ext: e for e in await pg.extensions("seen")}
            assert sorted(extensions) == ["201", "202", "203"]
            assert all(e.live_calls == 1 and e.reserved == MONEY for e in extensions.values())
            assert await pg.check() == []
        return first, pg

    first, pg = asyncio.run(run())
    assert (first.slow, first.function_failures) == (0, 0)
    assert (pg.slow, pg.function_failures) == (1, 0)  # 201's reservation, alone: 203's row the function made


def test_a_lone_operation_runs_as_its_program_and_a_batch_as_the_function(pg_url: str) -> None:
    """One call at a time (a quiet PBX): every batch holds one operation and runs as its program.
    Twenty at once: the batches hold several, and those go through the function."""

    async def run() -> tuple[int, int, int, int]:
        pg = PostgresLedger(pg_url, writers=1)
        async with pg:
            await pg.create_account("lone", AccountSettings("office-fr", "EUR"), now=NOW)
            await pg.topup("lone", 100 * MONEY, "lone-opening", now=NOW)
            for i in range(5):
                assert (await pg.reserve(f"lone-{i}", "lone", "201", MONEY, NOW + i)).ok
                done = await pg.settle(f"lone-{i}", MONEY // 4, CallDetails(NOW, NOW + 30), NOW + i + 30)
                assert done.settled and done.balance_after == 100 * MONEY - (i + 1) * (MONEY // 4)
            alone, batches = pg.lone, pg.batches
            held = await asyncio.gather(*(pg.reserve(f"many-{i}", "lone", "202", MONEY, NOW) for i in range(20)))
            assert all(h.ok for h in held)
            settled = await asyncio.gather(*(pg.settle(f"many-{i}", 1, None, NOW + 9) for i in range(20)))
            assert all(s.settled for s in settled)
            assert (await pg.account("lone")).balance == 100 * MONEY - 5 * (MONEY // 4) - 20
            assert await pg.check() == []
        return alone, batches, pg.lone, pg.batches

    alone, batches, lone_after, batches_after = asyncio.run(run())
    assert alone == batches == 10
    assert batches_after - batches > lone_after - alone  # most of the forty went as batches of several


_TEXT = st.text(st.characters(codec="utf-8", blacklist_characters="\x00"), max_size=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(st.one_of(st.none(), _TEXT)),
    numbers=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
)
def test_the_columns_reach_postgresql_as_they_were(
    pg_url: str, texts: list[str | None], numbers: list[int | None]
) -> None:
    """The batch's arrays travel as array literals: quotes, backslashes, braces, commas, blanks,
    'NULL' as a word and None as NULL come out of PostgreSQL as they went in."""
    from rating_engine.ledger.pg_batch import _numbers, _texts

    async def run() -> tuple[list[str | None], list[int | None]]:
        conn = await asyncpg.connect(pg_url)
        try:
            got = await conn.fetchrow("SELECT $1::text::text[] AS t, $2::text::bigint[] AS n", _texts(tuple(texts)),
                                      _numbers(tuple(numbers)))  # fmt: skip
            return list(got["t"]), list(got["n"])
        finally:
            await conn.close()

    assert asyncio.run(run()) == (texts, numbers)


@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["reserve", "settle", "extend", "release"]), st.integers(0, 9), st.integers(0, 4)),
        max_size=60,
    ),
    known=st.dictionaries(st.integers(0, 9), st.integers(0, 4)),
    parts=st.integers(1, 3),
)
def test_a_batch_is_cut_where_no_account_or_call_links_its_parts(
    ops: list[tuple[str, int, int]], known: dict[int, int], parts: int
) -> None:
    """The parts of a cut batch run side by side: none may name another's account or call, and each
    keeps its operations in the batch's order; those whose account is unknown stay in the first."""
    from rating_engine.ledger.pg_batch import Zones, split

    zones = Zones()
    for call, account in known.items():
        zones.called(f"c{call}", f"a{account}", "201")
    batch = [(op, (f"c{call}", f"a{account}", "201")) for op, call, account in ops]
    groups = split(batch, zones, parts)
    assert sorted(k for g in groups for k in g) == list(range(len(batch))) and len(groups) <= parts
    assert all(g == sorted(g) and g for g in groups)
    named: dict[str, str] = {}  # each call's account as the batch tells it: reserved in it, or known
    owners: list[set[str]] = []
    for g in groups:
        calls = {batch[k][1][0] for k in g}
        accounts = set()
        for k in g:
            op, (cid, acc, _) = batch[k]
            if op == "reserve":
                named[cid] = acc
            mine = named.get(cid) or zones.of_call.get(cid, ("", ""))[0]
            accounts.add(mine)
            if not mine:
                assert g is groups[0]
        owners.append(calls | {a for a in accounts if a})
    assert all(not (owners[i] & owners[j]) for i in range(len(owners)) for j in range(i + 1, len(owners)))


async def deadlocks(conn: asyncpg.Connection) -> int:
    """The deadlocks PostgreSQL has broken in this database so far."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await asyncio.sleep(0.2)
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(await conn.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))


@pytest.mark.parametrize("lone", [True, False])
def test_lone_programs_and_batches_side_by_side_never_deadlock(pg_url: str, lone: bool) -> None:
    """Fifty calls at once on one account, two writers, each round on five extensions making their
    first calls: some batches hold one operation (a program, whose new extension row's foreign key
    takes a key-share lock on the account; until schema version 8 its reservation's did) and some
    several (the function, which locks the extensions, then the account), or all go as the function
    (`lone` False). Nobody waits for another in a cycle, PostgreSQL detects no deadlock, and every
    operation succeeds. Both faults
    this guards against were seen here: FOR UPDATE on the account deadlocked a program and a batch
    in every run, and a first call's row made by the function once the account was locked
    deadlocked two batches in five runs of six."""

    account = f"storm-{lone}"

    async def run() -> tuple[int, int, int]:
        pg = PostgresLedger(pg_url, writers=2, lone_as_program=lone)
        async with pg:
            await pg.create_account(account, AccountSettings("office-fr", "EUR"), now=NOW)
            await pg.topup(account, 10**6 * MONEY, f"{account}-opening", now=NOW)
            conn = await asyncpg.connect(pg_url)
            try:
                before = await deadlocks(conn)

                async def caller(w: int) -> None:
                    pause = random.Random(w)  # calls set up and hung up at scattered moments
                    for i in range(12):
                        await asyncio.sleep(pause.random() / 100)
                        assert (await pg.reserve(f"{account}-{w}-{i}", account, f"3{i:02d}{w % 5}", MONEY, NOW)).ok
                        await asyncio.sleep(pause.random() / 100)
                        done = await pg.settle(f"{account}-{w}-{i}", MONEY // 2, None, NOW + 30)
                        assert done.settled

                await asyncio.gather(*(caller(w) for w in range(50)))
                assert await pg.check() == []
                return await deadlocks(conn) - before, pg.lone, pg.batches
            finally:
                await conn.close()

    found, alone, batches = asyncio.run(run())
    assert (alone > 0) == lone and batches > alone  # both ways were taken, or only the function
    assert found == 0


@pytest.mark.parametrize("way", ["lone", "function", "programs"])
@pytest.mark.parametrize("second", ["settle", "release", "annotate"])
def test_two_operations_of_one_call_at_once_leave_the_ledger_whole(pg_url: str, way: str, second: str) -> None:
    """A renewal still on its way when the call hangs up: the engine cancels its wait, not the
    write, so the call's extend and its settle (or release, or note) reach the ledger at once, in
    two writers, as programs or inside batches. Whichever goes first, the other sees what it did:
    the account and the extension hold exactly what the live reservations hold. An extend that read
    the reservation before a settle took it away once added to both holds for a row that was gone,
    and `ledger check` found it (seen on two engines sharing one port)."""
    account = f"race-{way}-{second}"

    async def run() -> tuple[list[Any], int, int]:
        pg = PostgresLedger(pg_url, writers=2, lone_as_program=way == "lone", batched=way != "programs")
        async with pg:
            await pg.create_account(account, AccountSettings("office-fr", "EUR"), now=NOW)
            await pg.topup(account, 10**6 * MONEY, f"{account}-opening", now=NOW)
            calls = [f"{account}-{i}" for i in range(150)]
            for n, call in enumerate(calls):
                assert (await pg.reserve(call, account, f"2{n % 3:02d}", MONEY, NOW)).ok
            pause = random.Random(way + second)
            lags = [pause.random() / 300 for _ in calls]
            conn = await asyncpg.connect(pg_url)
            before = await deadlocks(conn)

            async def both(n: int, call: str) -> None:
                await asyncio.sleep(n / 250)  # calls hang up one after another: batches of one and of a few
                other: Awaitable[object]
                if second == "settle":
                    other = pg.settle(call, MONEY // 3, None, NOW + 60)
                elif second == "release":
                    other = pg.release(call, NOW + 60)
                else:
                    other = pg.annotate(call, NOW + 300, "noted")
                renewal = asyncio.ensure_future(pg.extend(call, MONEY, NOW + 50, NOW + 200))
                await asyncio.sleep(lags[n])  # the hangup comes while the renewal is on its way
                _, ended = await asyncio.gather(renewal, other)
                assert (isinstance(ended, SettleResult) and ended.settled) if second == "settle" else ended

            try:
                await asyncio.gather(*(both(n, call) for n, call in enumerate(calls)))
                found = await deadlocks(conn) - before
            finally:
                await conn.close()
            problems = await pg.check()
            if second == "annotate":  # the notes, then the calls end: nothing is left held
                for call in calls:
                    assert (await pg.settle(call, 0, None, NOW + 400)).settled
                problems += await pg.check()
            assert (pg.lone > 0) == (way == "lone")
            return [p for p in problems if p.account_id == account], len(await pg.reservations(account)), found

    problems, left, found = asyncio.run(run())
    assert problems == [] and left == 0
    assert found == 0  # and nobody waited for the other in a cycle


def _one_by_one_against_the_programs(
    pg_url: str, tmp_path: Path, prefix: str, play: Callable[[Ledger], Awaitable[list[str]]]
) -> PostgresLedger:
    """`play` on SQLite's programs, then on PostgreSQL with one writer (each operation alone): the
    same answers and the same rows. The PostgreSQL ledger is returned for its counters."""

    async def both() -> tuple[list[str], list[str], PostgresLedger]:
        sqlite = SqliteLedger(tmp_path / f"{prefix}.sqlite3", walk=False)
        pg = PostgresLedger(pg_url, writers=1)
        async with sqlite, pg:
            programs = await play(sqlite)
            ours = await play(pg)
            assert [p for p in await pg.check() if p.account_id.startswith(prefix)] == []
        return programs, ours, pg

    programs, ours, pg = asyncio.run(both())
    assert ours == programs
    assert asyncio.run(_pg_tables(pg_url, prefix)) == _sqlite_tables(tmp_path / f"{prefix}.sqlite3", prefix)
    return pg


def test_a_lone_reservation_or_settle_in_one_statement_answers_as_its_program(pg_url: str, tmp_path: Path) -> None:
    """Reservations and settles sent one at a time go as one statement when they pass (`pg_lone`),
    and to their program when they do not: a duplicate, a settled call, an unknown account, a cap, a
    call limit, the money, changed settings, a first call without an extension row, a velocity
    limit, a time zone this engine has not read; a settle below the threshold (a notice), a second
    settle, an unknown call. Every answer and every row is what SQLite's programs give."""
    prefix = "lone1"

    async def play(ledger: Ledger) -> list[str]:
        a0, a1, a2 = await _setup(ledger, prefix)
        r1 = (await ledger.account(a1)).settings_rev
        e1 = (await ledger.extension(a1, "201")).settings_rev  # type: ignore[union-attr]
        steps: list[Any] = [
            ("reserve", "c1", a0, "201", 1),
            ("reserve", "c1", a0, "201", 1),  # a duplicate
            ("reserve", "c2", a0, "203", 1),  # not chargeable
            ("reserve", "c3", a0, "204", 1),  # its first call: no row yet
            ("reserve", "c4", a0, "204", 1),
            ("reserve", "c5", a2, "201", 1),  # a velocity limit to sum
            ("reserve", "c6", a0, "202", 7),  # over the daily cap
            ("reserve", "c7", a1, "201", 1, (r1, e1 + 1)),  # decided with other settings
            ("reserve", "c8", a1, "201", 1, (r1, e1)),
            ("settle", "c1", 1),
            ("reserve", "c1", a0, "201", 1),  # settled already
            ("reserve", "c9", "nobody", "201", 1),
            ("reserve", "c10", a0, "202", 1),
            ("reserve", "c11", a0, "202", 1),  # the account's fourth live call
            ("reserve", "c12", a0, "201", 1),  # a fifth: too many
            ("reserve", "c13", a1, "202", 40),  # more than the balance
            ("settle", "c4", 1),
            ("settle", "c8", 3),
            ("settle", "c10", 27),  # below the account's threshold: a notice
            ("settle", "c11", 0),  # nothing to debit, and already below: no second notice
            ("settle", "c1", 1),  # settled already
            ("settle", "c99", 1),  # unknown
            ("forget zones",),
            ("reserve", "c14", a1, "202", 1),  # a zone not read yet
            ("settle", "c3", 1),
        ]
        answers = []
        for s in steps:
            if s[0] == "settle":
                details = CallDetails(NOW + 5, NOW + 50 if s[2] % 2 else 0, "0899", "+33899", "FR", "premium", 45)
                answers.append(repr(await ledger.settle(f"{prefix}-{s[1]}", s[2] * MONEY, details, NOW + 60)))
            elif s[0] == "forget zones":
                if isinstance(ledger, PostgresLedger):
                    ledger.zones.of_account.clear()
            else:
                expect = s[5] if len(s) > 5 else None
                call, account, ext, units = f"{prefix}-{s[1]}", s[2], s[3], s[4]
                got = await ledger.reserve(call, account, ext, units * MONEY, NOW, NOW + 90, "d", expect=expect)
                answers.append(repr(got))
        return answers

    pg = _one_by_one_against_the_programs(pg_url, tmp_path, prefix, play)
    # held: c1, c4, c8, c10, c11; settled: c1, c4, c8, c11. The rest went to the program.
    # None handed back by an error (which PostgreSQL logs with the statement): the statement's look
    # before it writes finds 203 not chargeable, the daily cap, other settings, the fifth call, the
    # money and the settle that raises a notice (6 hand-backs before it looked), and the driver sends
    # c3's first call and c5's velocity limit to their program (8 before it knew to).
    assert (pg.lone_in_one, pg.lone_handed_back, pg.function_failures) == (9, 0, 0)


def test_a_lone_renewal_or_release_in_one_statement_answers_as_its_program(pg_url: str, tmp_path: Path) -> None:
    """Renewals sent one at a time go as one statement when they fit (`pg_lone.EXTEND`), and to their
    program when they do not: an extension's monthly or daily cap, the money, a velocity limit, an
    extension no longer chargeable, an unknown or settled call, a time zone not read. A renewal whose
    deadline is earlier keeps the later one. Releases too (`pg_lone.RELEASE`): a second one, an
    unknown call and a zone not read go to the program, and one on another day starts the extension's
    day again. Every answer and every row is what SQLite's programs give."""
    prefix = "lone2"

    async def play(ledger: Ledger) -> list[str]:
        a0, a1, a2 = await _setup(ledger, prefix)
        steps: list[Any] = [
            ("reserve", "c1", a0, "201", 1),
            ("extend", "c1", 1, 200),
            ("extend", "c1", 1, 300),
            ("extend", "c1", 6, 300),  # past 201's monthly cap of 8
            ("reserve", "c2", a0, "202", 1),
            ("extend", "c2", 6, 200),  # past 202's daily cap of 6
            ("extend", "c2", 4, 200),
            ("reserve", "c3", a2, "201", 1),  # a velocity limit: the programs'
            ("extend", "c3", 1, 200),
            ("reserve", "c4", a1, "202", 1),
            ("extend", "c4", 40, 200),  # past the daily cap
            ("reserve", "c7", a1, "204", 1),  # its first call: the program makes the row
            ("extend", "c7", 40, 200),  # no cap there, but more than the balance
            ("extend", "c7", 2, 200),
            ("reserve", "c5", a0, "204", 1),  # its first call: the program makes the row
            ("extend", "c5", 1, 200),
            ("extend", "c5", 1, 100),  # an earlier deadline: the later one stays (c5 is not settled)
            ("reserve", "c6", a0, "203", 1),  # not chargeable: refused
            ("extend", "c6", 1, 200),  # so unknown
            ("rules", a0, "201", ExtensionSettings(chargeable=False)),
            ("extend", "c1", 1, 400),  # no longer chargeable
            ("extend", "c99", 1, 200),  # unknown
            ("settle", "c1", 1),
            ("extend", "c1", 1, 500),  # settled
            ("release", "c2", 30),
            ("release", "c2", 31),  # released already
            ("release", "c98", 31),  # unknown
            ("reserve", "c9", a0, "204", 1),
            ("settle", "c9", 1),  # 204 has spent today...
            ("release", "c5", 2 * 86400),  # ...and a release two days later starts its day again
            ("forget zones",),
            ("extend", "c4", 1, 300),  # a zone not read yet
            ("release", "c7", 400),  # the same
        ]
        answers = []
        for s in steps:
            if s[0] == "settle":
                details = CallDetails(NOW + 5, NOW + 50, "0899", "+33899", "FR", "premium", 45)
                answers.append(repr(await ledger.settle(f"{prefix}-{s[1]}", s[2] * MONEY, details, NOW + 60)))
            elif s[0] == "extend":
                got = await ledger.extend(f"{prefix}-{s[1]}", s[2] * MONEY, NOW + 30, NOW + s[3])
                answers.append(repr(got))
            elif s[0] == "release":
                answers.append(repr(await ledger.release(f"{prefix}-{s[1]}", NOW + s[2])))
            elif s[0] == "rules":
                await ledger.set_extension(s[1], s[2], s[3])
            elif s[0] == "forget zones":
                if isinstance(ledger, PostgresLedger):
                    ledger.zones.of_account.clear()
            else:
                call, account, ext, units = f"{prefix}-{s[1]}", s[2], s[3], s[4]
                answers.append(repr(await ledger.reserve(call, account, ext, units * MONEY, NOW, NOW + 90, "d")))
        return answers

    pg = _one_by_one_against_the_programs(pg_url, tmp_path, prefix, play)
    # in one statement: the reservations c1, c2, c4 and c9 (c3's account has a velocity limit, c5's and
    # c7's extension no row yet, c6's is not chargeable), the renewals of c1 twice, c2 once, c5 twice and
    # c7 once, the settles of c1 and c9, the releases of c2 and c5
    # None handed back by an error: the caps, the money, 203 not chargeable and 201 no longer are seen
    # before anything is written (6 hand-backs before); c3's reservation and renewal (a velocity limit)
    # and c5's and c7's first calls go to their program without it (10 before the driver knew to).
    assert (pg.lone_in_one, pg.lone_handed_back, pg.function_failures) == (4 + 6 + 2 + 2, 0, 0)


@pytest.mark.parametrize("op", ["reserve", "extend", "settle"])
def test_a_row_changed_between_the_look_and_the_lock_is_still_refused_under_the_lock(pg_url: str, op: str) -> None:
    """The one statement looks at the rows before it writes, without a lock; another writer can change
    them before it takes their locks. Here an administrator's transaction holds the account's row
    while the operation comes, and commits a change that refuses it: the credit floor raised to the
    balance (no money left for a call or a renewal), or the threshold raised to the balance (the
    settle must tell it). The statement, waiting for that row, sees the change under the lock, undoes
    what it wrote and hands the operation to its program, whose answer is the one given."""
    prefix = f"race-{op}"

    async def go() -> None:
        pg = PostgresLedger(pg_url, writers=1)
        async with pg:
            account = (await _setup(pg, prefix))[0]
            if op != "reserve":
                assert (await pg.reserve(f"{prefix}-c1", account, "201", MONEY, NOW, NOW + 90, "d")).ok
            change = "threshold = balance" if op == "settle" else "floor = balance"
            admin = await asyncpg.connect(pg_url)
            try:
                held = admin.transaction()
                await held.start()
                await admin.execute(f"UPDATE accounts SET {change} WHERE id = $1", account)
                work: Awaitable[Any]
                if op == "reserve":
                    work = pg.reserve(f"{prefix}-c1", account, "201", MONEY, NOW, NOW + 90, "d")
                elif op == "extend":
                    work = pg.extend(f"{prefix}-c1", MONEY, NOW + 30, NOW + 120)
                else:
                    work = pg.settle(f"{prefix}-c1", MONEY, CallDetails(NOW, NOW + 40), NOW + 40)
                task = asyncio.ensure_future(work)
                for _ in range(500):  # until the statement waits for the row the transaction holds
                    waiting = await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                    )
                    if waiting or task.done():
                        break
                    await asyncio.sleep(0.01)
                assert waiting == 1 and not task.done()
                await held.commit()
            finally:
                await admin.close()
            got: Any = await task
            assert pg.lone_handed_back == 1  # undone under the lock, not written
            if op == "reserve":
                assert not got.ok and got.refusal is not None
                again = await pg.reserve(f"{prefix}-c2", account, "201", MONEY, NOW, NOW + 90, "d")
                assert again == got  # the program's answer, and the look's (no hand-back this time)
            elif op == "extend":
                assert got is not None and not got.ok
                assert await pg.extend(f"{prefix}-c1", MONEY, NOW + 30, NOW + 120) == got
            else:
                assert got.settled and got.crossed_threshold  # the notice the look did not see coming
            assert pg.lone_handed_back == pg.races == 1  # the engine's rating_ledger_races_total
            assert [p for p in await pg.check() if p.account_id.startswith(prefix)] == []

    asyncio.run(go())


def test_a_batch_answers_its_refusals_itself(pg_url: str) -> None:
    """Ten calls at once on an account with money for five, then renewals it cannot pay, and calls a
    non-chargeable extension, a cap and a call limit refuse: each refusal is answered by the
    function, with the reason its program gives, no program run and nothing held (an account that
    has run out refuses every call of every extension, and each hand-back cost a program and
    another call of the function). The first calls of an extension that has no row, refused by an
    account with no money, leave no row (the function made it, as the program would, and deletes it
    again), and no error in PostgreSQL's log."""

    async def run() -> None:
        pg = PostgresLedger(pg_url, writers=1)
        async with pg:
            await pg.create_account("few", AccountSettings("office-fr", "EUR"), now=NOW)
            await pg.topup("few", 5 * MONEY, "few-opening", now=NOW)
            await pg.create_account("none", AccountSettings("office-fr", "EUR"), now=NOW)
            await pg.set_extension("few", "210", ExtensionSettings(chargeable=False))
            await pg.set_extension("few", "211", ExtensionSettings(daily_cap=MONEY // 2))
            await pg.set_extension("few", "212", ExtensionSettings(max_calls=1))
            for ext in ("201", "210", "211", "212"):  # each row, and the zone, known to this engine
                await pg.reserve(f"few-{ext}", "few", ext, 1, NOW)
                await pg.release(f"few-{ext}", NOW)
            assert (await pg.reserve("few-212-up", "few", "212", 1, NOW)).ok
            other = PostgresLedger(pg_url, writers=1)  # another engine's administrator: a row this one does not know
            async with other:
                await other.set_extension("few", "213", ExtensionSettings())
            assert ("few", "213") not in pg.zones.with_rows
            held = await asyncio.gather(
                *(pg.reserve(f"few-{i}", "few", "201", MONEY, NOW) for i in range(1, 11)),
                pg.reserve("few-213", "few", "213", MONEY, NOW),
            )
            assert sum(h.ok for h in held) == 4  # the fifth's money holds 212's call, and its 1
            assert {h.refusal for h in held if not h.ok} == {Refusal.INSUFFICIENT_FUNDS}
            assert (await pg.extension("few", "213")) is not None  # not made by the batch: not deleted
            held = held[:10]
            ok = [f"few-{i}" for i, h in enumerate(held, start=1) if h.ok]
            renewed = await asyncio.gather(*(pg.extend(c, MONEY, NOW + 30) for c in ok))
            assert [(r.ok, r.refusal) for r in renewed] == [(False, Refusal.INSUFFICIENT_FUNDS)] * 4
            await pg.release(ok[0], NOW + 40)  # money for a call again: now the extensions' rules refuse
            others = await asyncio.gather(
                pg.reserve("few-w", "few", "201", 1, NOW + 40),
                pg.reserve("few-x", "few", "210", 1, NOW + 40),
                pg.reserve("few-y", "few", "211", MONEY, NOW + 40),
                pg.reserve("few-z", "few", "212", 1, NOW + 40),
            )
            assert [h.refusal for h in others] == [
                None,
                Refusal.EXTENSION_NOT_ALLOWED,
                Refusal.CAP_REACHED,
                Refusal.TOO_MANY_CALLS,
            ]
            assert (pg.slow, pg.batches_handed_back) == (0, 0)  # every refusal answered by the function
            account = await pg.account("few")
            assert (account.reserved, account.live_calls) == (3 * MONEY + 2, 5)
            first = await asyncio.gather(*(pg.reserve(f"none-{i}", "none", "209", MONEY, NOW) for i in range(6)))
            assert {h.refusal for h in first} == {Refusal.INSUFFICIENT_FUNDS}
            assert await pg.extension("none", "209") is None  # a refused first call leaves no row
            assert (pg.slow, pg.batches_handed_back, pg.lone_handed_back, pg.function_failures) == (0, 0, 0, 0)
            assert await pg.check() == []

    asyncio.run(run())


@pytest.mark.parametrize("op", ["reserve", "extend", "release", "settle"])
def test_an_account_s_new_time_zone_sends_a_lone_operation_to_its_program_without_an_error(
    pg_url: str, op: str
) -> None:
    """Another engine's administrator moved the account to another time zone while a call was up:
    this engine computed the call's day in the old one. The one statement sees it before it writes,
    and the program answers (with the days of the new zone), with no error in PostgreSQL's log; the
    statement says the zone it found, so the engine's next operation on the account goes right."""
    prefix = f"zone-{op}"

    async def go() -> None:
        pg = PostgresLedger(pg_url, writers=1)
        async with pg:
            account = (await _setup(pg, prefix))[0]
            assert (await pg.reserve(f"{prefix}-c1", account, "201", MONEY, NOW, NOW + 90, "d")).ok
            admin = await asyncpg.connect(pg_url)
            try:
                await admin.execute("UPDATE accounts SET timezone = 'Asia/Tokyo' WHERE id = $1", account)
            finally:
                await admin.close()
            if op == "reserve":
                got: Any = await pg.reserve(f"{prefix}-c2", account, "201", MONEY, NOW, NOW + 90, "d")
                assert got.ok
            elif op == "extend":
                got = await pg.extend(f"{prefix}-c1", MONEY, NOW + 30, NOW + 120)
                assert got.ok
            elif op == "release":
                assert await pg.release(f"{prefix}-c1", NOW + 30)
            else:
                got = await pg.settle(f"{prefix}-c1", MONEY, CallDetails(NOW, NOW + 40), NOW + 40)
                assert got.settled
            assert (pg.lone_handed_back, pg.function_failures) == (0, 0)  # the look saw it: no error
            assert pg.zones.of_account[account] == "Asia/Tokyo"  # said by the statement
            in_one = pg.lone_in_one
            assert (await pg.reserve(f"{prefix}-c3", account, "201", MONEY, NOW, NOW + 90, "d")).ok
            assert pg.lone_in_one == in_one + 1  # in one statement again, with the new zone's day
            assert [p for p in await pg.check() if p.account_id.startswith(prefix)] == []

    asyncio.run(go())
