"""Tariff commands: validate decks and plans, show a plan, explain one call, re-rate a file."""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .. import number_cache
from ..errors import ConfigError, TariffError, TariffErrors
from ..money import format_amount, parse_amount
from ..rating.bands import DAYS, HOLIDAY, Bands, hhmm, parse_bands, zone_info
from ..rating.bands import HEADER as BANDS_HEADER
from ..rating.batch import rate_batch
from ..rating.catalog import Tariffs, load_tariffs
from ..rating.decision import decide
from ..rating.deck import FOREVER, SINCE_EVER, load_deck
from ..rating.plan import Plan
from ..rating.price import MAX_BILLSEC, Segment
from ..rating.rates import PlanRates
from .common import Progress, iso, parse_time, print_json, table

IN_COLUMNS = ("call_id", "extension", "dialed", "start", "billsec")
OUT_COLUMNS = (
    *IN_COLUMNS,
    "e164",
    "region",
    "kind",
    "decision",
    "prefix",
    "destination",
    "charged_seconds",
    "cost",
    "band",
)
CHUNK = 100_000


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    t = sub.add_parser("tariffs", help="validate and inspect rate decks and plans")
    tsub = t.add_subparsers(dest="tariffs_command", metavar="ACTION", required=True)
    v = tsub.add_parser("validate", help="check decks and bands files (.csv) and plans (.toml); exit 1 on problems")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.set_defaults(handler=cmd_validate)
    s = tsub.add_parser("show", help="a plan's settings and its rate rows")
    s.add_argument("plan", metavar="PLAN")
    s.add_argument("--prefix", help="only rows whose prefix starts with this")
    s.set_defaults(handler=cmd_show)

    r = sub.add_parser("rate", help="explain the decision and price for one number")
    r.add_argument("number", metavar="NUMBER")
    r.add_argument("--plan", required=True, help="the calling plan (.toml)")
    r.add_argument("--at", help="call start, ISO 8601 or unix seconds (default: now; no zone = UTC)")
    r.add_argument("--seconds", type=int, help="price a call of this many billable seconds")
    r.add_argument("--budget", help="how long this amount pays for (decimal, plan currency)")
    r.add_argument("--tz", help="the account's time zone, for time bands (default: the plan's)")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(handler=cmd_rate)

    f = sub.add_parser(
        "rate-file",
        help="re-rate a CSV of calls",
        description="Re-rate a CSV of calls. A bad row, or a call id already rated on an earlier line, goes to"
        " the rejects file with its line and the reason; nothing is written unless the whole file was read.",
    )
    f.add_argument("input", metavar="IN.csv", help=f"columns {','.join(IN_COLUMNS)}")
    f.add_argument("-o", "--output", required=True, metavar="OUT.csv")
    f.add_argument("--plan", required=True, help="the calling plan (.toml)")
    f.add_argument("--rejects", metavar="FILE", help="bad rows go here (default: OUT.rejects.csv)")
    f.add_argument("--tz", help="the account's time zone, for time bands (default: the plan's)")
    f.set_defaults(handler=cmd_rate_file)


def _single_plan(path: str) -> tuple[Tariffs, Plan]:
    tariffs = load_tariffs([path])
    return tariffs, next(iter(tariffs.plans.values()))


def _is_bands_file(name: str) -> bool:
    """A bands file is told from a deck by its header (band,days,from,until)."""
    try:
        with open(name, encoding="utf-8") as f:
            for line in f:
                if line.strip() and not line.lstrip().startswith("#"):
                    return tuple(c.strip().lower() for c in line.split(",")) == BANDS_HEADER
    except (OSError, UnicodeDecodeError):
        return False
    return False


def cmd_validate(args: argparse.Namespace) -> int:
    problems: list[TariffError] = []
    said: list[str] = []
    warnings: list[str] = []
    for name in args.files:
        try:
            if name.endswith(".toml"):
                tariffs = load_tariffs([name])
                warnings += tariffs.warnings()
                said += [f"{name}: plan {p.name}, deck {p.deck} ({len(tariffs.by_plan[p.name]):,} rates)"
                         for p in tariffs.plans.values()]  # fmt: skip
            elif _is_bands_file(name):
                parse_bands(Path(name).read_text(encoding="utf-8").splitlines(), name)
                said.append(f"{name}: time bands")
            else:
                deck = load_deck(name)
                said.append(f"{name}: {len(deck):,} rates")
                if not len(deck):
                    warnings.append(f"{name}: no rates: a plan with this deck refuses every call it does not include")
        except TariffErrors as exc:
            problems.extend(exc.errors)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s); nothing was loaded", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    for line in said:
        print(f"ok: {line}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    tariffs, plan = _single_plan(args.plan)
    t = tariffs.table_for(plan)
    print(f"plan      {plan.name}  ({plan.description})" if plan.description else f"plan      {plan.name}")
    print(f"country   {plan.country}    currency {plan.currency}")
    print(f"deck      {plan.deck}  ({len(t)} rows)")
    for rule in plan.included:
        print(f"included  {', '.join(sorted(rule.kinds))} in {', '.join(sorted(rule.regions))}")
    print(
        f"blocked   kinds: {', '.join(sorted(plan.blocked_kinds)) or '-'}; "
        f"prefixes: {', '.join(plan.blocked_prefixes) or '-'}"
    )
    print(f"premium   {plan.premium}    short codes {plan.short_codes}")
    if plan.bands is not None:
        holidays = len(plan.bands.holidays)
        print(f"bands     {plan.bands.source} in {plan.timezone} (an account's own zone wins); {holidays} holiday(s)")
        for name, deck in zip(plan.bands.names, plan.band_decks, strict=True):
            print(f"  {name:<9} {deck.name}: {_hours_of(plan.bands, name)}")
    print()
    rows = [r for r in t.rows if not args.prefix or r.prefix.startswith(args.prefix)]
    c = plan.currency
    table(
        [
            [
                r.prefix,
                r.destination,
                format_amount(r.price.per_minute, c),
                format_amount(r.price.connect_fee, c),
                f"{r.price.initial}/{r.price.increment}",
                format_amount(r.price.minimum, c),
                "" if r.valid_from == SINCE_EVER else iso(r.valid_from),
                "" if r.valid_until == FOREVER else iso(r.valid_until),
            ]
            for r in rows
        ],
        ["prefix", "destination", "per_min", "connect", "incr", "minimum", "from", "until"],
    )
    return 0


def _hours_of(bands: Bands, name: str) -> str:
    """A band's hours, consecutive days with the same hours joined: "mon-fri 08:00-19:00"."""
    band = bands.names.index(name)
    spans = [", ".join(f"{hhmm(a)}-{hhmm(b)}" for a, b, x in bands.days[d] if x == band) for d in range(8)]
    out: list[str] = []
    d = 0
    while d < 8:
        end = d
        while end + 1 < HOLIDAY and d < HOLIDAY and spans[end + 1] == spans[d]:
            end += 1
        if spans[d]:
            days = "holiday" if d == HOLIDAY else DAYS[d] if end == d else f"{DAYS[d]}-{DAYS[end]}"
            out.append(f"{days} {spans[d]}")
        d = end + 1
    return "; ".join(out)


def cmd_rate(args: argparse.Namespace) -> int:
    tariffs, plan = _single_plan(args.plan)
    number_cache.install()
    at = parse_time(args.at) if args.at else int(time.time())
    if args.seconds is not None and not 0 <= args.seconds <= MAX_BILLSEC:
        raise ConfigError(f"--seconds: from 0 to {MAX_BILLSEC}")
    budget = parse_amount(args.budget) if args.budget is not None else None
    tz = _zone(args.tz)
    rates = tariffs.rates_for(plan)
    d = decide(plan, rates, args.number, at, budget=budget, tz=tz)
    c, cur = d.number, plan.currency
    out: dict[str, Any] = {
        "dialed": args.number,
        "plan": plan.name,
        "at": iso(at),
        "e164": c.e164,
        "region": c.region,
        "kind": c.kind.value,
        "status": d.status,
        "reason": d.reason.value,
    }
    if c.reason:
        out["why"] = c.reason
    if c.short_cost:
        out["short_number_cost"] = c.short_cost
    if d.row is not None:
        p = d.row.price
        out["rate"] = {
            "prefix": d.row.prefix,
            "destination": d.row.destination,
            "per_minute": format_amount(p.per_minute, cur),
            "connect_fee": format_amount(p.connect_fee, cur),
            "increments": f"{p.initial}/{p.increment}",
            "minimum": format_amount(p.minimum, cur),
            "deck_line": d.row.line,
        }
        if d.band:
            out["band"] = d.band
            out["timezone"] = rates.zone(tz)
        if args.seconds is not None and d.fare is not None:
            segments = d.fare.segments(args.seconds)
            out["seconds"] = args.seconds
            out["charged_seconds"] = sum(g.charged for g in segments)
            out["cost"] = format_amount(d.fare.cost(args.seconds), cur)
            if rates.bands is not None:
                out["segments"] = [_segment(g, at, rates, tz, cur) for g in segments]
    elif args.seconds is not None:
        out["seconds"], out["cost"] = args.seconds, format_amount(0, cur)
    if budget is not None:
        out["budget"] = format_amount(budget, cur)
        out["max_seconds"] = d.max_seconds if d.charged else None
    if args.json:
        print_json(out)
        return 0
    _explain(out, cur)
    return 0


def _zone(tz: str | None) -> str | None:
    if tz is not None:
        try:
            zone_info(tz)
        except TariffError as exc:
            raise ConfigError(f"--tz: {exc.message}") from None
    return tz


def _segment(g: Segment, at: int, rates: PlanRates, tz: str | None, cur: str) -> dict[str, Any]:
    zone = zone_info(rates.zone(tz))
    return {
        "from": datetime.fromtimestamp(at + g.offset, zone).isoformat(),
        "band": rates.band_name(rates.band_at(at + g.offset, tz)),
        "seconds": g.seconds,
        "charged_seconds": g.charged,
        "per_minute": format_amount(g.price.per_minute, cur),
        "increments": f"{g.price.initial}/{g.price.increment}" if g.offset == 0 else f"{g.price.increment}",
        "cost": format_amount(g.money, cur),
    }


def _explain(o: dict[str, Any], currency: str) -> None:
    print(f"{o['dialed']} → {o['e164'] or '-'}  region {o['region'] or '-'}  kind {o['kind']}")
    verdict = {
        "emergency": "emergency number: always allowed, never charged",
        "included": f"included in plan {o['plan']}: free, no reservation",
        "charged": "charged from the prepaid account",
    }.get(o["reason"])
    print(f"{o['status']} ({o['reason']}): {verdict or 'refused'}" + (f" — {o['why']}" if "why" in o else ""))
    if "rate" in o:
        r = o["rate"]
        print(
            f"rate: prefix {r['prefix']} {r['destination']} (deck line {r['deck_line']}): "
            f"{r['per_minute']} {currency}/min, connect {r['connect_fee']}, "
            f"increments {r['increments']} s, minimum {r['minimum']}"
        )
    if "band" in o:
        print(f"band at the start: {o['band']} ({o['timezone']})")
    for g in o.get("segments", []):
        print(
            f"  from {g['from']}  {g['band']}: {g['seconds']} s billed as {g['charged_seconds']} s "
            f"(increments {g['increments']}) at {g['per_minute']} {currency}/min = {g['cost']}"
        )
    if "cost" in o:
        print(
            f"cost of {o['seconds']} s: {o['cost']} {currency}"
            + (f" (billed as {o['charged_seconds']} s)" if "charged_seconds" in o else "")
            + (", connect fee and minimum once per call" if len(o.get("segments", [])) > 1 else "")
        )
    if "max_seconds" in o:
        limit = "no limit from money" if o["max_seconds"] is None else f"{o['max_seconds']} s"
        print(f"budget {o['budget']} {currency} pays for: {limit}")


def cmd_rate_file(args: argparse.Namespace) -> int:
    """Rate a CSV into OUT and OUT.rejects.csv; both appear only complete (written to temporary
    files beside them, renamed at the end), and neither may be the input."""
    tariffs, plan = _single_plan(args.plan)
    rates = tariffs.rates_for(plan)
    tz = _zone(args.tz)
    number_cache.install()
    src = Path(args.input)
    out_path = Path(args.output)
    rejects_path = Path(args.rejects or f"{args.output}.rejects.csv")
    _check_paths(src, out_path, rejects_path)
    try:
        with src.open("rb") as counting:
            total = max(sum(chunk.count(b"\n") for chunk in iter(lambda: counting.read(1 << 20), b"")) - 1, 0)
    except OSError as exc:
        raise ConfigError(f"{src}: {exc.strerror}") from None
    progress = Progress(total, "rating")
    temps: list[Path] = []
    try:
        with (
            src.open(newline="", encoding="utf-8") as fin,
            _temporary(out_path, temps) as fout,
            _temporary(rejects_path, temps) as frej,
        ):
            good, bad = _rate_stream(plan, rates, tz, src, fin, fout, frej, progress)
        os.replace(temps[0], out_path)
        os.replace(temps[1], rejects_path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{src}: not UTF-8 (byte {exc.start} of a chunk): save the file as UTF-8") from None
    finally:
        for t in temps:
            t.unlink(missing_ok=True)
    progress.close()
    print(f"rated {good} call(s) into {args.output}; {bad} rejected into {rejects_path}", file=sys.stderr)
    return 0


def _check_paths(src: Path, out_path: Path, rejects_path: Path) -> None:
    if not src.is_file():
        raise ConfigError(f"{src}: no such file")
    for p in (out_path, rejects_path):
        if not p.parent.is_dir():
            raise ConfigError(f"{p}: the directory {p.parent} does not exist")
        if p.exists() and p.resolve() == src.resolve():
            raise ConfigError(f"{p}: is the input file; write the output elsewhere")
    if out_path.resolve() == rejects_path.resolve():
        raise ConfigError(f"{out_path}: the output and the rejects file must differ")


@contextmanager
def _temporary(final: Path, temps: list[Path]) -> Iterator[TextIO]:
    try:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise ConfigError(f"{final}: cannot write in {final.parent}: {exc.strerror}") from None
    temps.append(Path(name))
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        yield f


def _rate_stream(
    plan: Plan,
    rates: PlanRates,
    tz: str | None,
    src: Path,
    fin: TextIO,
    fout: TextIO,
    frej: TextIO,
    progress: Progress,
) -> tuple[int, int]:
    good = bad = 0
    reader = csv.reader(fin)
    header = next(reader, None)
    if header is None or [h.strip() for h in header[: len(IN_COLUMNS)]] != list(IN_COLUMNS):
        raise ConfigError(f"{src}:1: header must start with {','.join(IN_COLUMNS)}")
    out = csv.writer(fout)
    out.writerow(OUT_COLUMNS)
    rej = csv.writer(frej)
    rej.writerow(("line", "error", *IN_COLUMNS))
    chunk: list[tuple[list[str], int, int]] = []
    seen: dict[str, int] = {}  # each call id rated, and its line: a call given twice would be billed twice
    for cells in reader:
        line = reader.line_num
        row, problem = _check_row(cells, len(header))
        call_id = row[0][0] if row is not None else ""
        if call_id and (first := seen.setdefault(call_id, line)) != line:
            row, problem = None, f"call_id {call_id[:40]!r} is already on line {first}: rated once"
        if problem:
            bad += 1
            print(f"{src}:{line}: {problem}", file=sys.stderr)
            rej.writerow((line, problem, *cells))
            continue
        assert row is not None
        chunk.append(row)
        if len(chunk) >= CHUNK:
            good += _rate_chunk(plan, rates, tz, chunk, out)
            chunk = []
            progress.update(good + bad)
    good += _rate_chunk(plan, rates, tz, chunk, out)
    progress.update(good + bad)
    return good, bad


def _check_row(cells: list[str], columns: int) -> tuple[tuple[list[str], int, int] | None, str]:
    """A row's five cells checked; a row longer than the header has a comma outside quotes
    somewhere, and which of its cells is which cannot be told."""
    if len(cells) < len(IN_COLUMNS):
        return None, f"expected {len(IN_COLUMNS)} columns, found {len(cells)}"
    if len(cells) > columns:
        return None, f"{len(cells)} columns where the header has {columns}: a comma outside quotes?"
    cells = [c.strip() for c in cells[: len(IN_COLUMNS)]]
    try:
        start = parse_time(cells[3])
    except ConfigError as exc:
        return None, f"start: {exc}"
    if not (cells[4].isascii() and cells[4].isdigit()) or int(cells[4]) > MAX_BILLSEC:
        return None, f"billsec must be a whole number of seconds from 0 to {MAX_BILLSEC}: {cells[4][:20]!r}"
    if not cells[2]:
        return None, "dialed is empty"
    return (cells, start, int(cells[4])), ""


def _rate_chunk(plan: Plan, rates: PlanRates, tz: str | None, chunk: list[tuple[list[str], int, int]], out: Any) -> int:
    if not chunk:
        return 0
    res = rate_batch(
        plan,
        rates,
        [c[0][2] for c in chunk],
        np.array([c[1] for c in chunk], dtype=np.int64),
        np.array([c[2] for c in chunk], dtype=np.int64),
        tz=tz,
    )
    cur = plan.currency
    for i, (cells, _, _) in enumerate(chunk):
        num = res.number(i)
        r, band = int(res.rows[i]), int(res.bands[i])
        row = rates.tables[band].rows[r] if r >= 0 else None
        out.writerow(
            (
                *cells,
                num.e164,
                num.region,
                num.kind.value,
                res.reason(i).value,
                row.prefix if row else "",
                row.destination if row else "",
                int(res.charged_seconds[i]),
                format_amount(int(res.costs[i]), cur),
                rates.band_name(band) if row else "",
            )
        )
    return len(chunk)
