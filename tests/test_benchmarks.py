"""The benchmarks still run, end to end, on tiny sizes: each figure is printed beside the baseline
of its run, and the checks they make along the way hold (the ledger's proof after the load, every
authorization answered by the engine rather than its fallback, the fast paths agreeing with the
slow ones). Their speed is theirs to measure, never asserted here.

A benchmark that no test runs breaks quietly: `bench_ledger --pairs 400` divided by zero until
this test ran it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench_authorize import UNWRITTEN, WATCH_TICK, _Seen, waited
from benchmarks.bench_ledger import BENCH_DATABASE
from tests.ledgers import pg_unavailable

ROOT = Path(__file__).resolve().parent.parent


def bench(name: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def postgres_or_why() -> str:
    """Empty when PostgreSQL answers; under CI its absence is a failure, not a skip."""
    reason = pg_unavailable()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the PostgreSQL benchmarks: {reason}")
    return reason


def test_bench_ledger_reports_every_backend_beside_its_baselines() -> None:
    absent = postgres_or_why()
    data = bench("bench_ledger", "--pairs", "400", "--rounds", "2", *(["--no-postgres"] if absent else []))
    rates = data["pairs_per_s"]
    rounds = data["pairs_per_s_by_round"]
    assert len(rounds) == 2
    for key, ratio in data["vs_baseline"].items():  # each round against its own baseline, then the median
        base = f"naive_sqlite_full/{key.split('/')[1].replace('many', '100')}"
        # the rounds' rates are whole pairs/s: a ratio taken again from them is off by up to half a pair
        # on each side (31.43 against 31.40 for a fast path over a slow disk's baseline of ~300/s)
        off = max(r[key] / r[base] * (0.5 / r[key] + 0.5 / r[base]) for r in rounds)
        assert ratio == pytest.approx(statistics.median(r[key] / r[base] for r in rounds), abs=0.006 + off), key
        assert rates[key] == pytest.approx(statistics.median(r[key] for r in rounds), abs=1), key
    for key in ("naive_sqlite_full/1", "naive_sqlite_full/100", "ours_sqlite_full/1", "ours_sqlite_full/100"):
        assert rates[key] > 0, key
    assert rates["ours_sqlite_full/many"] > 0
    if absent:
        pytest.skip(f"the SQLite part ran; the PostgreSQL part did not: {absent}")
    for name in ("ours_postgres", "postgres_per_op"):
        for tasks in ("1", "100", "many"):
            assert rates[f"{name}/{tasks}"] > 0
            assert data["cpu_us_per_pair"][f"{name}/{tasks}"]["postgresql"] is not None


def test_bench_refusals_reports_each_path_beside_its_own_backend_s_baseline() -> None:
    """An account that has run out: the benchmark itself checks that every attempt on the dry account
    is refused for its money and that each storm holds exactly what the money pays for, on each path."""
    absent = postgres_or_why()
    data = bench("bench_refusals", "--attempts", "200", "--rounds", "2", *(["--no-postgres"] if absent else []))
    rates, rounds = data["attempts_per_s"], data["attempts_per_s_by_round"]
    assert len(rounds) == 2
    baseline = {"ours_sqlite": "sqlite_programs", "ours_postgres": "postgres_per_op"}
    for key, ratio in data["vs_baseline"].items():
        name, load = key.split("/")
        base = f"{baseline[name]}/{load}"
        off = max(r[key] / r[base] * (0.5 / r[key] + 0.5 / r[base]) for r in rounds)  # whole attempts/s
        assert ratio == pytest.approx(statistics.median(r[key] / r[base] for r in rounds), abs=0.006 + off), key
    for load in ("dry", "storm"):
        for name in ("sqlite_programs", "ours_sqlite"):
            assert rates[f"{name}/{load}"] > 0
        assert f"ours_sqlite/{load}" in data["vs_baseline"]
    if absent:
        pytest.skip(f"the SQLite part ran; the PostgreSQL part did not: {absent}")
    for load in ("dry", "storm"):
        for name in ("postgres_per_op", "ours_postgres"):
            assert rates[f"{name}/{load}"] > 0
            assert data["cpu_us_per_attempt"][f"{name}/{load}"]["postgresql"] is not None
        assert f"ours_postgres/{load}" in data["vs_baseline"]


def test_bench_authorize_answers_every_request_from_the_engine_beside_the_bare_server() -> None:
    absent = postgres_or_why()
    args = ["--requests", "100", "--open-seconds", "0.3", "--rounds", "2", *(["--no-postgres"] if absent else [])]
    data = bench("bench_authorize", *args)
    rows = data["results"]
    measured = [r for r in rows if "per_s" in r]
    # Each round's ratio is taken against the baseline measured beside it, then the median shown.
    base = {(r["loop"], r["concurrency"], r["round"]): r for r in measured if r["path"].startswith("baseline")}
    for s in (s for s in data["summary"] if "vs_bare" in s):
        rounds = [
            r for r in measured if (r["loop"], r["path"], r["concurrency"]) == (s["loop"], s["path"], s["concurrency"])
        ]
        assert sorted(r["round"] for r in rounds) == [0, 1]
        ratios = []
        for r in rounds:
            b = base[(r["loop"], r["concurrency"], r["round"])]
            ratios.append(r["p99_ms"] / b["p99_ms"] if r["concurrency"] < 0 else r["per_s"] / b["per_s"])
        assert s["vs_bare"] == pytest.approx(statistics.median(ratios), abs=0.01)
        assert s["vs_bare_min"] <= s["vs_bare"] <= s["vs_bare_max"]
    loads = {(r["loop"], r["concurrency"]) for r in measured}
    bare = {(r["loop"], r["concurrency"]) for r in measured if r["path"].startswith("baseline")}
    assert bare == loads  # every load has its baseline in the same run
    assert {c for _loop, c in loads} >= {1, 50, 500, -1000}
    ours = [r for r in measured if r["path"] in ("ours: SQLite", "ours: PostgreSQL", UNWRITTEN)]
    assert {r["path"] for r in ours} == {"ours: SQLite", UNWRITTEN} | (set() if absent else {"ours: PostgreSQL"})
    # The C generator where a compiler builds it (CI's machines have one), each request answered.
    assert data["generator"] == (["C (agi_load.c)"] if shutil.which("cc") else ["Python"])
    assert all(r["failed"] == 0 and r["generator"] == data["generator"][0] for r in measured)
    for r in measured:  # a request's latency counts from its due time, so the generator's lateness is in it
        if r["concurrency"] < 0:
            assert 0 <= r["generator_late_p50_ms"] <= r["p50_ms"] and r["generator_late_p99_ms"] <= r["p99_ms"], r
            # Linux's kernel timer, not the loop's millisecond ones (see benchmarks/pacing.py)
            assert r["generator_timer"] == ("timerfd" if sys.platform.startswith("linux") else "loop timers")
        else:
            assert r["generator_late_p99_ms"] is None  # a closed loop sends each request when the last is answered
            assert r["generator_timer"] is None
    for r in ours:
        assert r["per_s"] > 0 and r["p50_ms"] <= r["p99_ms"] <= r["p999_ms"]
        assert r["fallbacks"] == 0, r  # every authorization came from the engine, none from its fallback
        assert r["server_cpu_us"] > 0
        assert r["server_switches"] >= 0
        # the server, PostgreSQL and the generator together (no upper bound here: /proc counts other
        # processes' CPU in clock ticks, coarse against these runs of a few hundredths of a second)
        assert r["cores_busy"] > 0, r
        if r["path"] == "ours: PostgreSQL":
            assert r["postgresql_cpu_us"] is not None
        # between runs, every call the run authorized was hung up through the engine's Hangup path,
        # its reservation released: each run starts with no call up, as a PBX's calls end
        assert r["calls_up_before"] == 0 and r["calls_hung_up"] == r["requests"], r
        assert r["reservations_left"] == 0, r
        if r["path"] != UNWRITTEN:  # each written reservation went in a batch, and each batch was timed
            assert r["batches"] > 0 and 0 < r["batch_p99_ms"] <= r["batch_max_ms"], r
    for r in measured:  # where a slow answer waited: the loop's lateness, watched through every run here
        if "process" in r["path"]:
            assert r.get("loop_late_max_ms") is None  # another process's loop: not watched from here
        elif r["requests"] / r["per_s"] > 4 * WATCH_TICK:  # a run of a few ticks may see none of them
            assert 0 <= r["loop_late_p99_ms"] <= r["loop_late_max_ms"], r
        if "process" not in r["path"]:
            assert (r["batches"] is None) == r["path"].startswith("baseline"), r  # no ledger, no batch
            assert r["collection_max_ms"] >= 0 and (r["collections"] > 0 or r["collection_max_ms"] == 0), r
    assert any(r.get("collections") for r in ours)  # the engine allocates: its runs saw the collector
    # One process and then two on one port, bare and (with PostgreSQL) ours: each pair of runs
    # compared with its own kind's single process, in the same round and at the same load.
    kinds = ["bare FastAGI"] + ([] if absent else ["ours: PostgreSQL"])
    for who in kinds:
        for c in (50, 500):
            for round_ in (0, 1):
                runs = {r["path"]: r for r in measured if r["concurrency"] == c and r["round"] == round_}
                one, two = runs[f"{who}, 1 process (reuse_port)"], runs[f"{who}, 2 processes (reuse_port)"]
                assert two["vs_one_process"] == pytest.approx(two["per_s"] / one["per_s"], abs=0.01)
                assert one["server_switches"] is None  # measured in this process only
                # the processes' own CPU, read from /proc (in clock ticks: a run this short may not
                # move them); the ceiling: the cores over what one process's run kept busy (what two
                # could reach at the same CPU per authorization)
                assert one["server_cpu_us"] is not None and two["server_cpu_us"] is not None
                busy = one["cores_busy"]
                assert busy > 0
                assert two["ceiling_vs_one_process"] == pytest.approx((os.cpu_count() or 1) / busy, abs=0.01)
    shared = {s["path"]: s for s in data["summary"] if s["path"].endswith("2 processes / 1 process")}
    assert set(shared) == {f"{who}: 2 processes / 1 process" for who in kinds}
    assert all(s["ceiling"] > 0 for s in shared.values())
    if absent:
        pytest.skip(f"bare and SQLite ran; PostgreSQL and its two processes on one port did not: {absent}")
    # the engine processes hung their calls up too before they stopped: the ledger they shared
    # holds no reservation and no money reserved, as a PBX's would once its calls ended
    assert asyncio.run(_held_in_bench_database()) == (0, 0)


async def _held_in_bench_database() -> tuple[int, int]:
    """Reservations, and money reserved, in the database `bench_authorize` left behind."""
    import asyncpg

    conn = await asyncpg.connect(BENCH_DATABASE)
    try:
        return (
            await conn.fetchval("SELECT count(*) FROM reservations"),
            await conn.fetchval("SELECT coalesce(sum(reserved), 0) FROM accounts"),
        )
    finally:
        await conn.close()


def test_bench_rating_agrees_with_phonenumbers_and_the_one_by_one_path() -> None:
    data = bench(
        "bench_rating",
        *("--calls", "2000", "--distinct", "500", "--latency-calls", "200", "--repeat", "1", "--band-sample", "200"),
    )
    assert data["mismatches"] == 0
    assert data["classification_mismatches_vs_phonenumbers"] == 0
    assert data["bands"]["mismatches"] == 0
    assert data["vectorized"]["calls_per_s"] > 0 and data["naive_baseline"]["calls_per_s"] > 0


def test_bench_deck_and_bench_activity_run_beside_their_baselines() -> None:
    deck = bench("bench_deck", "--rows", "2000")
    assert deck["naive"]["rows"] == deck["ours"]["rows"] == deck["held"]["rows"] == 2000
    activity = bench("bench_activity", "--calls", "2000", "--repeat", "2")
    assert activity["calls"] == 2000
    assert activity["ours_deep_page_ms"] > 0 and activity["baseline_offset_deep_page_ms"] > 0


@pytest.mark.timeout(600)  # PostgreSQL under callgrind: ~1 min on a fast machine, ~2 on a slow one
def test_bench_pg_instructions_counts_each_path_beside_the_per_operation_baseline() -> None:
    """Counted by callgrind on a server of its own: every row has its count, and the rows "before v9"
    really run with the names in the database's collation (on the linguistic database that costs
    more instructions: were the columns left in "C", the two rows would count alike)."""
    missing = [tool for tool in ("valgrind", "pg_config", "runuser") if shutil.which(tool) is None]
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the instruction counts: {', '.join(missing)} not found")
    if missing:
        pytest.skip(f"{', '.join(missing)} not found")
    data = bench("bench_pg_instructions", "--pairs", "50", "--accounts", "20")
    counts = data["instructions_per_pair"]
    assert set(counts) == {"programs", "ours", "ours_made", "ours_v8", "ours_10", "ours_2", "icu", "icu_v8"}
    assert all(n > 10_000 for n in counts.values()), counts
    assert data["vs_baseline"]["programs"] == 1.0
    assert counts["icu_v8"] > 1.05 * counts["icu"], counts
    assert counts["ours_2"] > counts["ours_10"] > counts["ours_made"], counts  # the function's cost a call, shared out


def _run(path: str, concurrency: int, per_s: int, **extra: Any) -> dict[str, Any]:
    """One measured run as `bench_authorize.measure` reports it (closed loop, round 0)."""
    return {
        "loop": "uvloop",
        "path": path,
        "concurrency": concurrency,
        "round": 0,
        "per_s": per_s,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "generator_cpu_pct": 30,
        "generator_timer": None,
        "server_cpu_us": 200,
        "postgresql_cpu_us": None,
        "server_switches": None,
        **extra,
    }


def test_bench_authorize_table_puts_each_figure_under_its_own_header() -> None:
    from benchmarks.bench_authorize import COLUMNS, summarize, table_row

    results = [
        _run("baseline: bare FastAGI", 50, 5000, cores_busy=1.5, loop_late_max_ms=2.0),
        _run("ours: SQLite", 50, 3000, loop_late_max_ms=3.0, batch_max_ms=1.5, collection_max_ms=0.5),
        _run("bare FastAGI, 1 process (reuse_port)", 50, 4000, cores_busy=1.6),
        _run("bare FastAGI, 2 processes (reuse_port)", 50, 5000, cores_busy=1.9),
        {"loop": "uvloop", "path": "ours: PostgreSQL", "skipped": "no server"},
    ]
    rows, _summary = summarize(results)
    header = list(COLUMNS.values())
    assert all(len(row) == len(header) for row in rows)
    cells = [dict(zip(header, row, strict=True)) for row in rows]
    pair = next(c for c in cells if c["path"].endswith("2 processes / 1"))
    assert pair["vs bare"] == "1.25x"  # 5,000 / 4,000: two processes against one
    assert pair["cores busy"] == f"ceiling {(os.cpu_count() or 1) / 1.6:.2f}x"  # the cores over one process's
    assert pair["auth/s"] == "" and pair["CPU µs/auth: here / PostgreSQL"] == ""
    skipped = next(c for c in cells if c["path"] == "ours: PostgreSQL")
    assert skipped["auth/s"] == "skipped: no server" and skipped["cores busy"] == ""
    bare = next(c for c in cells if c["path"] == "baseline: bare FastAGI")
    assert (bare["auth/s"], bare["vs bare"], bare["cores busy"]) == ("5,000", "1.00x", f"1.50 of {os.cpu_count()}")
    ours = next(c for c in cells if c["path"] == "ours: SQLite")
    waited = "loop late / batch / collector, max ms"
    assert (ours["vs bare"], ours[waited]) == ("0.60x", "3.0 / 1.5 / 0.5")
    assert bare[waited] == "2.0 / - / -" and pair[waited] == ""
    with pytest.raises(KeyError, match="no such column"):
        table_row(loop="uvloop", rate_per_s="1")


async def test_the_servers_cpu_never_falls_when_one_of_its_processes_ends(pg_url: str) -> None:
    """The benchmarks read PostgreSQL's CPU from /proc before and after a run. A backend that ended
    in between took its time out of /proc with it, and the figure fell (once -0.36 cores busy: a
    failed run). Its time moves to the postmaster's count of reaped children, which is added now."""
    import asyncio

    import asyncpg

    from benchmarks.common import cpu_seconds

    conn = await asyncpg.connect(pg_url)
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    await conn.fetchval("SELECT count(*) FROM generate_series(1, 3000000)")  # a few tenths of a second
    _, before = cpu_seconds()
    await conn.close()
    for _ in range(100):  # until the postmaster has reaped it
        if not Path(f"/proc/{pid}").exists():
            break
        await asyncio.sleep(0.05)
    _, after = cpu_seconds()
    assert before is not None and after is not None and after >= before, (before, after)


def test_bench_authorize_counts_only_the_waits_within_the_generator_s_run() -> None:
    """The benchmark builds the run's environments and spawns the generator in its own event loop
    before the first request: 16-20 ms of a late loop before an open-loop run, which the loop watch
    saw and the table showed as the run's longest wait. A wait counts only if it began and
    ended while the generator ran."""
    late, batches, passes = _Seen(), _Seen(), _Seen()
    for seen, waits in (
        (late, [(10.5, 0.040), (12.0, 0.001), (15.0, 0.003), (20.5, 0.030)]),
        (batches, [(11.0, 0.002), (19.999, 0.004), (21.0, 0.5)]),
        (passes, [(9.0, 0.010), (13.0, 0.0015)]),
    ):
        seen.ended, seen.seen = [at for at, _ in waits], [s for _, s in waits]
    got = waited(late, batches, passes, window=(10.49, 20.0))
    # the setup's 40 ms ended in the window but began before it; the 30 ms came after the last answer
    assert (got["loop_late_max_ms"], got["batch_max_ms"], got["batches"]) == (3.0, 4.0, 2)
    assert (got["collections"], got["collection_max_ms"]) == (1, 1.5)
    everything = waited(late, batches, passes)
    assert (everything["loop_late_max_ms"], everything["batches"], everything["collections"]) == (40.0, 3, 2)
