"""Loading a wholesale rate deck: time, memory, and what a reload costs the event loop.

The workload: a deck of N rows (1,000,000 by default; a wholesale operator's deck has a few
hundred thousand), written once to a temporary file: every country calling code and random longer
prefixes under them, a few thousand distinct prices, increments 1/30/60 and 1/6/60. Each figure
is taken in a fresh process, so one measurement's memory is not another's:

- baseline: what a user would write: csv.DictReader into a dict of prefix → (destination,
  Decimal prices), no validation, no compiled table;
- ours: `load_deck` (every cell validated, every problem located) + `RateTable` (compiled);
- held: what an engine holds after a reload (the compiled table, received from the child
  process that loaded it);
- the event loop during a reload: the longest gap of a 1 ms ticker while the tariffs are reloaded
  on the loop (`TariffStore.reload`, what `run` did before) and in a child process
  (`load_in_child`, what it does now).

    python benchmarks/bench_deck.py [--rows N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import phonenumbers

from benchmarks.common import report
from rating_engine.rating.deck import COLUMNS

HEADER = ",".join(COLUMNS)
CODES = sorted(str(cc) for cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE if cc < 1000)
"""Every country calling code phonenumbers knows."""


def write_deck(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    prices = [f"0.{rng.randrange(10, 9999):04d}" for _ in range(3000)]
    seen: set[str] = set()
    with path.open("w", encoding="utf-8") as f:
        f.write(HEADER + "\n")
        for cc in CODES:
            seen.add(cc)
            f.write(f"{cc},Country {cc},{rng.choice(prices)},0,60,60,,,\n")
        while len(seen) < rows:
            cc = rng.choice(CODES)
            p = cc + "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 7)))
            if p in seen:
                continue
            seen.add(p)
            kind = rng.choice(("Mobile", "Fixed", "Special"))
            first, then = rng.choice((("1", "1"), ("30", "6"), ("60", "60")))
            f.write(f"{p},Country {cc} {kind},{rng.choice(prices)},0,{first},{then},,,\n")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_naive(deck: Path) -> dict[str, float]:
    before = _rss_mb()
    t = time.perf_counter()
    rates: dict[str, tuple[str, Decimal, Decimal, int, int]] = {}
    with deck.open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rates[r["prefix"]] = (
                r["destination"],
                Decimal(r["rate_per_minute"]),
                Decimal(r["connect_fee"]),
                int(r["initial_increment"]),
                int(r["increment"] or r["initial_increment"]),
            )
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "peak_mb": _peak_mb() - before, "held_mb": _rss_mb() - before, "rows": len(rates)}


def measure_ours(deck: Path) -> dict[str, float]:
    from rating_engine.rating.deck import load_deck
    from rating_engine.rating.table import RateTable

    before = _rss_mb()
    t = time.perf_counter()
    parsed = load_deck(deck)
    loaded = time.perf_counter()
    table = RateTable(parsed)
    compiled = time.perf_counter()
    gc.collect()
    return {
        "seconds": compiled - t,
        "parse_seconds": loaded - t,
        "compile_seconds": compiled - loaded,
        "peak_mb": _peak_mb() - before,
        "held_mb": _rss_mb() - before,
        "rows": len(table),
    }


def measure_held(plan: Path) -> dict[str, float]:
    """What the engine keeps: the Tariffs as they arrive from the child process."""
    from rating_engine.rating.catalog import load_in_child

    before = _rss_mb()
    t = time.perf_counter()
    tariffs = load_in_child([plan]).result()
    seconds = time.perf_counter() - t
    gc.collect()
    rows = sum(len(table) for table in tariffs.tables.values())
    return {"seconds": seconds, "held_mb": _rss_mb() - before, "rows": rows}


def measure_stall(plan: Path, how: str) -> dict[str, float]:
    from rating_engine.rating.catalog import TariffStore, load_in_child

    store = TariffStore([plan])

    async def run() -> dict[str, float]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        t = time.perf_counter()
        if how == "on the loop":
            store.reload()
        else:
            store.swap(await asyncio.wrap_future(load_in_child(store.paths)))
        seconds = time.perf_counter() - t
        await asyncio.sleep(0.05)
        done.set()
        await tick
        gaps.sort()
        return {"seconds": seconds, "max_gap_ms": gaps[-1] * 1000, "p99_gap_ms": gaps[int(len(gaps) * 0.99)] * 1000}

    return asyncio.run(run())


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", *args], capture_output=True, text=True, check=True, timeout=900
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        what, path = args.measure
        runs = {
            "naive": lambda: measure_naive(Path(path)),
            "ours": lambda: measure_ours(Path(path)),
            "held": lambda: measure_held(Path(path)),
            "stall-loop": lambda: measure_stall(Path(path), "on the loop"),
            "stall-child": lambda: measure_stall(Path(path), "in a child process"),
        }
        print(json.dumps(runs[what]()))
        return
    with tempfile.TemporaryDirectory() as tmp:
        deck = Path(tmp) / "wholesale.csv"
        write_deck(deck, args.rows)
        plan = Path(tmp) / "wholesale.toml"
        plan.write_text('name = "wholesale"\ncountry = "FR"\ncurrency = "EUR"\ndeck = "wholesale.csv"\n')
        naive, ours, held = _child("naive", str(deck)), _child("ours", str(deck)), _child("held", str(plan))
        loop, child = _child("stall-loop", str(plan)), _child("stall-child", str(plan))
    rows = [
        ["baseline: csv.DictReader → dict, Decimal, unchecked", f"{naive['seconds']:.2f}", f"{naive['peak_mb']:.0f}",
         f"{naive['held_mb']:.0f}", "1.0x"],
        ["ours: load_deck + RateTable (checked, compiled)", f"{ours['seconds']:.2f}", f"{ours['peak_mb']:.0f}",
         f"{ours['held_mb']:.0f}", f"{naive['seconds'] / ours['seconds']:.1f}x"],
        ["ours: held by the engine after a reload", f"{held['seconds']:.2f}", "-", f"{held['held_mb']:.0f}", "-"],
    ]  # fmt: skip
    report(
        f"rate deck of {args.rows:,} rows: load time and memory",
        ["loader", "seconds", "peak MB", "held MB", "speed vs baseline"],
        rows,
        {"rows": args.rows, "naive": naive, "ours": ours, "held": held, "reload_on_loop": loop, "reload_child": child},
        args.json,
    )
    if not args.json:
        report(
            "the event loop while the tariffs reload (a 1 ms ticker)",
            ["reload", "seconds", "longest loop gap ms", "p99 gap ms"],
            [
                [name, f"{r['seconds']:.2f}", f"{r['max_gap_ms']:.1f}", f"{r['p99_gap_ms']:.1f}"]
                for name, r in (("on the loop (before)", loop), ("in a child process (now)", child))
            ],
            {"reload_on_loop": loop, "reload_child": child},
            False,
        )


if __name__ == "__main__":
    main()
