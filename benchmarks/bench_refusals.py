"""Refused calls per second: an office whose prepaid account has run out.

When the money is gone, every chargeable attempt of every extension is refused, and phones
retry. Two loads, each on SQLite and PostgreSQL:

- "dry": 100 extensions, each retrying one attempt after another on an account with no money;
  every attempt refused (`insufficient_funds`) by the ledger. An engine refuses an account it
  knows to be dry before it asks the ledger; these are what reaches the ledger from engines
  whose view of the account is out of date (another engine spent the money), and, shaped the
  same, a dialer's attempts past a call or attempt limit, which only the ledger counts.
- "storm": 50 attempts at once on an account with money for 20, the 20 held then released, again
  and again: the batches hold calls and refusals together (the last money of a busy office).

Ours: SQLite (the call path walked in the group commit, `sqlite_batch`; a refusal is handed back to
its program there) and PostgreSQL (the batches' function answers a refusal itself since v14).
Baselines, same run, same backend: every operation its program (`walk=False` on SQLite; on
PostgreSQL `batched=False`, each operation its own transaction, as the driver was before the
batches). Beside the rate, this process's CPU and PostgreSQL's per attempt.

    python benchmarks/bench_refusals.py [--attempts N] [--rounds N] [--json] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_ledger import postgres_url
from benchmarks.common import Cpu, Rates, by_round, cpu_seconds, in_rounds, over, report, rounds
from rating_engine.contract import Refusal
from rating_engine.ledger import AccountSettings, ExtensionSettings, Ledger
from rating_engine.ledger.postgres import PostgresLedger
from rating_engine.ledger.sqlite import SqliteLedger

NOW = 1_795_535_109
AMOUNT = 500_000
EXTENSIONS = 100
STORM, MONEY_FOR = 50, 20

PATHS = (  # name, label, backend, the ledger's own way (walk / batched), its baseline's name
    ("sqlite_programs", "SQLite, every operation its program (baseline)", "sqlite", False, None),
    ("ours_sqlite", "ours: SQLite, walked", "sqlite", True, "sqlite_programs"),
    ("postgres_per_op", "PostgreSQL, one txn per op (baseline)", "postgres", False, None),
    ("ours_postgres", "ours: PostgreSQL, batches", "postgres", True, "postgres_per_op"),
)
LOADS = {"dry": "dry: 100 extensions retrying, no money", "storm": "storm: 50 at once, money for 20"}

CPU: Cpu = {}
"""Per run: this process's CPU and PostgreSQL's, µs per attempt."""


async def _office(ledger: Ledger, name: str, money: int) -> None:
    """An account and its extensions' rows, as an office that has called before."""
    await ledger.create_account(name, AccountSettings("office-fr", "EUR"))
    if money:
        await ledger.topup(name, money, f"opening-{name}")
    for i in range(EXTENSIONS):
        await ledger.set_extension(name, f"{200 + i}", ExtensionSettings())


async def dry(ledger: Ledger, attempts: int) -> int:
    """Every extension retrying on an account with no money; each attempt must be refused."""
    await _office(ledger, "dry", 0)
    per_task = max(attempts // EXTENSIONS, 1)

    async def phone(w: int) -> None:
        for i in range(per_task):
            got = await ledger.reserve(f"dry-{w}-{i}", "dry", f"{200 + w}", AMOUNT, now=NOW + i)
            assert not got.ok and got.refusal is Refusal.INSUFFICIENT_FUNDS, got

    await asyncio.gather(*(phone(w) for w in range(EXTENSIONS)))
    return per_task * EXTENSIONS


async def storm(ledger: Ledger, attempts: int) -> int:
    """STORM attempts at once on money for MONEY_FOR; exactly that many held, then released."""
    await _office(ledger, "storm", MONEY_FOR * AMOUNT)
    storms = max(attempts // STORM, 1)
    for s in range(storms):
        got = await asyncio.gather(
            *(ledger.reserve(f"st-{s}-{i}", "storm", f"{200 + i}", AMOUNT, now=NOW + s) for i in range(STORM))
        )
        held = [f"st-{s}-{i}" for i, g in enumerate(got) if g.ok]
        assert len(held) == MONEY_FOR, len(held)
        assert {g.refusal for g in got if not g.ok} == {Refusal.INSUFFICIENT_FUNDS}
        await asyncio.gather(*(ledger.release(c, now=NOW + s) for c in held))
    return storms * STORM


async def measure(ledger: Ledger, load: Callable[[Ledger, int], Awaitable[int]], attempts: int, key: str) -> float:
    client0, server0 = cpu_seconds()
    t0 = time.perf_counter()
    done = await load(ledger, attempts)
    elapsed = time.perf_counter() - t0
    client1, server1 = cpu_seconds()
    server_us = None
    if ledger.dialect == "postgres" and server0 is not None and server1 is not None:
        server_us = 1e6 * (server1 - server0) / done
    CPU[key] = (1e6 * (client1 - client0) / done, server_us)
    assert await ledger.check() == []
    return done / elapsed


async def run(args: argparse.Namespace) -> Rates:
    results: Rates = {}
    loads: dict[str, Callable[[Ledger, int], Awaitable[int]]] = {"dry": dry, "storm": storm}
    for load_name, load in loads.items():
        for name, _label, backend, way, _base in PATHS:
            key = f"{name}/{load_name}"
            attempts = args.attempts // (10 if (backend, way) == ("postgres", False) else 1)
            ledger: Ledger
            if backend == "sqlite":
                with tempfile.TemporaryDirectory() as d:
                    ledger = SqliteLedger(f"{d}/refusals.db", walk=way)
                    await ledger.open()
                    try:
                        results[key] = await measure(ledger, load, attempts, key)
                    finally:
                        await ledger.close()
                continue
            url = None if args.no_postgres else await postgres_url()
            if url is None:
                results[key] = None
                continue
            ledger = PostgresLedger(url, batched=way)
            await ledger.open()
            try:
                results[key] = await measure(ledger, load, attempts, key)
            finally:
                await ledger.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attempts", type=int, default=10_000, help="attempts per load (a tenth one txn per op)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--rounds", type=rounds, default=1, help="run everything this many times (medians and ranges)")
    args = ap.parse_args()
    loop_name, runs = in_rounds(lambda: run(args), args.rounds, CPU)
    rows: list[list[Any]] = []
    per_s: dict[str, int | None] = {}
    vs_baseline: dict[str, float] = {}
    cpu_us: dict[str, dict[str, int | None]] = {}
    for load_name, load_label in LOADS.items():
        for name, label, _backend, _way, base in PATHS:
            key = f"{name}/{load_name}"
            row = over(runs, key, base and f"{base}/{load_name}")
            row.record(key, per_s, vs_baseline, cpu_us)
            rows.append([load_label, label, *row.cells("skipped (no server)", "1.0x" if row.rates else "-")])
    data = {
        "loop": loop_name,
        "rounds": args.rounds,
        "attempts_per_s": per_s,
        "vs_baseline": vs_baseline,
        "cpu_us_per_attempt": cpu_us,
        "attempts_per_s_by_round": by_round(runs),
    }
    header = ["load", "path", "attempts/s", "vs baseline", "CPU µs/attempt: here", "PostgreSQL"]
    report("bench_refusals (an account that has run out: attempts/s)", header, rows, data, args.json)


if __name__ == "__main__":
    main()
