"""PostgreSQL ledger through asyncpg, for several engines sharing accounts.

Each program runs in its own transaction on a pooled connection. Correctness across engines
comes from the conditional UPDATEs in the programs (`… WHERE balance − reserved − floor ≥ amount`),
not from which engine took the call. A settle racing another engine's settle of the same call
waits on the reservation row it deletes, then finds it gone and the call already settled.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg

from . import programs as P
from .base import Ledger
from .models import LedgerError
from .schema import upgrade_steps

T = TypeVar("T")
_PLACEHOLDER = re.compile(r"\?")
RETRIES = 3
CONNECT_TIMEOUT = 10.0
_MIGRATION_LOCK = 0x72617465  # pg_advisory_xact_lock key: one migrator at a time


def to_pg(sql: str, _cache: dict[str, str] = {}) -> str:  # noqa: B006 - deliberate memo
    """`?` placeholders → `$1…$n` (our SQL has no `?` inside literals)."""
    out = _cache.get(sql)
    if out is None:
        counter = iter(range(1, 1000))
        out = _cache[sql] = _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)
    return out


async def run_program(conn: Any, program: P.Program[T]) -> T:
    try:
        sql, params, want = next(program)
        while True:
            sql = to_pg(sql)
            result: Any
            if want == "one":
                result = await conn.fetchrow(sql, *params)
            elif want == "all":
                result = await conn.fetch(sql, *params)
            else:
                status = await conn.execute(sql, *params)
                result = int(status.rsplit(" ", 1)[-1]) if status and status[-1].isdigit() else 0
            sql, params, want = program.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class PostgresLedger(Ledger):
    dialect = "postgres"

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        super().__init__()
        self.dsn = dsn
        self.min_size, self.max_size = min_size, max_size
        self._pool: asyncpg.Pool | None = None
        self._running = 0  # operations under way; close() lets them finish
        self._idle: asyncio.Event | None = None  # set by close(): no new operations, wait for these

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=self.min_size, max_size=self.max_size, timeout=CONNECT_TIMEOUT
        )
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                if not self.create and await conn.fetchval("SELECT to_regclass('schema_version')") is None:
                    raise LedgerError(
                        "no ledger in this database: create an account first (rating-engine account create …)"
                    )
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                for version, step in upgrade_steps(current, "postgres"):
                    for sql in step:
                        await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise

    async def _run(self, program: Callable[..., P.Program[T]], *args: Any) -> T:
        if self._pool is None or self._idle is not None:
            raise RuntimeError("ledger is not open")
        self._running += 1
        try:
            return await self._run_in_pool(self._pool, program, *args)
        finally:
            self._running -= 1
            if self._running == 0 and self._idle is not None:
                self._idle.set()

    async def _run_in_pool(self, pool: asyncpg.Pool, program: Callable[..., P.Program[T]], *args: Any) -> T:
        for attempt in range(RETRIES):
            try:
                async with pool.acquire() as conn, conn.transaction():
                    return await run_program(conn, program(*args))
            except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _close(self) -> None:
        """Let the operations under way finish, then close."""
        if self._pool is not None:
            self._idle = asyncio.Event()
            if self._running:
                await self._idle.wait()
            await self._pool.close()
            self._pool = None
            self._idle = None
