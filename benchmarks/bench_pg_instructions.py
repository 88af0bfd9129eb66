"""PostgreSQL's work per reserve + settle pair, counted in instructions rather than timed.

This machine's speed moves by a third within an hour, and the ledger benchmark's server CPU per
pair with it (124 to 186 µs for the same code within one session), so a change of 5% on the
server's side cannot be told from the noise by timing. callgrind counts the instructions the
server's backend executes, which do not depend on how fast the machine is that minute: run twice,
the same workload gives the same count to within 0.1%.

The benchmark starts a PostgreSQL of its own under `valgrind --tool=callgrind` (its binaries from
`pg_config --bindir`, a cluster made by initdb in a temporary directory; as root it runs them as
the `postgres` user), creates the accounts with the ledger, then sends the same pairs on one
connection twice over: N pairs on one connection, 2N on the next. Each connection is a backend
process with its own count, written when it ends; the difference divided by N is the cost of a
pair, without the connection's start or the first call's compiling of the function. 1,000
accounts, skewed as in `bench_ledger` (half the calls on ten of them), 50 extensions each.

Rows, each in a database of its own on the same server:
- baseline: every operation its program, in a transaction of its own (the driver before batches);
- ours: the call path's batch function, 50 reservations in one call and then their 50 settles,
  with the extensions' rows made by the calls (a first call makes its row, as half the calls of
  `bench_ledger` do) and with them there already (a PBX whose extensions have called before, its
  engine opened since: it reads which extensions have rows when it opens);
- ours in batches of 10 and of 2, the rows there: the function's own cost for every call (each of
  its statements started, each expression built afresh in each transaction), which a batch of 50
  shares out and the small batches of a PBX's ordinary load do not;
- ours on a database whose collation is linguistic (ICU en-US, as an en_US.UTF-8 database is);
- and, on both databases, the same with the naming columns in the database's collation, as
  before schema version 9 gave them "C".

    python benchmarks/bench_pg_instructions.py [--pairs N] [--accounts N] [--only KEY,…] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_ledger import BUSY, NOW, skewed
from benchmarks.common import report
from rating_engine.ledger import AccountSettings, CallDetails
from rating_engine.ledger import programs as P
from rating_engine.ledger.pg_batch import CALL, encode
from rating_engine.ledger.postgres import PostgresLedger, run_program
from rating_engine.ledger.schema import collate_names, statements

LINGUISTIC = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
"""A database whose own collation sorts text as English readers do ('acme' before 'Zed'): the
ledger's names must not take it (`tests/test_pg_schema.py` makes its databases so too)."""
BATCH = 50
EXTENSIONS = 50
Op = tuple[str, tuple[Any, ...]]


def _as_server_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def counted_server() -> AsyncIterator[tuple[str, Path]]:
    """A PostgreSQL of our own under callgrind: (its admin URL, the directory of its counts)."""
    bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="rating-engine-count-") as tmp:
        root = Path(tmp)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        data, counts = root / "data", root / "counts"
        initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--locale=C.UTF-8"]
        subprocess.run(_as_server_user(initdb), check=True, capture_output=True)
        subprocess.run(_as_server_user(["mkdir", str(counts)]), check=True)
        port = _free_port()
        counted = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={counts}/cg.%p"]
        postgres = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root)]
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", "autovacuum=off", "-c", "fsync=off"]
        server = subprocess.Popen(
            _as_server_user(counted + postgres + settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        try:
            for _ in range(600):  # valgrind takes a while to start the server
                with contextlib.suppress(OSError, asyncpg.PostgresError):
                    await (await asyncpg.connect(url, timeout=5)).close()
                    break
                if server.poll() is not None:
                    raise SystemExit("PostgreSQL under valgrind did not start")
                await asyncio.sleep(0.2)
            yield url, counts
        finally:
            stop = [str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "fast"]
            subprocess.run(_as_server_user(stop), capture_output=True)
            server.wait(60)


def _instructions(counts: Path, pid: int) -> int:
    """The backend's count, written by callgrind when the backend ends."""
    path = counts / f"cg.{pid}"
    for _ in range(300):
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
        time.sleep(0.1)
    raise SystemExit(f"no count from backend {pid}")


def _pairs(n: int, accounts: int, rng: random.Random, first: int) -> list[tuple[str, str, str]]:
    """(call, account, extension) for n calls, numbered from `first`."""
    return [(f"pbx1:{NOW}.{k}", skewed(rng, accounts), f"2{k % EXTENSIONS:02d}") for k in range(first, first + n)]


async def _programs(conn: asyncpg.Connection, calls: list[tuple[str, str, str]], _ledger: PostgresLedger) -> None:
    for call, account, ext in calls:
        async with conn.transaction():
            held = await run_program(conn, P.reserve(call, account, ext, 500_000, NOW, 0, "", None))
            assert held.ok
        async with conn.transaction():
            settled = await run_program(conn, P.settle(call, 123_456, CallDetails(dialed="0899123456"), NOW + 60))
            assert settled.settled


async def _batches(
    conn: asyncpg.Connection, calls: list[tuple[str, str, str]], ledger: PostgresLedger, size: int = BATCH
) -> None:
    for start in range(0, len(calls), size):
        part = calls[start : start + size]
        reserves: list[Op] = [("reserve", (c, a, e, 500_000, NOW, 0, "", None)) for c, a, e in part]
        settles: list[Op] = [("settle", (c, 123_456, CallDetails(dialed="0899123456"), NOW + 60)) for c, _, _ in part]
        await _whole(conn, reserves, ledger)
        for c, a, e in part:  # as the driver learns whose call is whose from a reservation…
            ledger.zones.called(c, a, e)
        await _whole(conn, settles, ledger)
        for c, _, _ in part:  # …and forgets it at its settle
            ledger.zones.of_call.pop(c, None)


async def _whole(conn: asyncpg.Connection, ops: list[Op], ledger: PostgresLedger) -> None:
    got = await conn.fetch(CALL, 1, True, *encode(ops, ledger.zones))
    assert len(got) == len(ops) and all(r["o_fast"] for r in got), "an operation was handed back"


async def _database(admin: str, name: str, options: str) -> str:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"CREATE DATABASE {name} {options}")
    finally:
        await conn.close()
    return admin.rsplit("/", 1)[0] + "/" + name


async def measure(
    admin: str, counts: Path, name: str, args: argparse.Namespace, *, options: str = "", made: bool = False,
    database_collation: bool = False, send: Callable[..., Awaitable[None]] = _batches,
) -> int:  # fmt: skip
    """Instructions of the server per pair: (2N pairs - N pairs) / N, each on a fresh connection."""
    url = await _database(admin, name, options)
    ledger = PostgresLedger(url, batched=True)
    await ledger.open()
    try:
        conn = await asyncpg.connect(url)
        try:
            if database_collation:  # the naming columns as they were before schema version 9
                async with conn.transaction():
                    for sql in statements(collate_names("default")):
                        await conn.execute(sql)
            for i in range(args.accounts):
                await ledger.create_account(f"a{i}", AccountSettings("office-fr", "EUR"), now=NOW)
                await ledger.topup(f"a{i}", 10**15, f"opening-a{i}", now=NOW)
            if made:
                await conn.execute(
                    "INSERT INTO extensions (account_id, ext) SELECT a.id, '2' || lpad(j::text, 2, '0')"
                    " FROM accounts a, generate_series(0, $1 - 1) j",
                    EXTENSIONS,
                )
        finally:
            await conn.close()
        if made:  # an engine started since its extensions called: it reads which have rows when it opens
            await ledger.close()
            ledger = PostgresLedger(url, batched=True)
            await ledger.open()
        rng = random.Random(1)
        totals = []
        for n, first in ((args.pairs, 0), (2 * args.pairs, args.pairs)):
            conn = await asyncpg.connect(url)
            pid: int = await conn.fetchval("SELECT pg_backend_pid()")
            try:
                await send(conn, _pairs(n, args.accounts, rng, first), ledger)
            finally:
                await conn.close()
            totals.append(_instructions(counts, pid))
        assert await ledger.check() == []
    finally:
        await ledger.close()
    return (totals[1] - totals[0]) // int(args.pairs)


ROWS = (
    # key, label, database, extensions' rows made beforehand, naming columns in the database's collation, path
    ("programs", "PostgreSQL, one txn per op (before the batches)", "", False, False, _programs),
    ("ours", "ours: batches of 50, first calls make their extension rows", "", False, False, _batches),
    ("ours_made", "ours: batches of 50, extension rows there", "", True, False, _batches),
    ("ours_v8", "the same, names in the database's collation (before v9)", "", True, True, _batches),
    ("ours_10", "ours: batches of 10, extension rows there", "", True, False, partial(_batches, size=10)),
    ("ours_2", "ours: batches of 2, extension rows there", "", True, False, partial(_batches, size=2)),
    ("icu", "ours: batches of 50, extension rows there", LINGUISTIC, True, False, _batches),
    ("icu_v8", "the same, names in the database's collation (before v9)", LINGUISTIC, True, True, _batches),
)


async def run(args: argparse.Namespace) -> dict[str, int]:
    out: dict[str, int] = {}
    async with counted_server() as (admin, counts):
        for key, _label, options, made, old, send in ROWS:
            if args.only and key not in args.only and key != "programs":
                continue
            out[key] = await measure(
                admin, counts, key, args, options=options, made=made, database_collation=old, send=send
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=500, help="N: the second connection sends 2N")
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument(
        "--only", type=lambda text: text.split(","), default=[],
        help=f"these rows only, beside the baseline ({', '.join(k for k, *_ in ROWS[1:])})",
    )  # fmt: skip
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.accounts <= BUSY:
        ap.error(f"--accounts must be more than the {BUSY} busy ones")
    if args.pairs < 1 or args.pairs % BATCH:
        ap.error(f"--pairs must be a positive multiple of {BATCH}")
    counted = asyncio.run(run(args))
    base = counted["programs"]
    rows = []
    for key, label, options, *_ in ROWS:
        if key not in counted:
            continue
        database = "ICU en-US" if options else "C.UTF-8"
        rows.append([label, database, f"{counted[key]:,}", f"{base / counted[key]:.1f}x"])
    data = {
        "pairs": args.pairs,
        "accounts": args.accounts,
        "instructions_per_pair": counted,
        "vs_baseline": {k: round(base / v, 2) for k, v in counted.items()},
    }
    report(
        "bench_pg_instructions (PostgreSQL's instructions per reserve+settle pair, callgrind)",
        ["path", "database collation", "instructions/pair", "vs baseline"],
        rows,
        data,
        args.json,
    )


if __name__ == "__main__":
    main()
