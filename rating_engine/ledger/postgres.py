"""PostgreSQL ledger through asyncpg, for several engines sharing accounts.

The call path's operations (reserve, extend, release, settle, annotate) are queued and sent in
batches, one server-side function call per batch and one commit (see `pg_batch`); every other
operation runs as its program in its own transaction on a pooled connection. Nothing is
acknowledged before its commit. Correctness across engines comes from the rows each batch locks
in key order and from the conditional UPDATEs of the programs, not from which engine took the
call. A settle racing another engine's settle of the same call waits on the reservation row,
then finds it gone and the call already settled.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg

from ..contract import Refusal
from . import pg_batch, pg_lone, pg_node
from . import programs as P
from .base import Ledger
from .call_path import FAST_PROGRAMS, result, validate
from .models import Account, AccountSettings, Extension, ExtensionSettings, LedgerError, ReserveResult
from .pg_node import LOST, NodeHold
from .schema import upgrade_steps

T = TypeVar("T")
log = logging.getLogger("rating_engine.ledger")
_PLACEHOLDER = re.compile(r"\?")
RETRIES = 3
WRITERS = 2
"""Batches in flight at once: one is written while the other waits for its commit."""
READERS = 2
"""Batches of the authorization's read (account and extension) in flight at once."""
_READ_CALLERS = (
    f"SELECT k.e AS k_ext, {P.CALLER_COLUMNS} FROM unnest($1::text[], $2::text[]) AS k(a, e)"
    " JOIN accounts y ON y.id = k.a LEFT JOIN extensions x ON x.account_id = k.a AND x.ext = k.e"
)
"""The authorizations' reads of one moment, accounts and extensions together in one statement."""
BATCH_MAX = 256
SPLIT_FROM = 32
"""A batch this large runs as PARTS transactions side by side, one per group of its accounts."""
PARTS = 2
RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
CONNECT_TIMEOUT = 10.0
_MIGRATION_LOCK = 0x72617465  # pg_advisory_xact_lock key: one migrator at a time


_DURABLE = "SELECT current_setting('fsync') AS fsync, current_setting('synchronous_commit') AS synchronous_commit"
NOT_DURABLE = (
    "PostgreSQL's synchronous_commit is off for this ledger: a crash of the server can lose the last"
    " reservations and settlements it acknowledged, and their calls go unbilled; set it to on"
)
NO_FSYNC = (
    "PostgreSQL's fsync is off: a crash of its machine (power, kernel) can lose or corrupt the ledger,"
    " every account's balance and activity; set it to on"
)
"""Said at open, not overridden: the settings are the operator's (fsync the server's own), and a
session SET would outlive the engine's use of a connection behind a pooler in transaction mode."""


UPGRADE_LOCK_TIMEOUT = "1s"
"""How long a schema upgrade waits for the tables it alters. Its lock request queues every other
engine's statements on those tables behind it: under the default `answer_timeout` (2 s), so that the
calls held up meanwhile are still answered in time."""


async def _upgrade(conn: Any, current: int, steps: list[tuple[int, list[str]]]) -> None:
    """The schema brought from `current` to the latest, in the caller's transaction: all or nothing."""
    await conn.execute(f"SET LOCAL lock_timeout = '{UPGRADE_LOCK_TIMEOUT}'")
    try:
        for version, step in steps:
            for sql in step:
                await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
    except asyncpg.LockNotAvailableError as exc:
        raise LedgerError(
            f"the ledger's schema could not be upgraded from version {current}: its tables stayed busy"
            f" for {UPGRADE_LOCK_TIMEOUT} (other engines' transactions); nothing was changed, start again"
        ) from exc
    except asyncpg.PostgresError as exc:  # e.g. an operator's own view on a column the step changes
        reason = getattr(exc, "message", None) or str(exc)
        if getattr(exc, "detail", None):
            reason += f" ({exc.detail})"
        raise LedgerError(
            f"the ledger's schema could not be upgraded from version {current} to {version}: {reason};"
            " nothing was changed"
        ) from exc
    await conn.execute("SET LOCAL lock_timeout = 0")


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


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool: the ledger leaves no session state
    (no SET, LISTEN, cursor or session advisory lock; asyncpg still rolls back a transaction left
    open). asyncpg's default reset is one more round trip, and RESET ALL, after every batch."""


class _Job:
    __slots__ = ("args", "future", "op", "program")

    def __init__(self, op: str, program: Callable[..., P.Program[Any]], args: tuple[Any, ...]) -> None:
        self.op, self.program, self.args = op, program, args
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


def _answered(job: _Job, row: Any) -> Any:
    """What the batch function answered for `job`: done the common way, or refused and why."""
    if row["o_refusal"] is not None:
        return ReserveResult(False, Refusal(row["o_refusal"]))
    return result(job.op, job.args, row["o_a"], row["o_b"], row["o_c"])


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class PostgresLedger(Ledger):
    dialect = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        writers: int = WRITERS,
        batch_max: int = BATCH_MAX,
        batched: bool = True,
        split_from: int = SPLIT_FROM,
        lone_as_program: bool = True,
    ) -> None:
        super().__init__()
        self.dsn = dsn
        self.min_size, self.max_size = min_size, max_size
        self.writers, self.batch_max = writers, batch_max
        self.parts, self.split_from = PARTS, split_from
        """Transactions a batch of `split_from` operations or more is cut into, side by side."""
        self.batched = batched
        """False: every operation as its program, one transaction each (the benchmark's earlier way)."""
        self.lone_as_program = lone_as_program
        """A batch of one operation runs as its program (`_write_group`); False: as the function."""
        self.lone = 0
        """Batches of one operation run alone: as their program, or in one statement (`pg_lone`)."""
        self.lone_in_one = 0
        """Of those, reservations, renewals, releases and settles done by one statement (`pg_lone`)."""
        self.lone_handed_back = 0
        """Lone operations the one statement handed back to their program: each an ERROR line (and
        its statement) in PostgreSQL's log, and a rolled-back transaction in its statistics. Only a
        row changed between the statement's look and its lock makes one."""
        self.batches_handed_back = 0
        """Batches the function, asked for all or nothing, wrote nothing of (an operation to hand back):
        sent again in a transaction of ours. No error: the function says so in its last row."""
        self._pool: asyncpg.Pool | None = None
        self._running = 0  # operations under way; close() lets them finish
        self._idle: asyncio.Event | None = None  # set by close(): no new operations, wait for these
        self._jobs: list[_Job] = []
        self._work: asyncio.Event | None = None
        self._writer_tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.zones = pg_batch.Zones()
        self.batches = 0
        self.slow = 0
        """Operations of a batch the function handed back to their program."""
        self.function_failures = 0
        """Batches the function failed on (a bug): run again one operation at a time."""
        self._reads: list[tuple[str, str, asyncio.Future[Any]]] = []
        self._readers = 0
        self._read_tasks: set[asyncio.Task[None]] = set()
        self.read_batches = 0
        self._node: NodeHold | None = None
        self.node_check_every = pg_node.CHECK_EVERY

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=self.min_size, max_size=self.max_size, timeout=CONNECT_TIMEOUT, reset=_keep_session
        )
        try:
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                    if not self.create and await conn.fetchval("SELECT to_regclass('schema_version')") is None:
                        raise LedgerError(
                            "no ledger in this database: create an account first (rating-engine account create …)"
                        )
                    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                    current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                    steps = upgrade_steps(current, "postgres")
                    if steps:
                        await _upgrade(conn, current, steps)
                    await conn.execute(pg_batch.CREATE)
                    await conn.execute(pg_lone.CREATE)
                durable = await conn.fetchrow(_DURABLE)
                if durable["fsync"] == "off":
                    log.warning(NO_FSYNC, extra={"fsync": "off"})
                elif durable["synchronous_commit"] == "off":
                    log.warning(NOT_DURABLE, extra={"synchronous_commit": "off"})
                # Read after the upgrade lock is let go: an engine starting beside this one need not
                # wait for these reads too (they are hints: a wrong zone costs a batch a second call).
                for r in await conn.fetch(
                    "SELECT id, timezone, velocity_limit IS NOT NULL AS v FROM accounts LIMIT $1", pg_batch.Zones.LIMIT
                ):
                    self.zones.learn(r["id"], r["timezone"], r["v"])
                rows = await conn.fetch("SELECT account_id, ext FROM extensions LIMIT $1", pg_batch.Zones.LIMIT)
                self.zones.with_rows.update((r["account_id"], r["ext"]) for r in rows)
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        self._work = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._writer_tasks = [loop.create_task(self._write_loop()) for _ in range(max(1, self.writers))]

    async def _run(self, program: Callable[..., P.Program[T]], *args: Any) -> T:
        if self._pool is None or self._idle is not None or self._closing:
            raise RuntimeError("ledger is not open")
        op = FAST_PROGRAMS.get(program) if self.batched else None
        if op is not None:
            validate(op, args)
            job = _Job(op, program, args)
            self._jobs.append(job)
            assert self._work is not None
            self._work.set()
            return await job.future  # type: ignore[no-any-return]
        self._running += 1
        try:
            return await self._run_in_pool(self._pool, program, *args)
        finally:
            self._running -= 1
            if self._running == 0 and self._idle is not None:
                self._idle.set()

    async def create_account(self, account_id: str, settings: AccountSettings, now: int | None = None) -> Account:
        return self._zone_of(await super().create_account(account_id, settings, now))

    async def update_settings(
        self, account_id: str, settings: AccountSettings, actor: str = "", now: int | None = None
    ) -> Account:
        return self._zone_of(await super().update_settings(account_id, settings, actor, now))

    async def set_extension(self, account_id: str, ext: str, settings: ExtensionSettings) -> Extension:
        return self._row_of(await super().set_extension(account_id, ext, settings))

    def _row_of(self, extension: Extension) -> Extension:
        """An extension read or written has a row: its first reservation can go the fast way."""
        self.zones.has_row(extension.account_id, extension.ext)
        return extension

    def _zone_of(self, account: Account) -> Account:
        """Learn an account's zone as soon as it is seen: an operation sent with the wrong one costs
        its batch a second call of the function."""
        self.zones.learn(account.id, account.settings.timezone, account.settings.velocity_limit is not None)
        return account

    async def caller(self, account_id: str, ext: str) -> tuple[Account | None, Extension | None]:
        """An authorization's read of its account and extension (when the engine has none it can
        use): the reads waiting at one moment go together, one statement and no transaction for all
        of them, instead of four round trips each (a transaction's BEGIN, two SELECTs, COMMIT). The
        reserve that follows checks every limit, and the settings' revisions, again."""
        if not self.batched:
            return await super().caller(account_id, ext)
        if self._pool is None or self._idle is not None or self._closing:
            raise RuntimeError("ledger is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Account | None, Extension | None]] = loop.create_future()
        self._reads.append((account_id, ext, future))
        if self._readers < READERS:
            self._readers += 1
            self._running += 1  # close() waits for it
            task = loop.create_task(self._read_loop())
            self._read_tasks.add(task)
            task.add_done_callback(self._read_tasks.discard)
        return await future

    async def _read_loop(self) -> None:
        try:
            await asyncio.sleep(0)  # the reads of this turn of the loop join the batch
            while self._reads:
                batch, self._reads = self._reads[: self.batch_max], self._reads[self.batch_max :]
                try:
                    found = await self._read_batch({(a, e) for a, e, _ in batch})
                except Exception as exc:
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.read_batches += 1
                for a, e, future in batch:
                    if not future.done():
                        future.set_result(found[(a, e)])
        finally:
            self._readers -= 1
            self._running -= 1
            if self._running == 0 and self._idle is not None:
                self._idle.set()

    async def _read_batch(
        self, pairs: set[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[Account | None, Extension | None]]:
        assert self._pool is not None
        keys = list(pairs)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_READ_CALLERS, [a for a, _ in keys], [e for _, e in keys])
        found: dict[tuple[str, str], tuple[Account | None, Extension | None]] = dict.fromkeys(keys, (None, None))
        for r in rows:
            account, extension = P.caller_of(r)
            found[(account.id, r["k_ext"])] = (self._zone_of(account), extension and self._row_of(extension))
        return found

    async def _run_in_pool(self, pool: asyncpg.Pool, program: Callable[..., P.Program[T]], *args: Any) -> T:
        for attempt in range(RETRIES):
            try:
                async with pool.acquire() as conn, conn.transaction():
                    return await run_program(conn, program(*args))
            except (asyncpg.UniqueViolationError, *RETRYABLE):
                if attempt == RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    # -- the batches of the call path
    async def _write_loop(self) -> None:
        assert self._work is not None
        while True:
            if not self._jobs:
                if self._closing:
                    return
                self._work.clear()
                await self._work.wait()
                continue
            jobs = [job for job in self._jobs[: self.batch_max] if not job.future.done()]
            del self._jobs[: self.batch_max]  # a caller that gave up (the dialplan's answer is late) is not run
            if not jobs:
                continue
            started = time.perf_counter()
            try:
                outcomes = await self._write(jobs)
            except Exception as exc:  # the batch did not commit: nobody's change happened
                outcomes = [_Failed(exc)] * len(jobs)
            self._batch_took(time.perf_counter() - started, len(jobs))
            self.batches += 1
            for job, outcome in zip(jobs, outcomes, strict=True):
                if job.future.done():
                    held = job.op == "reserve" and not isinstance(outcome, _Failed) and outcome.ok
                    if held and job.future.cancelled():  # its caller gave up while the batch ran
                        self._learn(job, outcome)  # its release goes the fast way
                        self._held_too_late(job.args[0])
                    continue
                if isinstance(outcome, _Failed):
                    job.future.set_exception(outcome.error)
                else:
                    job.future.set_result(outcome)
                    self._learn(job, outcome)

    def _learn(self, job: _Job, outcome: Any) -> None:
        """Whose call is whose, for the next operations of the call to go the fast way."""
        if job.op == "reserve" and outcome.ok:
            self.zones.called(job.args[0], job.args[1], job.args[2])
        elif job.op in ("settle", "release"):
            self.zones.of_call.pop(job.args[0], None)

    async def _write(self, jobs: list[_Job]) -> list[Any]:
        """A batch, in one transaction or, from SPLIT_FROM operations, in one per group of accounts
        run side by side: the tasks waiting on a batch are all waiting on its latency, and the
        server runs one transaction on one core. The groups share no account or call (and so no
        extension, reservation or daily sum), so they do not wait on each other's locks; only the
        first, holding the calls this engine did not know, may wait for another (`pg_batch.split`)."""
        groups = [list(range(len(jobs)))]
        if len(jobs) >= self.split_from and self.parts > 1:
            groups = pg_batch.split([(job.op, job.args) for job in jobs], self.zones, self.parts)
        if len(groups) == 1:
            return await self._write_group(jobs)
        done = await asyncio.gather(
            *(self._write_group([jobs[k] for k in group]) for group in groups), return_exceptions=True
        )
        outcomes: list[Any] = [None] * len(jobs)
        for group, got in zip(groups, done, strict=True):
            for n, k in enumerate(group):
                if isinstance(got, BaseException):  # that group did not commit: nothing of it happened
                    outcomes[k] = _Failed(got)
                else:
                    outcomes[k] = got[n]
        return outcomes

    async def _write_group(self, jobs: list[_Job]) -> list[Any]:
        """A group's operations in one call of the function, or a lone operation as its program.

        PL/pgSQL builds each expression and each statement of the function afresh in every
        transaction: a one-operation call cost the server ~2.2 million instructions, four times
        what a reservation or a settle costs as its program (~0.55 million, counted by callgrind).
        The program's extra round trips cost less than that on one machine, and a PBX at a few
        calls a second sends nothing but batches of one; a lone reservation (which the dialplan
        waits for), renewal, release or settle is first tried as one statement (`pg_lone`). Under load the batches
        grow while a lone operation runs, and the function takes them. Side by side, they all lock
        in the same order: the call's reservation, an extension's new row, the extension, the
        account (see `pg_batch`)."""
        assert self._pool is not None
        if len(jobs) == 1 and self.lone_as_program:
            self.lone += 1
            if jobs[0].op != "annotate":
                done = await self._in_one(jobs[0])
                if done is not None:
                    return [done]
            return [await self._alone(jobs[0], transaction=jobs[0].op != "annotate")]
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn:
                    ops = [(job.op, job.args) for job in jobs]
                    cols = pg_batch.encode(ops, self.zones)
                    whole = await self._write_whole(conn, jobs, cols)
                    if whole is not None:
                        return whole
                    async with conn.transaction():
                        return await self._write_on(conn, jobs, ops, cols)
            except RETRYABLE:
                if attempt == RETRIES - 1:
                    raise
            except LOST:
                raise
            except asyncpg.PostgresError:
                # The function itself failed (a bug, or a server that refuses something of it):
                # the batch is undone, and each operation runs alone as its program.
                self.function_failures += 1
                log.exception("batch function failed; running its operations one by one")
                return [await self._alone(job) for job in jobs]
        raise AssertionError("unreachable")

    async def _in_one(self, job: _Job) -> Any:
        """A lone reservation, renewal, release or settle in one statement (`pg_lone`), or None: its
        program's to answer."""
        assert self._pool is not None
        if job.op == "reserve":
            account_id = job.args[1]
        else:
            whose = self.zones.of_call.get(job.args[0])
            account_id = whose[0] if whose else ""
        timezone = self.zones.of_account.get(account_id)
        if timezone is None or not self._in_one_fits(job, account_id):
            return None
        try:
            async with self._pool.acquire() as conn:
                if job.op == "reserve":
                    row = await conn.fetchrow(pg_lone.RESERVE, *pg_lone.reserve_args(job.args, timezone))
                    got = (job.args[3], 0, 0)  # held
                elif job.op == "extend":
                    row = await conn.fetchrow(pg_lone.EXTEND, *pg_lone.extend_args(job.args, timezone))
                    got = (row["amount"], 0, 0)  # the reservation's amount now
                elif job.op == "release":
                    row = await conn.fetchrow(pg_lone.RELEASE, *pg_lone.release_args(job.args, timezone))
                    got = (1, 0, 0)  # released
                else:
                    row = await conn.fetchrow(pg_lone.SETTLE, *pg_lone.settle_args(job.args, timezone))
                    got = (job.args[1], row["held"], row["balance"])  # cost, held, balance
                ok = row["ok"]
        except LOST as exc:  # the program would not reach it either
            return _Failed(exc)
        except (asyncpg.UniqueViolationError, *RETRYABLE):
            return None
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != pg_batch.HANDED_BACK:  # a bug, or a server that refuses the statement
                self.function_failures += 1
                log.exception("one-statement %s failed; running its program", job.op)
            else:
                self.lone_handed_back += 1
            return None
        if ok != 1:
            if row["tz"] is not None and row["tz"] != timezone:  # another engine changed it: the next goes right
                self.zones.learn(account_id, row["tz"])
            return None
        self.lone_in_one += 1
        return result(job.op, job.args, *got)

    def _in_one_fits(self, job: _Job, account_id: str) -> bool:
        """Whether the one statement may take an operation, as far as this engine knows: not a first
        call of an extension without a row, nor a reservation or a renewal on an account with a
        velocity limit. Those it would hand back, by an error that PostgreSQL logs with its statement;
        their program answers them at once. A hint out of date costs a hand-back or a program's round
        trips, never a wrong answer."""
        if job.op == "reserve" and (account_id, job.args[2]) not in self.zones.with_rows:
            return False
        return not (job.op in ("reserve", "extend") and account_id in self.zones.with_velocity)

    async def _alone(self, job: _Job, transaction: bool = True) -> Any:
        """One operation as its program; a note (one UPDATE) without BEGIN and COMMIT of ours: the
        server commits the statement on its own, one round trip instead of three."""
        assert self._pool is not None
        try:
            if not transaction:
                async with self._pool.acquire() as conn:
                    return await run_program(conn, job.program(*job.args))
            return await self._run_in_pool(self._pool, job.program, *job.args)
        except Exception as exc:
            return _Failed(exc)

    async def _write_whole(self, conn: Any, jobs: list[_Job], cols: list[str]) -> list[Any] | None:
        """The common batch, every operation the fast way, as one statement that is its own
        transaction: one round trip instead of three (no BEGIN or COMMIT of ours), and the rows are
        let go at the server's commit instead of after a round trip to the engine. If the function
        would hand an operation back it writes nothing instead (None), and the batch goes again in a
        transaction of ours, the handed-back operations as their programs in savepoints."""
        got = await conn.fetch(pg_batch.CALL, 1, True, *cols)
        if got and got[-1]["o_i"] == pg_batch.NOTHING_WRITTEN:
            self.batches_handed_back += 1
            return None
        outcomes: list[Any] = [None] * len(jobs)
        for r in got:
            outcomes[r["o_i"] - 1] = _answered(jobs[r["o_i"] - 1], r)
        return outcomes

    async def _write_on(
        self, conn: Any, jobs: list[_Job], ops: list[tuple[str, tuple[Any, ...]]], cols: list[str]
    ) -> list[Any]:
        outcomes: list[Any] = [None] * len(jobs)
        start, zoned = 1, set()
        while start <= len(jobs):
            got = await conn.fetch(pg_batch.CALL, start, False, *cols)
            start = len(jobs) + 1
            for r in got:  # the function stops at the first operation it hands back: the last row
                k = r["o_i"] - 1
                job = jobs[k]
                if r["o_fast"]:
                    outcomes[k] = _answered(job, r)
                elif r["o_account"] is not None and k not in zoned:  # now its zone or account is known: again
                    zoned.add(k)
                    if r["o_tz"] is not None:
                        self.zones.learn(r["o_account"], r["o_tz"])
                    if job.op != "reserve":
                        self.zones.called(job.args[0], r["o_account"], r["o_ext"])
                    cols = pg_batch.encode(ops, self.zones)
                    start = k + 1
                else:
                    self.slow += 1
                    outcomes[k] = await self._slow(conn, job)
                    start = k + 2
        return outcomes

    async def _slow(self, conn: Any, job: _Job) -> Any:
        """One operation as its program, in a savepoint: its failure undoes it alone."""
        for attempt in range(RETRIES):
            try:
                async with conn.transaction():
                    return await run_program(conn, job.program(*job.args))
            except (*RETRYABLE, *LOST):
                raise
            except asyncpg.UniqueViolationError as exc:
                if attempt == RETRIES - 1:
                    return _Failed(exc)
            except Exception as exc:
                if conn.is_closed():
                    raise
                return _Failed(exc)
        raise AssertionError("unreachable")

    async def hold_node(self, node: str) -> str:
        if self._node is not None and self._node.node != node:
            await self._node.let_go()
            self._node = None
        if self._node is None:
            self._node = NodeHold(self.dsn, node, check_every=self.node_check_every, connect_timeout=CONNECT_TIMEOUT)
        try:
            holder = "" if self._node.held else await self._node.take()
        except asyncpg.PostgresError as exc:  # too many connections, say: one line, not a traceback
            raise LedgerError(f"cannot hold node {node!r} on the ledger: {exc}") from None
        if not holder:
            self._node.watch()
        return holder

    @property
    def fallbacks(self) -> int:
        return self.function_failures

    @property
    def races(self) -> int:
        return self.lone_handed_back

    @property
    def node_conflicts(self) -> int:
        return 0 if self._node is None else self._node.conflicts

    async def _close(self) -> None:
        """Let the operations under way finish, then close."""
        if self._node is not None:
            await self._node.let_go()
            self._node = None
        if self._pool is not None:
            self._closing = True
            if self._work is not None:
                self._work.set()
            for task in self._writer_tasks:
                await task
            self._writer_tasks = []
            self._idle = asyncio.Event()
            if self._running:
                await self._idle.wait()
            await self._pool.close()
            self._pool = None
            self._idle = None
            self._closing = False
