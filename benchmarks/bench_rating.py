"""Batch rating: our vectorized path against the naive per-call path, same calls, same run.

The workload: N calls (1,000,000 by default) over exactly D distinct numbers (100,000) from
~40 country × kind ranges, in national, +, and 00 forms, dialed from France. The naive path is
what a user would write: per call phonenumbers.parse + number_type + a dict longest-prefix loop
+ a Decimal price. Both must agree on every call's decision, prefix and cost, and each distinct
number's E.164, region and kind must be phonenumbers' own. The number table is built (and read
back from its cache) before the timed runs, as the engine does at start; the vectorized path is
the best of --repeat runs, the naive one is timed once (40 s is long enough to average). Also:
one-call decision latency (p50/p99) through `decide`, cold (first sight of a number) and warm.

    python benchmarks/bench_rating.py [--calls N] [--distinct D] [--repeat R] [--band-sample S] [--json]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import phonenumbers
from phonenumbers import PhoneNumberType as T

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import report
from rating_engine import number_cache, number_table
from rating_engine.numbering import Kind, _classify
from rating_engine.rating.batch import BatchResult, rate_batch
from rating_engine.rating.catalog import load_tariffs
from rating_engine.rating.decision import decide
from rating_engine.rating.plan import Plan
from rating_engine.rating.table import RateTable

ROOT = Path(__file__).resolve().parent.parent
AT = 1_795_535_109
RANGES = [
    ("FR", T.FIXED_LINE),
    ("FR", T.MOBILE),
    ("FR", T.PREMIUM_RATE),
    ("FR", T.TOLL_FREE),
    ("FR", T.SHARED_COST),
    ("FR", T.VOIP),
    ("DE", T.FIXED_LINE),
    ("DE", T.MOBILE),
    ("GB", T.FIXED_LINE),
    ("GB", T.MOBILE),
    ("ES", T.FIXED_LINE),
    ("ES", T.MOBILE),
    ("IT", T.FIXED_LINE),
    ("IT", T.MOBILE),
    ("BE", T.FIXED_LINE),
    ("BE", T.MOBILE),
    ("NL", T.FIXED_LINE),
    ("NL", T.MOBILE),
    ("CH", T.FIXED_LINE),
    ("CH", T.MOBILE),
    ("PT", T.MOBILE),
    ("US", T.FIXED_LINE_OR_MOBILE),
    ("CA", T.FIXED_LINE_OR_MOBILE),
    ("MA", T.FIXED_LINE),
    ("MA", T.MOBILE),
    ("DZ", T.MOBILE),
    ("TN", T.MOBILE),
    ("SN", T.MOBILE),
    ("CN", T.MOBILE),
    ("IN", T.MOBILE),
    ("JP", T.FIXED_LINE),
    ("BR", T.MOBILE),
    ("AU", T.MOBILE),
    ("PL", T.MOBILE),
    ("RO", T.MOBILE),
    ("TR", T.MOBILE),
    ("RU", T.FIXED_LINE),
    ("ZA", T.MOBILE),
    ("MX", T.FIXED_LINE),
    ("AE", T.MOBILE),
    ("JM", T.FIXED_LINE_OR_MOBILE),
    ("SE", T.MOBILE),
]


def make_numbers(distinct: int, rng: random.Random) -> list[str]:
    """`distinct` dialed strings; valid numbers in every range, varied in the last digits."""
    out: set[str] = set()
    seeds = []
    for region, kind in RANGES:
        ex = phonenumbers.example_number_for_type(region, kind)
        if ex is not None:
            seeds.append((region, ex))
    while len(out) < distinct:
        region, ex = rng.choice(seeds)
        nsn = str(ex.national_number)
        tail = min(4, len(nsn) - 2)
        nsn = nsn[:-tail] + "".join(rng.choice("0123456789") for _ in range(tail))
        cc = ex.country_code
        form = rng.random()
        if region == "FR" and form < 0.6:
            out.add("0" + nsn)
        elif form < 0.8:
            out.add(f"+{cc}{nsn}")
        else:
            out.add(f"00{cc}{nsn}")
    return sorted(out)


_TYPE_NAMES = {
    T.FIXED_LINE: "fixed",
    T.MOBILE: "mobile",
    T.FIXED_LINE_OR_MOBILE: "fixed_or_mobile",
    T.PREMIUM_RATE: "premium",
    T.TOLL_FREE: "toll_free",
    T.SHARED_COST: "shared_cost",
    T.VOIP: "voip",
    T.PERSONAL_NUMBER: "personal",
    T.UAN: "uan",
    T.PAGER: "pager",
    T.VOICEMAIL: "voicemail",
}
TYPES: dict[int, Kind] = {t: Kind(name) for t, name in _TYPE_NAMES.items()}


def naive_rater(plan: Plan, table: RateTable):  # type: ignore[no-untyped-def]
    """What a user would write: parse, type, dict longest prefix, Decimal money."""
    rates = {r.prefix: r for r in table.rows if r.active_at(AT)}
    longest = max(len(p) for p in rates)
    types = TYPES

    def rate(dialed: str, billsec: int) -> tuple[str, str, int]:
        try:
            n = phonenumbers.parse(dialed, plan.country)
        except phonenumbers.NumberParseException:
            return "invalid_number", "", 0
        kind = types.get(phonenumbers.number_type(n))
        if kind is None or not phonenumbers.is_possible_number(n):
            return "invalid_number", "", 0
        region = phonenumbers.region_code_for_number(n)
        digits = f"{n.country_code}{'0' * (n.number_of_leading_zeros or 1) if n.italian_leading_zero else ''}"
        digits += str(n.national_number)
        if any(digits.startswith(p) for p in plan.blocked_prefixes):
            return "blocked_destination", "", 0
        if plan.is_included(region or "", kind):
            return "included", "", 0
        for length in range(min(len(digits), longest), 0, -1):
            row = rates.get(digits[:length])
            if row is not None:
                break
        else:
            return "no_rate", "", 0
        p = row.price
        if billsec <= 0:
            return "charged", row.prefix, 0
        charged = max(p.initial, p.initial + math.ceil(Decimal(billsec - p.initial) / p.increment) * p.increment)
        money = Decimal(p.connect_fee) + (Decimal(charged) * Decimal(p.per_minute) / 60).to_integral_value(
            "ROUND_CEILING"
        )
        return "charged", row.prefix, int(max(Decimal(p.minimum), money))

    return rate


def _against_phonenumbers(res: BatchResult, dialed: list[str], country: str) -> int:
    """Each distinct number's E.164, region and kind from our batch against phonenumbers itself."""
    seen: set[str] = set()
    bad = 0
    for i, d in enumerate(dialed):
        if d in seen:
            continue
        seen.add(d)
        ours = res.number(i)
        try:
            n = phonenumbers.parse(d, country)
            e164 = f"+{n.country_code}{phonenumbers.national_significant_number(n)}"
            possible = phonenumbers.is_possible_number(n)
            kind = TYPES.get(phonenumbers.number_type(n), "invalid") if possible else "invalid"
            theirs = (e164, phonenumbers.region_code_for_number(n) or "", kind)
        except phonenumbers.NumberParseException:
            theirs = ("", "", "invalid")
        if (ours.e164, ours.region, ours.kind.value) != theirs:
            bad += 1
            if bad <= 5:
                print(f"CLASS MISMATCH {d!r}: ours {ours} phonenumbers {theirs}", file=sys.stderr)
    return bad


WEEK_START = 1_796_425_200  # Monday 2026-12-07 00:00 in Paris


def _band_workload(  # type: ignore[no-untyped-def]
    tariffs, dialed: list[str], billsec: np.ndarray, repeat: int, sample: int, rng: random.Random, log
) -> dict[str, Any]:
    """The same calls on the plan with time bands, started all over one week in Paris: the batch
    against decide() + Fare one by one on a sample, and the two compared call by call."""
    plan = tariffs.plan("office-fr-bands")
    rates = tariffs.rates_for(plan)
    starts = np.array([WEEK_START + rng.randrange(7 * 86400) for _ in dialed], dtype=np.int64)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = rate_batch(plan, rates, dialed, starts, billsec)
        best = min(best, time.perf_counter() - t0)
    n = min(sample, len(dialed))
    t0 = time.perf_counter()
    one = []
    crossing = 0
    for i in range(n):
        d = decide(plan, rates, dialed[i], int(starts[i]))
        if d.charged and d.fare is not None:
            one.append(d.fare.cost(int(billsec[i])))
            crossing += len(d.fare.pieces) > 1 and d.fare.pieces[1][0] < billsec[i]
        else:
            one.append(0)
    single_s = time.perf_counter() - t0
    bad = sum(int(res.costs[i]) != one[i] for i in range(n))
    log(f"bands: vectorized {best:.2f} s; one by one {n:,} calls in {single_s:.2f} s ({crossing} cross a band)")
    return {
        "calls": len(dialed),
        "vectorized_seconds": round(best, 3),
        "vectorized_calls_per_s": round(len(dialed) / best),
        "one_by_one_calls": n,
        "one_by_one_calls_per_s": round(n / single_s),
        "mismatches": bad,
        "sample_calls_crossing_a_band": int(crossing),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--distinct", type=int, default=100_000)
    ap.add_argument("--latency-calls", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--band-sample", type=int, default=50_000, help="calls priced one by one beside the batch")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = random.Random(7)
    tariffs = load_tariffs([ROOT / "tariffs/office-fr.toml", ROOT / "tariffs/office-fr-bands.toml"])
    plan = tariffs.plan("office-fr")
    table = tariffs.table_for(plan)

    numbers = make_numbers(args.distinct, rng)
    picks = list(range(len(numbers))) + [rng.randrange(len(numbers)) for _ in range(args.calls - len(numbers))]
    rng.shuffle(picks)
    dialed = [numbers[i] for i in picks]
    billsec = np.array([rng.choice((0, rng.randint(1, 1800))) for _ in dialed], dtype=np.int64)
    log = print if not args.json else (lambda *a, **k: None)
    distinct = len(set(dialed))
    log(f"workload: {len(dialed):,} calls over {distinct:,} distinct numbers from {len(RANGES)} ranges")

    t0 = time.perf_counter()
    numbers_table = number_table.build()
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as cache:
        number_cache.save(numbers_table, Path(cache) / number_cache.file_name())
        t0 = time.perf_counter()
        number_cache.install(Path(cache))
        load_s = time.perf_counter() - t0
    log(f"number table: {len(numbers_table):,} ranges, built in {build_s:.2f} s, read from its cache in {load_s:.3f} s")

    vector_s = math.inf
    for _ in range(args.repeat):  # the best of a few: this machine's speed varies from run to run
        _classify.cache_clear()
        t0 = time.perf_counter()
        res = rate_batch(plan, table, dialed, AT, billsec)
        vector_s = min(vector_s, time.perf_counter() - t0)
    log(f"vectorized: {vector_s:.2f} s (best of {args.repeat})")
    class_mismatches = _against_phonenumbers(res, dialed, plan.country)

    naive = naive_rater(plan, table)
    bs = billsec.tolist()
    t0 = time.perf_counter()
    naive_out = [naive(d, s) for d, s in zip(dialed, bs, strict=True)]
    naive_s = time.perf_counter() - t0
    log(f"naive: {naive_s:.2f} s")

    mismatches = 0
    for i, (reason, prefix, money) in enumerate(naive_out):
        row = int(res.rows[i])
        ours = (res.reason(i).value, table.rows[row].prefix if row >= 0 else "", int(res.costs[i]))
        if ours != (reason, prefix, money):
            mismatches += 1
            if mismatches <= 5:
                print(f"MISMATCH {dialed[i]!r}: ours {ours} naive {(reason, prefix, money)}", file=sys.stderr)

    bands = _band_workload(tariffs, dialed, billsec, args.repeat, args.band_sample, rng, log)

    # One-call latency through the real-time entry point: first sight (cold) and cached (warm).
    _classify.cache_clear()
    sample = dialed[: args.latency_calls]
    seen: set[str] = set()
    cold: list[int] = []
    warm: list[int] = []
    for d in sample:
        t = time.perf_counter_ns()
        decide(plan, table, d, AT, budget=10_000_000)
        (warm if d in seen else cold).append(time.perf_counter_ns() - t)
        seen.add(d)
    both = np.array(cold + warm) / 1000

    def pct(xs: list[int], q: float) -> float:
        return float(np.percentile(np.array(xs) / 1000, q)) if xs else float("nan")

    calls = len(dialed)
    data: dict[str, Any] = {
        "calls": calls,
        "distinct_numbers": len(numbers),
        "ranges": len(RANGES),
        "vectorized": {"seconds": round(vector_s, 3), "calls_per_s": round(calls / vector_s)},
        "naive_baseline": {"seconds": round(naive_s, 3), "calls_per_s": round(calls / naive_s)},
        "speedup": round(naive_s / vector_s, 1),
        "mismatches": mismatches,
        "classification_mismatches_vs_phonenumbers": class_mismatches,
        "number_table": {
            "ranges": len(numbers_table),
            "classes": len(numbers_table.classes),
            "bytes": numbers_table.nbytes,
            "build_seconds": round(build_s, 3),
            "cache_read_seconds": round(load_s, 4),
        },
        "bands": bands,
        "decide_latency_us": {
            "calls": len(sample),
            "p50": round(float(np.percentile(both, 50)), 2),
            "p99": round(float(np.percentile(both, 99)), 2),
            "cold_p50": round(pct(cold, 50), 2),
            "cold_p99": round(pct(cold, 99), 2),
            "warm_p50": round(pct(warm, 50), 2),
            "warm_p99": round(pct(warm, 99), 2),
            "cold_calls": len(cold),
            "warm_calls": len(warm),
        },
    }
    lat = data["decide_latency_us"]
    report(
        "bench_rating",
        ["path", "calls/s", "seconds", "vs naive"],
        [
            [
                "vectorized (ours)",
                f"{calls / vector_s:,.0f}",
                f"{vector_s:.2f}",
                f"{naive_s / vector_s:.1f}x",
            ],
            ["naive per call (baseline)", f"{calls / naive_s:,.0f}", f"{naive_s:.2f}", "1.0x"],
            [
                "time bands, vectorized",
                f"{bands['vectorized_calls_per_s']:,}",
                f"{bands['vectorized_seconds']:.2f}",
                f"{bands['vectorized_calls_per_s'] / bands['one_by_one_calls_per_s']:.1f}x",
            ],
            ["time bands, one by one (baseline)", f"{bands['one_by_one_calls_per_s']:,}", "", "1.0x"],
            ["decide() p50 / p99 µs", f"{lat['p50']} / {lat['p99']}", "", ""],
            ["  cold p50 / p99 µs", f"{lat['cold_p50']} / {lat['cold_p99']}", f"({lat['cold_calls']:,})", ""],
            ["  warm p50 / p99 µs", f"{lat['warm_p50']} / {lat['warm_p99']}", f"({lat['warm_calls']:,})", ""],
            ["number table", f"{len(numbers_table):,} ranges", f"{numbers_table.nbytes / 1e6:.1f} MB", ""],
            ["disagreements", f"{mismatches} calls", f"{class_mismatches} numbers", "vs phonenumbers"],
        ],
        data,
        args.json,
    )
    mismatches += bands["mismatches"]
    if mismatches or class_mismatches:
        print(f"{mismatches} call(s) and {class_mismatches} number(s) disagree", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
