"""SQLite ledger through aiosqlite, with group commit.

One writer task takes every program queued since its last commit and runs them in a single
transaction in one trip to aiosqlite's database thread, then one COMMIT with
synchronous=FULL, then every waiter is answered. Nothing is acknowledged before its commit.
A program that fails is undone alone (see `_apply_batch`); the others still commit.

aiosqlite has no public call for "run this function in the database thread"; we use its
`Connection._execute(fn)` in `_in_db_thread` only, and fail loudly at open if it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ..durable import make_dirs, sync_dir
from . import programs as P
from . import sqlite_batch
from .base import Ledger
from .call_path import FAST_PROGRAMS, validate
from .models import LedgerError
from .schema import upgrade_steps

T = TypeVar("T")
log = logging.getLogger("rating_engine.ledger")
BATCH_MAX = 512
WALK_FROM = 2
"""A lone call-path operation runs as its program: four reads and the writes of a walk cost more."""


def run_program_sync(cur: sqlite3.Cursor, program: P.Program[T]) -> T:
    """Drive one program on a sqlite3 cursor (in the database thread; one cursor per batch)."""
    try:
        sql, params, want = next(program)
        while True:
            cur.execute(sql, params)
            result: Any
            if want == "count":
                result = cur.rowcount
            elif want == "one":
                result = cur.fetchone()
            else:
                result = cur.fetchall()
            sql, params, want = program.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class _Outcome:
    __slots__ = ("error", "value")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error


Job = tuple[Callable[..., P.Program[Any]], tuple[Any, ...]]


class _Replay(Exception):
    """A program raised after it wrote: the batch must run again, each program in a savepoint."""


class Counts:
    """What the database thread did with the call path's operations (read by the tests and benchmarks)."""

    def __init__(self) -> None:
        self.walked = 0
        """Operations run by `sqlite_batch.walk`."""
        self.handed_back = 0
        """Operations the walk handed to their program."""
        self.walk_failures = 0
        """Batches the walk failed on (a bug): run again as programs."""


def _apply_batch(
    conn: sqlite3.Connection, batch: list[Job], walk: bool, counts: Counts, kept: sqlite_batch.Kept | None = None
) -> list[_Outcome]:
    """Run a batch in one transaction and commit it.

    Fast way first: the call path's operations walked together (`sqlite_batch`), no savepoints,
    since a refusal gives back what it took in SQL and most errors are raised before a program
    writes. If a program raises after writing, or the walk fails, everything is rolled back and
    the batch runs again as programs with a savepoint each, so that a failing one alone is undone.
    Programs are deterministic, and the walk answers as they do, so the others get the same answers.
    `kept`: the rows the walks ended with, for the next walk (dropped unless the batch commits).
    """
    kept = kept if walk else None
    try:
        return _run_batch(conn, batch, savepoints=False, walk=walk, counts=counts, kept=kept)
    except BaseException as exc:
        if kept is not None:
            kept.clear()
        if not isinstance(exc, _Replay):
            raise
    return _run_batch(conn, batch, savepoints=True, walk=False, counts=counts)


def _run_batch(
    conn: sqlite3.Connection,
    batch: list[Job],
    *,
    savepoints: bool,
    walk: bool,
    counts: Counts,
    kept: sqlite_batch.Kept | None = None,
) -> list[_Outcome]:
    outcomes: list[_Outcome] = []
    cur = conn.cursor()
    cur.execute("BEGIN IMMEDIATE")
    try:
        if kept is not None:
            kept.check(cur)
        k = 0
        while k < len(batch):
            if walk:
                ops = _walkable(batch, k)
                if len(ops) >= WALK_FROM:
                    try:
                        results, ran = sqlite_batch.walk(cur, ops, kept)
                    except sqlite3.OperationalError as exc:  # the disk, not the walk: each program meets it
                        raise _Replay from exc
                    except Exception as exc:
                        counts.walk_failures += 1
                        log.exception("the call path's walk failed; running the batch as programs")
                        raise _Replay from exc
                    counts.walked += ran
                    outcomes.extend(_Outcome(value) for value in results)
                    k += ran
                    if ran == len(ops):
                        continue
                    counts.handed_back += 1  # the next one is its program's
            fn, args = batch[k]
            k += 1
            if savepoints:
                cur.execute("SAVEPOINT op")
            wrote_before = conn.total_changes
            try:
                outcomes.append(_Outcome(run_program_sync(cur, fn(*args))))
            except Exception as exc:
                if savepoints:
                    cur.execute("ROLLBACK TO op")
                elif conn.total_changes != wrote_before:
                    raise _Replay from exc
                outcomes.append(_Outcome(error=exc))
            if savepoints:
                cur.execute("RELEASE op")
            if kept is not None and conn.total_changes != wrote_before:
                kept.clear()  # the program wrote: the rows kept may not be the file's any more
        cur.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _walkable(batch: list[Job], start: int) -> list[sqlite_batch.Op]:
    """The call path's operations from `start` on, up to the first that is not one, or that its
    program would refuse before writing anything (a bad amount: the program raises it)."""
    ops: list[sqlite_batch.Op] = []
    for fn, args in batch[start:]:
        op = FAST_PROGRAMS.get(fn)
        if op is None:
            break
        try:
            validate(op, args)
        except Exception:
            break
        ops.append((op, args))
    return ops


def _migrate(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
    current = int(row["v"] or 0)
    for version, step in upgrade_steps(current, "sqlite"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in step:
                conn.execute(sql)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        current = version
    return current


def _create_private(path: Path, create: bool) -> None:
    """Balances and dialed numbers are nobody else's business: a new ledger file is 0600 in a
    0700 directory (SQLite gives its -wal and -shm files the database file's mode)."""
    if path.exists():
        return
    if not create:
        raise LedgerError(f"no ledger at {path}: create an account first (rating-engine account create …)")
    make_dirs(path.parent)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    sync_dir(path.parent)  # SQLite makes its -wal file's name durable, not this one's


def _cannot_open(path: str, exc: sqlite3.Error) -> str:
    """Say which file, and the likely cause an operator can act on."""
    where = Path(path)
    if path != ":memory:" and not (os.access(where, os.W_OK) and os.access(where.parent, os.W_OK)):
        return f"the ledger {path} cannot be written (a read-only file, directory or file system): {exc}"
    return f"cannot open the ledger {path}: {exc}"


class SqliteLedger(Ledger):
    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        batch_max: int = BATCH_MAX,
        walk: bool = True,
    ) -> None:
        super().__init__()
        self.path = str(path)
        self.walk = walk
        """False: every operation as its program (the benchmark's and the equivalence test's other way)."""
        self.counts = Counts()
        self.kept = sqlite_batch.Kept()
        """The rows the last walks ended with: the database thread's alone."""
        self.synchronous = synchronous
        self.batch_max = batch_max
        self._db: aiosqlite.Connection | None = None
        # Waiting programs, and their callers' futures, in two lists: one is the batch as is.
        self._jobs: list[Job] = []
        self._futures: list[asyncio.Future[Any]] = []
        self._wake: asyncio.Future[None] | None = None  # set while the writer waits for work
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0

    @property
    def fallbacks(self) -> int:
        return self.counts.walk_failures

    async def _in_db_thread(self, fn: Any, *args: Any) -> Any:
        assert self._db is not None
        conn = self._db._conn
        return await self._db._execute(fn, conn, *args)  # type: ignore[no-untyped-call]

    async def open(self) -> None:
        if self.path != ":memory:":
            _create_private(Path(self.path), self.create)
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise LedgerError(_cannot_open(self.path, exc)) from None
        if not hasattr(self._db, "_execute"):  # pragma: no cover - guards an aiosqlite upgrade
            raise RuntimeError("this aiosqlite has no Connection._execute; pin aiosqlite<0.23")
        self._db.row_factory = sqlite3.Row
        try:
            for pragma in (
                "journal_mode = WAL",
                f"synchronous = {self.synchronous}",
                "busy_timeout = 10000",
                "foreign_keys = ON",
            ):
                await self._db.execute(f"PRAGMA {pragma}")
            await self._in_db_thread(_migrate)
        except BaseException as exc:
            await self._db.close()  # its thread too: else the process cannot exit
            self._db = None
            if isinstance(exc, sqlite3.Error):
                raise LedgerError(_cannot_open(self.path, exc)) from None
            raise
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                if self._closing:
                    return
                self._wake = loop.create_future()
                await self._wake
                continue
            if len(self._jobs) <= self.batch_max:
                jobs, futures, self._jobs, self._futures = self._jobs, self._futures, [], []
            else:
                jobs, futures = self._jobs[: self.batch_max], self._futures[: self.batch_max]
                del self._jobs[: self.batch_max], self._futures[: self.batch_max]
            started = time.perf_counter()
            try:
                outcomes = await self._in_db_thread(_apply_batch, jobs, self.walk, self.counts, self.kept)
            except Exception as exc:  # the commit itself failed: nobody's change happened
                for fut in futures:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            finally:
                self._batch_took(time.perf_counter() - started, len(jobs))
            self.commits += 1
            for (fn, args), fut, outcome in zip(jobs, futures, outcomes, strict=True):
                if fut.done():
                    if fut.cancelled() and fn is P.reserve and outcome.error is None and outcome.value.ok:
                        self._held_too_late(args[0])
                    continue
                if outcome.error is not None:
                    fut.set_exception(outcome.error)
                else:
                    fut.set_result(outcome.value)

    async def _run(self, program: Callable[..., P.Program[T]], *args: Any) -> T:
        if self._writer is None or self._closing or self._writer.done():
            raise RuntimeError("ledger is not open")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append((program, args))
        self._futures.append(fut)
        self._wake_writer()
        return await fut

    def _wake_writer(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _close(self) -> None:
        """Answer everything already queued, then close."""
        if self._writer is not None:
            self._closing = True
            self._wake_writer()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
            self._closing = False
        if self._db is not None:
            await self._db.close()
            self._db = None
