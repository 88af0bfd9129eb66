"""Ledger backends for the contract tests: a fresh SQLite file, or a fresh PostgreSQL database.

PostgreSQL tests run against the server on 127.0.0.1:5432 (user postgres, trust auth) and
create and drop their own database; where no server answers they skip and say why, except under
CI (CI=true), where they must run: there a missing server fails them.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import pytest

from rating_engine.ledger import Ledger, make_ledger

PG_ADMIN = os.environ.get("RATING_ENGINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgres"]


def pg_url(dbname: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + dbname


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


_pg_reason: list[str] = []


def pg_unavailable() -> str:
    """Empty when the server answers; else the reason, checked once per run."""
    if not _pg_reason:
        try:
            asyncio.run(_admin("SELECT 1"))
            _pg_reason.append("")
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            _pg_reason.append(f"no PostgreSQL server at {PG_ADMIN}: {exc}")
    return _pg_reason[0]


@contextmanager
def pg_database(options: str = "") -> Iterator[str]:
    """A database of its own, dropped after; `options` are CREATE DATABASE's (a collation, say)."""
    reason = pg_unavailable()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
    if reason:
        pytest.skip(reason)
    name = f"rating_engine_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f"CREATE DATABASE {name} {options}"))
    try:
        yield pg_url(name)
    finally:
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        with pg_database() as url:
            yield url


async def until_settled(ledger: Ledger, seconds: float = 10.0) -> bool:
    """Give the engines time to settle or release what is still reserved (they do after Asterisk's
    Hangup); whether nothing is reserved any more."""

    async def nothing_reserved() -> bool:
        return await ledger.reservations() == []

    return await until(nothing_reserved, seconds)


async def raw_sql(url: str, sql: str) -> None:
    """Write behind the ledger's back (to prove its checks), on either backend."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql)
        return
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def write_lock_held(url: str, account_id: str) -> AsyncIterator[None]:
    """Someone else holding what a reservation on `account_id` must write, until the block ends:
    SQLite's write lock (a transaction begun IMMEDIATE on another connection), or the account's
    row on PostgreSQL (`FOR UPDATE` in an open transaction). A slow or stuck database, as the
    engine sees it: its statements wait."""
    if url.startswith("sqlite:///"):
        blocker = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            yield
        finally:
            blocker.close()  # its transaction rolled back
        return
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            assert await conn.fetchval("SELECT id FROM accounts WHERE id = $1 FOR UPDATE", account_id) == account_id
            yield
    finally:
        await conn.close()


async def until(condition: Callable[[], Awaitable[bool] | bool], seconds: float = 10.0) -> bool:
    """Whether `condition` (a test, or a coroutine's) came true within `seconds`, asked every 50 ms."""

    async def holds() -> bool:
        got = condition()
        return bool(await got) if inspect.isawaitable(got) else bool(got)

    for _ in range(int(seconds / 0.05)):
        if await holds():
            return True
        await asyncio.sleep(0.05)
    return await holds()


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Ledger]:
    ledger = make_ledger(url)
    await ledger.open()
    try:
        yield ledger
    finally:
        await ledger.close()
