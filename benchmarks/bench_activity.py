"""The Prepaid Activity of a big account: one page of calls on an account with 1,000,000 of them.

The workload: one SQLite ledger (synchronous=FULL, as the engine runs it), one account, N calls
(1,000,000 by default) from 20 extensions over a year, written straight into the activity table.
Each figure is the median of repeated requests:

- ours: a keyset page (100 calls, newest first; the first page, and one 90% of the way back),
  a page filtered to one extension, the totals per extension (from the daily sums each settle
  keeps), and the whole page as the browser gets it (the ASGI app in-process: the page, the totals
  of its period, rendering);
- baseline: what a first version would do: OFFSET pagination to the same depth, totals summed from
  the calls, and loading the whole activity to show one page (what the page did before paging).

    python benchmarks/bench_activity.py [--calls N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import report
from rating_engine.accounts import Accounts
from rating_engine.ledger import make_ledger
from rating_engine.rating.catalog import load_tariffs
from rating_engine.users import Users

ROOT = Path(__file__).resolve().parent.parent
START = 1_764_547_200  # 2025-12-01
YEAR = 365 * 86_400


def fill(path: Path, calls: int) -> None:
    """N activity rows, straight into the table (the ledger's own path would take an hour)."""
    db = sqlite3.connect(path)
    step = YEAR / calls
    rows = (
        (
            f"pbx1:{1_764_547_200 + i}.{i}:{i}",
            "big",
            f"2{i % 20:02d}",
            int(START + i * step) - 90,
            int(START + i * step),
            "0899123456",
            "+33899123456",
            "France premium 0899",
            "premium",
            90,
            1_320_000,
            1_320_000,
            10**12 - i,
        )
        for i in range(calls)
    )
    with db:
        db.executemany(
            "INSERT INTO activity (call_id, account_id, ext, started_at, ended_at, dialed, e164, destination, kind,"
            " billable_seconds, cost, reserved, balance_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.execute(  # what each settle keeps up to date (the account's time zone is UTC)
            "INSERT INTO activity_days (account_id, day, ext, calls, seconds, cost)"
            " SELECT account_id, date(ended_at, 'unixepoch'), ext, COUNT(*), SUM(billable_seconds), SUM(cost)"
            " FROM activity GROUP BY 1, 2, 3"
        )
    db.execute("ANALYZE")
    db.close()


async def sum_calls(path: Path, since: int) -> None:
    """The totals per extension summed from the calls themselves (what the daily sums replace)."""
    db = sqlite3.connect(path)
    db.execute(
        "SELECT ext, COUNT(*), SUM(billable_seconds), SUM(cost) FROM activity WHERE account_id = 'big'"
        " AND ended_at >= ? GROUP BY ext ORDER BY ext",
        (since,),
    ).fetchall()
    db.close()


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    """Median milliseconds of `n` runs (after one warm-up)."""
    await fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


async def run(calls: int, repeat: int) -> dict[str, float]:
    import httpx

    from rating_engine.web.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.sqlite3"
        ledger = make_ledger(f"sqlite:///{path}")
        await ledger.open()
        plan = next(iter(load_tariffs([ROOT / "tariffs" / "office-fr.toml"]).plans.values()))
        await Accounts(ledger).create("big", Accounts.new_settings(plan))
        await Users(ledger).add("admin@big", "benchmark password", "big")
        await ledger.close()
        t = time.perf_counter()
        fill(path, calls)
        filled = time.perf_counter() - t
        ledger = make_ledger(f"sqlite:///{path}")
        await ledger.open()
        deep = await ledger.activity_page("big", limit=1, before=None)
        mark = (deep[0].ended_at - int(YEAR * 0.9), "z")  # 90% of the way back to the oldest call
        app = create_app(ledger, "benchmark-secret" * 2)
        out: dict[str, float] = {"calls": calls, "fill_seconds": round(filled, 1)}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
            page = await client.get("/login")
            token = page.text.split('name="csrftoken" value="', 1)[1].split('"', 1)[0]
            login = {"username": "admin@big", "password": "benchmark password", "csrftoken": token}
            await client.post("/login", data=login)
            since = time.strftime("%Y-%m-01", time.gmtime(START + YEAR - 86_400))  # the last month
            out["ours_first_page_ms"] = await timed(lambda: ledger.activity_page("big", limit=100), repeat)
            out["ours_deep_page_ms"] = await timed(lambda: ledger.activity_page("big", before=mark, limit=100), repeat)
            out["ours_one_extension_page_ms"] = await timed(
                lambda: ledger.activity_page("big", ext="207", before=mark, limit=100), repeat
            )
            month = time.strftime("%Y-%m-%d", time.gmtime(START + YEAR - 31 * 86_400))
            out["ours_totals_all_ms"] = await timed(lambda: ledger.activity_day_totals("big"), repeat)
            out["ours_totals_one_month_ms"] = await timed(
                lambda: ledger.activity_day_totals("big", None, month), repeat
            )
            out["baseline_totals_all_ms"] = await timed(lambda: sum_calls(path, 0), max(3, repeat // 10))
            out["baseline_totals_one_month_ms"] = await timed(
                lambda: sum_calls(path, START + YEAR - 31 * 86_400), max(3, repeat // 10)
            )
            out["ours_whole_page_one_month_ms"] = await timed(
                lambda: client.get(f"/accounts/big/activity?since={since}"), repeat
            )
            out["ours_whole_page_everything_ms"] = await timed(
                lambda: client.get("/accounts/big/activity"), max(3, repeat // 10)
            )
        offset = int(calls * 0.9)

        async def offset_page() -> None:
            db = sqlite3.connect(path)
            db.execute(
                "SELECT * FROM activity WHERE account_id = 'big' ORDER BY ended_at DESC, call_id DESC"
                " LIMIT 100 OFFSET ?",
                (offset,),
            ).fetchall()
            db.close()

        out["baseline_offset_deep_page_ms"] = await timed(offset_page, max(3, repeat // 10))
        out["baseline_load_everything_ms"] = await timed(lambda: ledger.activity("big"), 3)
        await ledger.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = asyncio.run(run(args.calls, args.repeat))
    rows = [
        ["ours: first page (100 calls, keyset)", f"{r['ours_first_page_ms']:.2f}"],
        ["ours: a page 90% of the way back (keyset)", f"{r['ours_deep_page_ms']:.2f}"],
        ["ours: a page of one extension, 90% back", f"{r['ours_one_extension_page_ms']:.2f}"],
        ["ours: totals per extension, one month (daily sums)", f"{r['ours_totals_one_month_ms']:.2f}"],
        ["ours: totals per extension, all calls (daily sums)", f"{r['ours_totals_all_ms']:.2f}"],
        ["ours: the whole page (one month selected), ASGI in-process", f"{r['ours_whole_page_one_month_ms']:.2f}"],
        ["ours: the whole page (everything selected), ASGI in-process", f"{r['ours_whole_page_everything_ms']:.2f}"],
        ["baseline: OFFSET page 90% of the way back", f"{r['baseline_offset_deep_page_ms']:.2f}"],
        ["baseline: totals summed from the calls, one month", f"{r['baseline_totals_one_month_ms']:.2f}"],
        ["baseline: totals summed from the calls, all calls", f"{r['baseline_totals_all_ms']:.2f}"],
        ["baseline: load the whole activity for one page", f"{r['baseline_load_everything_ms']:.2f}"],
    ]
    report(
        f"Prepaid Activity of an account with {args.calls:,} calls (SQLite)",
        ["request", "median ms"],
        rows,
        r,
        args.json,
    )


if __name__ == "__main__":
    main()
