"""PostgreSQL's schema where it differs from SQLite's: since version 8 the tables every call writes
name their account without a foreign key, and a trigger keeps what the keys guarded (an account is
never deleted, emptied or renamed); since version 9 the columns that name things compare byte by
byte (collation "C"), as SQLite's do, whatever the database's collation. A ledger written at an
earlier version is brought to the latest on open."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import asyncpg
import pytest

from benchmarks.bench_pg_instructions import LINGUISTIC
from rating_engine.ledger import AccountSettings, CallDetails, ExtensionSettings, LedgerError
from rating_engine.ledger.postgres import _MIGRATION_LOCK, NO_FSYNC, NOT_DURABLE, PostgresLedger
from rating_engine.ledger.schema import C_COLUMNS, CALL_TABLES, LATEST, migrations, statements

from .helpers import EUR
from .ledgers import opened, pg_database
from .pg_server import private_postgres

NOW = 1_795_535_109


@pytest.fixture
def url() -> Iterator[str]:
    with pg_database() as url:
        yield url


async def _foreign_keys(conn: asyncpg.Connection) -> set[str]:
    found = await conn.fetch(
        "SELECT conrelid::regclass::text AS t FROM pg_constraint"
        " WHERE contype = 'f' AND confrelid = 'accounts'::regclass"
    )
    return {r["t"] for r in found}


async def _collations(conn: asyncpg.Connection) -> dict[tuple[str, str], str | None]:
    found = await conn.fetch(
        "SELECT table_name, column_name, collation_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND data_type = 'text'"
    )
    return {(r["table_name"], r["column_name"]): r["collation_name"] for r in found}


async def _at_version(conn: asyncpg.Connection, last: int) -> None:
    """The schema as that version of rating-engine left it."""
    await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, script in migrations("postgres"):
        if version <= last:
            for sql in statements(script):
                await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)


async def _version_7(conn: asyncpg.Connection) -> None:
    await _at_version(conn, 7)
    assert await _foreign_keys(conn) >= set(CALL_TABLES)  # as version 7 made them


async def _a_settled_call(ledger: PostgresLedger) -> None:
    await ledger.create_account("acme", AccountSettings("office-fr", "EUR"), now=NOW)
    await ledger.topup("acme", 10 * EUR, "opening", now=NOW)
    assert (await ledger.reserve("c1", "acme", "201", EUR, now=NOW)).ok
    assert (await ledger.settle("c1", EUR // 2, CallDetails(dialed="0899123456"), now=NOW + 60)).settled
    assert (await ledger.reserve("c2", "acme", "201", EUR, now=NOW + 61)).ok  # still live


def test_an_account_is_never_deleted_renamed_or_emptied(url: str) -> None:
    async def run() -> None:
        async with opened(url) as ledger:
            assert isinstance(ledger, PostgresLedger)
            await _a_settled_call(ledger)
        conn = await asyncpg.connect(url)
        try:
            assert await _foreign_keys(conn) == {"extensions", "topups", "audit", "users", "cards", "notices"}
            for sql in (
                "DELETE FROM accounts WHERE id = 'acme'",
                "UPDATE accounts SET id = 'acme2' WHERE id = 'acme'",
                "TRUNCATE accounts CASCADE",
            ):
                with pytest.raises(asyncpg.RestrictViolationError, match="never deleted or renamed"):
                    await conn.execute(sql)
            # naming the id without changing it (as no code here does, but a tool might) is not a rename
            assert await conn.execute("UPDATE accounts SET id = id, plan = plan WHERE id = 'acme'") == "UPDATE 1"
        finally:
            await conn.close()
        async with opened(url) as ledger:
            assert [r.call_id for r in await ledger.reservations()] == ["c2"]
            assert await ledger.check() == []

    asyncio.run(run())


def test_a_version_7_ledger_is_brought_to_the_latest_version_with_its_rows(url: str) -> None:
    """A ledger as version 7 wrote it (its keys, a settled call, a live one) is upgraded on open:
    the keys of the call's tables go, the rows stay, and the live call settles on the new schema."""
    left = 10 * EUR - EUR // 2
    rows = [
        "INSERT INTO accounts (id, plan, currency, balance, reserved, live_calls, created_at)"
        f" VALUES ('acme', 'office-fr', 'EUR', {left}, {EUR}, 1, {NOW})",
        "INSERT INTO journal (account_id, at, entry, amount, reference, balance_after) VALUES"
        f" ('acme', {NOW}, 'topup', {10 * EUR}, 'opening', {10 * EUR}),"
        f" ('acme', {NOW + 60}, 'debit', {-(EUR // 2)}, 'c1', {left})",
        f"INSERT INTO extensions (account_id, ext, reserved, live_calls) VALUES ('acme', '201', {EUR}, 1)",
        "INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at)"
        f" VALUES ('c2', 'acme', '201', {EUR}, {NOW}, {NOW})",
        "INSERT INTO activity (call_id, account_id, ext, started_at, ended_at, dialed, e164, destination, kind,"
        " billable_seconds, cost, reserved, balance_after, day) VALUES ('c1', 'acme', '201',"
        f" {NOW}, {NOW + 60}, '0899123456', '+33899123456', 'premium', 'premium_rate', 60, {EUR // 2}, {EUR},"
        f" {left}, '2026-11-25')",
    ]

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await _version_7(conn)
            for sql in rows:
                await conn.execute(sql)
        finally:
            await conn.close()
        async with opened(url) as ledger:
            assert isinstance(ledger, PostgresLedger)
            assert await ledger.check() == []  # the rows as version 7 left them
            assert [r.call_id for r in await ledger.reservations()] == ["c2"]
            assert (await ledger.settle("c2", EUR // 4, CallDetails(dialed="0899123456"), now=NOW + 120)).settled
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT MAX(version) FROM schema_version") == LATEST == 9
            assert await _foreign_keys(conn) & set(CALL_TABLES) == set()
            with pytest.raises(asyncpg.RestrictViolationError):
                await conn.execute("DELETE FROM accounts")
        finally:
            await conn.close()
        async with opened(url) as ledger:
            assert (await ledger.account("acme")).balance == left - EUR // 4
            assert sorted(r.call_id for r in await ledger.activity("acme")) == ["c1", "c2"]
            assert await ledger.reservations() == []
            assert await ledger.check() == []

    asyncio.run(run())


def test_an_upgrade_that_cannot_have_its_tables_soon_changes_nothing_and_says_so(url: str) -> None:
    """Another engine's long transaction holds a table the upgrade alters: the upgrade gives up after
    its lock timeout instead of queueing every other engine's calls behind it, and leaves version 7
    as it was; once the table is free, the next start upgrades."""

    async def run() -> None:
        conn = await asyncpg.connect(url)
        busy = await asyncpg.connect(url)
        try:
            await _version_7(conn)
            await busy.execute("BEGIN; LOCK TABLE journal IN ACCESS SHARE MODE")  # a long read of the journal

            async def start() -> None:
                async with opened(url):
                    pass

            started = time.monotonic()
            with pytest.raises(LedgerError, match="could not be upgraded from version 7: its tables stayed busy"):
                await asyncio.wait_for(start(), 15)  # without a lock timeout it would wait as long as the reader
            assert time.monotonic() - started < 10
            assert await conn.fetchval("SELECT MAX(version) FROM schema_version") == 7
            assert await _foreign_keys(conn) >= set(CALL_TABLES)
            await busy.execute("COMMIT")
            async with opened(url):
                pass
            assert await conn.fetchval("SELECT MAX(version) FROM schema_version") == LATEST
            assert await _foreign_keys(conn) & set(CALL_TABLES) == set()
        finally:
            await busy.close()
            await conn.close()

    asyncio.run(run())


def test_an_engine_starting_holds_the_upgrade_lock_only_while_it_upgrades(url: str) -> None:
    """What an engine reads at start (each account's time zone, the extensions with rows) is read
    after the upgrade's transaction: an engine whose reads wait on a busy table does not keep
    every other engine starting at the same moment waiting for the upgrade lock behind it."""

    async def run() -> None:
        async with opened(url) as ledger:
            await ledger.create_account("acme", AccountSettings("office-fr", "EUR"), now=NOW)
        busy = await asyncpg.connect(url)
        other = await asyncpg.connect(url)
        try:
            await busy.execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")  # e.g. a VACUUM FULL

            async def start() -> None:
                async with opened(url) as ledger:
                    assert isinstance(ledger, PostgresLedger)
                    assert "acme" in ledger.zones.of_account  # read once the table was free

            starting = asyncio.create_task(start())
            waiting = ""
            for _ in range(200):
                waiting = await other.fetchval(
                    "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if waiting:
                    break
                await asyncio.sleep(0.025)
            assert waiting is not None and "FROM accounts" in waiting  # the start's read waits for the table
            assert await other.fetchval("SELECT pg_try_advisory_lock($1)", _MIGRATION_LOCK)  # the lock is free
            await other.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
            await busy.execute("COMMIT")
            await asyncio.wait_for(starting, 15)
        finally:
            await busy.close()
            await other.close()

    asyncio.run(run())


IDS = ["acme", "Zed", "b10", "b9", "b-2", "b_3", "B1"]


async def _indexes_in_order(conn: asyncpg.Connection) -> list[str]:
    """Every B-tree index of the ledger, checked against its own collation by amcheck."""
    await conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    names = await conn.fetch(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND a.amname = 'btree'"
    )
    for r in names:
        await conn.execute("SELECT bt_index_parent_check($1::regclass, true)", r["relname"])
    return sorted(r["relname"] for r in names)


def test_names_compare_byte_by_byte_whatever_the_databases_collation() -> None:
    """On a database that sorts linguistically, accounts and extensions still come in the order
    SQLite gives them (their bytes'), and every naming column says collation "C"."""

    async def run(url: str) -> None:
        async with opened(url) as ledger:
            for account_id in IDS:
                await ledger.create_account(account_id, AccountSettings("office-fr", "EUR"), now=NOW)
            for ext in ("201", "Z1", "a1", "b", "#1"):
                await ledger.set_extension("acme", ext, ExtensionSettings())
            assert [a.id for a in await ledger.accounts()] == sorted(IDS)
            assert [e.ext for e in await ledger.extensions("acme")] == ["#1", "201", "Z1", "a1", "b"]
        conn = await asyncpg.connect(url)
        try:
            # the database's own order is not that one: without version 9, so would be the ledger's
            assert await conn.fetchval("SELECT array_agg(x ORDER BY x) FROM unnest($1::text[]) x", IDS) != sorted(IDS)
            collations = await _collations(conn)
            for table, columns in C_COLUMNS.items():
                for column in columns:
                    assert collations[(table, column)] == "C", (table, column)
            assert collations[("accounts", "plan")] is None  # the others keep the database's
        finally:
            await conn.close()

    with pg_database(LINGUISTIC) as url:
        asyncio.run(run(url))


def test_a_version_8_ledger_on_such_a_database_is_brought_to_9_with_its_indexes_rebuilt() -> None:
    """Version 8 built its indexes in the database's order; version 9 changes their collation, which
    is only sound if each index is rebuilt in the new order: amcheck finds every one consistent, the
    live call settles, and the ledger checks."""

    async def run(url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await _at_version(conn, 8)
            for n, account_id in enumerate(IDS):
                await conn.execute(
                    "INSERT INTO accounts (id, plan, currency, balance, reserved, live_calls, created_at)"
                    " VALUES ($1, 'office-fr', 'EUR', $2, $3, $4, $5)",
                    account_id, 10 * EUR, EUR if n == 0 else 0, 1 if n == 0 else 0, NOW,
                )  # fmt: skip
                await conn.execute(
                    "INSERT INTO journal (account_id, at, entry, amount, reference, balance_after)"
                    " VALUES ($1, $2, 'topup', $3, $4, $3)",
                    account_id, NOW, 10 * EUR, f"opening-{account_id}",
                )  # fmt: skip
            await conn.execute(
                f"INSERT INTO extensions (account_id, ext, reserved, live_calls) VALUES ('acme', '201', {EUR}, 1)"
            )
            await conn.execute(
                "INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at)"
                f" VALUES ('c2', 'acme', '201', {EUR}, {NOW}, {NOW})"
            )
            assert {c for (_t, _c), c in (await _collations(conn)).items()} == {None}
        finally:
            await conn.close()
        async with opened(url) as ledger:
            assert (await ledger.settle("c2", EUR // 4, CallDetails(dialed="0899123456"), now=NOW + 120)).settled
            assert [a.id for a in await ledger.accounts()] == sorted(IDS)
            assert await ledger.check() == []
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT MAX(version) FROM schema_version") == LATEST == 9
            assert (await _collations(conn))[("activity", "call_id")] == "C"
            assert "accounts_pkey" in await _indexes_in_order(conn)
            with pytest.raises(asyncpg.RestrictViolationError):  # the trigger made again around the change
                await conn.execute("UPDATE accounts SET id = 'acme2' WHERE id = 'acme'")
        finally:
            await conn.close()

    with pg_database(LINGUISTIC) as url:
        asyncio.run(run(url))


def test_an_upgrade_that_the_database_refuses_changes_nothing_and_says_what_stood_in_its_way(url: str) -> None:
    """An operator's own view on the activity (a report) depends on a column version 9 changes: the
    upgrade stops with PostgreSQL's reason, naming the view, and leaves version 8 as it was."""

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await _at_version(conn, 8)
            await conn.execute(
                "CREATE VIEW monthly_report AS SELECT account_id, SUM(cost) AS cost FROM activity GROUP BY 1"
            )
            with pytest.raises(LedgerError, match=r"from version 8 to 9: .*view.*monthly_report.*nothing was changed"):
                async with opened(url):
                    pass
            assert await conn.fetchval("SELECT MAX(version) FROM schema_version") == 8
            assert (await _collations(conn))[("activity", "account_id")] is None
            assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname = 'accounts_stay'") == 1
            await conn.execute("DROP VIEW monthly_report")
            async with opened(url):
                pass
            assert await conn.fetchval("SELECT MAX(version) FROM schema_version") == LATEST
        finally:
            await conn.close()

    asyncio.run(run())


async def test_a_ledger_whose_commits_are_not_durable_says_so_at_open(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With synchronous_commit off, PostgreSQL acknowledges a commit before it is on disk: a crash
    of the server can then take back reservations and settlements the engine was told were done."""
    caplog.set_level(logging.WARNING, logger="rating_engine.ledger")

    def said() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == NOT_DURABLE]

    async with PostgresLedger(pg_url):
        pass
    assert said() == []  # the server's default: durable
    admin = await asyncpg.connect(pg_url)
    try:
        name = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")
    finally:
        await admin.close()
    async with PostgresLedger(pg_url):
        pass
    [record] = said()
    assert record.levelno == logging.WARNING and record.__dict__["synchronous_commit"] == "off"


async def test_a_server_without_fsync_is_said_at_open(caplog: pytest.LogCaptureFixture) -> None:
    """fsync off (a test rig's setting, the tests' own private server here): the machine's crash can
    lose or corrupt the whole ledger, which outweighs the commit's own setting."""
    caplog.set_level(logging.WARNING, logger="rating_engine.ledger")
    with private_postgres() as server:
        async with PostgresLedger(server.url):
            pass
    said = [r.getMessage() for r in caplog.records if r.getMessage() in (NO_FSYNC, NOT_DURABLE)]
    assert said == [NO_FSYNC]
