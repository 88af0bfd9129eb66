"""Ledger throughput: reservation + settle pairs per second, 1 and 100 concurrent tasks on one hot
account, and 100 tasks over 1,000 accounts with a skew (half the calls on ten busy accounts).

Ours: SQLite (group commit, synchronous=FULL, every settle acknowledged after its commit; the call
path's operations of a batch walked in memory and written once, `sqlite_batch`) and
PostgreSQL (the call path in batches: one server-side function call and one commit per batch; a
batch of one operation, which is all one task ever sends, is a reservation or a settle in one
statement, or else its program).
Every call is named as the engine names one: its node, Asterisk's uniqueid (the epoch second and
the channel counter) and the moment, so consecutive calls sort next to each other in the indexes
keyed on the call id, as on a PBX. One more row, on SQLite, names them `w<task>-<n>` as the runs
before the seventh session did: those ids scatter over the whole index, and each commit writes three
times the pages (59 WAL frames a commit instead of 18).
Baselines, same run: the naive SQLite way, one transaction per reservation and per settle
through aiosqlite, one await per statement; our SQLite ledger as it was before the walk, every
operation its program in the group commit (`walk=False`); and our PostgreSQL driver the way it was
before the batches, every operation its own transaction (`batched=False`).

`--rounds N` runs it all N times and shows each row's median and range, its ratio taken round by
round against the baseline of that round.

    python benchmarks/bench_ledger.py [--pairs N] [--rounds N] [--json] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosqlite

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Cpu, by_round, cpu_seconds, in_rounds, over, report, rounds
from rating_engine.ledger import AccountSettings, CallDetails, Ledger
from rating_engine.ledger.postgres import PostgresLedger
from rating_engine.ledger.sqlite import SqliteLedger

NOW = 1_795_535_109


MANY, BUSY = 1_000, 10


class CallIds:
    """Call ids as the engine makes them (`node:uniqueid:ms`; Asterisk's uniqueid is the epoch second
    and a counter of channels), 1,000 calls a second; `scattered`: `w<task>-<n>`, as before."""

    def __init__(self, scattered: bool = False) -> None:
        self.scattered = scattered
        self.n = 0

    def __call__(self, task: int, i: int) -> str:
        if self.scattered:
            return f"w{task}-{i}"
        self.n += 1
        second = NOW + self.n // 1000
        return f"pbx1:{second}.{self.n}:{second}{self.n % 1000:03d}"


def skewed(rng: random.Random, accounts: int = MANY) -> str:
    """Half the calls on BUSY accounts, the rest spread over all `accounts`."""
    return f"a{rng.randrange(BUSY) if rng.random() < 0.5 else rng.randrange(accounts)}"


CPU: Cpu = {}
"""Per run: this process's CPU and PostgreSQL's, µs per pair (where the time goes, beside the rate)."""


async def ours(
    ledger: Ledger, pairs: int, tasks: int, accounts: int = 1, label: str = "", *, scattered: bool = False
) -> float:
    ids = CallIds(scattered)
    names = ["acme"] if accounts == 1 else [f"a{i}" for i in range(accounts)]
    for name in names:
        await ledger.create_account(name, AccountSettings("office-fr", "EUR"))
        await ledger.topup(name, 10**15, f"opening-{name}")
    per_task = max(pairs // tasks, 1)  # a small --pairs still runs every task once

    async def worker(w: int) -> None:
        rng = random.Random(w)
        for i in range(per_task):
            call = ids(w, i)
            account = "acme" if accounts == 1 else skewed(rng)
            held = await ledger.reserve(call, account, f"2{w % 50:02d}", 500_000, now=NOW)
            assert held.ok
            await ledger.settle(call, 123_456, CallDetails(dialed="0899123456"), now=NOW + 60)

    client0, server0 = cpu_seconds()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(tasks)))
    elapsed = time.perf_counter() - t0
    client1, server1 = cpu_seconds()
    done = per_task * tasks
    server_us = None
    if ledger.dialect == "postgres" and server0 is not None and server1 is not None:
        server_us = 1e6 * (server1 - server0) / done
    CPU[label] = (1e6 * (client1 - client0) / done, server_us)
    assert await ledger.check() == []
    return done / elapsed


async def naive_sqlite(path: str, pairs: int, tasks: int) -> float:
    db = await aiosqlite.connect(path, isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = FULL"):
        await db.execute(f"PRAGMA {pragma}")
    await db.execute("CREATE TABLE accounts (id TEXT PRIMARY KEY, balance BIGINT, reserved BIGINT)")
    await db.execute("CREATE TABLE reservations (call_id TEXT PRIMARY KEY, account_id TEXT, amount BIGINT)")
    await db.execute("CREATE TABLE activity (call_id TEXT PRIMARY KEY, account_id TEXT, cost BIGINT, dialed TEXT)")
    await db.execute("INSERT INTO accounts VALUES ('acme', ?, 0)", (10**15,))
    lock = asyncio.Lock()  # one connection: transactions must not interleave
    per_task = max(pairs // tasks, 1)  # a small --pairs still runs every task once
    ids = CallIds()

    async def worker(w: int) -> None:
        for i in range(per_task):
            call = ids(w, i)
            async with lock:
                await db.execute("BEGIN IMMEDIATE")
                cur = await db.execute(
                    "UPDATE accounts SET reserved = reserved + ? WHERE id = 'acme' AND balance - reserved >= ?",
                    (500_000, 500_000),
                )
                assert cur.rowcount == 1
                await db.execute("INSERT INTO reservations VALUES (?, 'acme', ?)", (call, 500_000))
                await db.execute("COMMIT")
            async with lock:
                await db.execute("BEGIN IMMEDIATE")
                await db.execute(
                    "UPDATE accounts SET balance = balance - ?, reserved = reserved - ? WHERE id = 'acme'",
                    (123_456, 500_000),
                )
                await db.execute("INSERT INTO activity VALUES (?, 'acme', ?, '0899123456')", (call, 123_456))
                await db.execute("DELETE FROM reservations WHERE call_id = ?", (call,))
                await db.execute("COMMIT")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(tasks)))
    elapsed = time.perf_counter() - t0
    await db.close()
    return per_task * tasks / elapsed


BENCH_DATABASE = "postgresql://postgres@127.0.0.1:5432/rating_engine_bench"
"""The benchmarks' database, made afresh by `postgres_url` (and left for a look after the run)."""


async def postgres_url() -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres", timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    name = BENCH_DATABASE.rsplit("/", 1)[1]
    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    return BENCH_DATABASE


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, walk in (("ours_sqlite_full", True), ("sqlite_programs", False)):
        with tempfile.TemporaryDirectory() as d:
            ledger: Ledger = SqliteLedger(f"{d}/many.db", walk=walk)
            await ledger.open()
            try:
                results[f"{name}/many"] = await ours(ledger, args.pairs, 100, MANY, f"{name}/many")
            finally:
                await ledger.close()
    if not args.no_postgres:
        for name, batched in (("ours_postgres", True), ("postgres_per_op", False)):
            url = await postgres_url()
            results[f"{name}/many"] = None
            if url is not None:
                ledger = PostgresLedger(url, batched=batched)
                await ledger.open()
                try:
                    results[f"{name}/many"] = await ours(
                        ledger, args.pairs // (2 if batched else 10), 100, MANY, f"{name}/many"
                    )
                finally:
                    await ledger.close()
    for tasks in (1, 100):
        pairs = args.pairs if tasks > 1 else max(args.pairs // 10, 100)
        with tempfile.TemporaryDirectory() as d:
            results[f"naive_sqlite_full/{tasks}"] = await naive_sqlite(f"{d}/naive.db", pairs, tasks)
            for name, walk in (("ours_sqlite_full", True), ("sqlite_programs", False)):
                ledger = SqliteLedger(f"{d}/{name}.db", walk=walk)
                await ledger.open()
                try:  # a failed check must end the run, not leave aiosqlite's thread holding the process
                    results[f"{name}/{tasks}"] = await ours(ledger, pairs, tasks, 1, f"{name}/{tasks}")
                finally:
                    await ledger.close()
            if tasks > 1:
                ledger = SqliteLedger(f"{d}/scattered.db")
                await ledger.open()
                try:
                    results[f"sqlite_scattered/{tasks}"] = await ours(
                        ledger, pairs, tasks, 1, f"sqlite_scattered/{tasks}", scattered=True
                    )
                finally:
                    await ledger.close()
        if not args.no_postgres:
            for name, batched in (("ours_postgres", True), ("postgres_per_op", False)):
                url = await postgres_url()
                if url is None:
                    results[f"{name}/{tasks}"] = None
                    continue
                ledger = PostgresLedger(url, batched=batched)
                await ledger.open()
                try:
                    share = (2 if tasks > 1 else 4) if batched else 10
                    results[f"{name}/{tasks}"] = await ours(ledger, pairs // share, tasks, 1, f"{name}/{tasks}")
                finally:
                    await ledger.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=20_000, help="reservation+settle pairs with 100 tasks")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument(
        "--rounds", type=rounds, default=1, help="run everything this many times (medians and ranges are shown)"
    )
    args = ap.parse_args()
    loop_name, runs = in_rounds(lambda: run(args), args.rounds, CPU)
    rows = []
    pairs_per_s: dict[str, int | None] = {}
    cpu_us: dict[str, dict[str, int | None]] = {}
    vs_baseline: dict[str, float] = {}
    for name, label in (
        ("naive_sqlite_full", "naive SQLite FULL, 1 txn per op (baseline)"),
        ("sqlite_programs", "SQLite FULL, group commit, programs (before the walk)"),
        ("ours_sqlite_full", "ours: SQLite FULL, group commit, walked"),
        ("sqlite_scattered", "the same, call ids scattered (w<task>-<n>, as before)"),
        ("postgres_per_op", "PostgreSQL, one txn per op (before the batches)"),
        ("ours_postgres", "ours: PostgreSQL, batches (of one: one statement)"),
    ):
        for tasks in (1, 100, "many"):
            key = f"{name}/{tasks}"
            if key not in runs[0][0]:
                continue
            # each round's ratio against the baseline measured in that round
            row = over(runs, key, f"naive_sqlite_full/{100 if tasks == 'many' else tasks}")
            row.record(key, pairs_per_s, vs_baseline, cpu_us)
            rows.append(
                [
                    label,
                    f"100, {MANY:,} accounts (skewed)" if tasks == "many" else f"{tasks}, one account",
                    *row.cells("skipped (no server)" if "postgres" in name else "-"),
                ]
            )
    data = {
        "loop": loop_name,
        "rounds": args.rounds,
        "pairs_per_s": pairs_per_s,
        "vs_baseline": vs_baseline,
        "cpu_us_per_pair": cpu_us,
        "pairs_per_s_by_round": by_round(runs),
    }
    header = ["backend", "tasks", "pairs/s", "vs baseline", "CPU µs/pair: here", "PostgreSQL"]
    report("bench_ledger (reserve+settle pairs/s)", header, rows, data, args.json)


if __name__ == "__main__":
    main()
