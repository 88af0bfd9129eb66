"""Operator commands on the prepaid ledger: accounts, top-ups, extensions, activity, check.

Every input is validated before the database is opened, so bad input writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg

from ..accounts import Accounts
from ..contract import DestinationClass
from ..errors import ConfigError
from ..ledger import (
    CheckProblem,
    Ledger,
    LedgerError,
    OnLow,
    default_url,
    extension_totals,
    make_ledger,
    sqlite_file,
)
from ..ledger.backup import Copied, backup_sqlite, restore_sqlite
from ..money import format_amount, parse_amount
from ..rating.catalog import load_tariffs
from ..rating.plan import Plan
from .common import iso, parse_time, print_json, safe_url, table

CLASSES = [c.value for c in DestinationClass]


def _db(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=None,
        help="ledger URL: sqlite:///path (default under the data directory) or postgresql://user@host/db",
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    a = sub.add_parser("account", help="prepaid accounts: create, top up, show")
    asub = a.add_subparsers(dest="account_command", metavar="ACTION", required=True)
    c = asub.add_parser("create", help="create an account on a calling plan")
    c.add_argument("account")
    c.add_argument("--plan", required=True, help="the calling plan file (.toml)")
    c.add_argument("--threshold", default="0", help="low-balance threshold (decimal, plan currency)")
    c.add_argument(
        "--on-low",
        choices=[m.value for m in OnLow],
        default="block",
        help="below the threshold: refuse chargeable calls (block) or top up automatically",
    )
    c.add_argument("--topup-amount", default="0", help="amount of each automatic top-up")
    c.add_argument(
        "--no-block-on-failure",
        action="store_true",
        help="with --on-low topup: keep allowing calls when a top-up fails",
    )
    _limits(c)
    _db(c)
    c.set_defaults(handler=_sync(cmd_create))
    st = asub.add_parser("set", help="change an account's settings and limits (options not given are kept)")
    st.add_argument("account")
    st.add_argument("--plan", help="move the account to another calling plan (.toml, same currency)")
    st.add_argument("--threshold", help="low-balance threshold (decimal, plan currency)")
    st.add_argument("--on-low", choices=[m.value for m in OnLow], help="below the threshold: block or topup")
    st.add_argument("--topup-amount", help="amount of each automatic top-up")
    st.add_argument("--block-on-failure", choices=["yes", "no"], help="refuse chargeable calls after a failed top-up")
    _limits(st)
    _db(st)
    st.set_defaults(handler=_sync(cmd_set))
    au = asub.add_parser("audit", help="the account's audit list: settings changes and alerts, newest first")
    au.add_argument("account")
    au.add_argument("--limit", type=int, default=50)
    _db(au)
    au.set_defaults(handler=_sync(cmd_audit))
    t = asub.add_parser("topup", help="add funds (idempotent on --reference)")
    t.add_argument("account")
    t.add_argument("amount")
    t.add_argument("--reference", help="a unique reference (bank transfer id…); default: generated")
    _db(t)
    t.set_defaults(handler=_sync(cmd_topup))
    s = asub.add_parser("show", help="balance, reserved, available, settings, extensions")
    s.add_argument("account")
    s.add_argument("--json", action="store_true")
    _db(s)
    s.set_defaults(handler=_sync(cmd_show))
    f = asub.add_parser("confirm-topup", help="record the outcome of a pending (manual) top-up")
    f.add_argument("reference")
    f.add_argument("--failed", action="store_true", help="the payment did not arrive")
    _db(f)
    f.set_defaults(handler=_sync(cmd_confirm))

    e = sub.add_parser("extension", help="per-extension rules")
    esub = e.add_subparsers(dest="extension_command", metavar="ACTION", required=True)
    es = esub.add_parser("set", help="restrict an extension (options not given are kept)")
    es.add_argument("account")
    es.add_argument("ext")
    es.add_argument("--chargeable", choices=["yes", "no"], help="may it place chargeable calls at all")
    es.add_argument("--name", help='who or what it is, shown on the page ("Reception"); "" clears it')
    es.add_argument(
        "--kinds",
        nargs="+",
        metavar="KIND",
        help=f"destination kinds allowed for chargeable calls: {', '.join(CLASSES)}, or all",
    )
    es.add_argument("--daily-cap", help="spending cap per day of the account's time zone (decimal, or none)")
    es.add_argument("--monthly-cap", help="spending cap per month of the account's time zone (decimal, or none)")
    es.add_argument("--max-calls", help="at most this many chargeable calls at once (or none)")
    es.add_argument("--max-attempts", help="at most this many chargeable call attempts per minute (or none)")
    _db(es)
    es.set_defaults(handler=_sync(cmd_extension_set))

    ac = sub.add_parser("activity", help="chargeable calls and top-ups of an account")
    ac.add_argument("account")
    ac.add_argument("--extension")
    ac.add_argument("--since", help="ISO 8601 date or time (no zone = UTC)")
    ac.add_argument("--until", help="ISO 8601 date or time, exclusive")
    ac.add_argument("--csv", action="store_true", help="CSV of the calls on stdout")
    _db(ac)
    ac.set_defaults(handler=_sync(cmd_activity))

    lg = sub.add_parser("ledger", help="ledger maintenance")
    lsub = lg.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    ck = lsub.add_parser("check", help="prove every balance equals its journal; exit 1 if not")
    _db(ck)
    ck.set_defaults(handler=_sync(cmd_check))
    for action, path, path_help, handler, about, description in (
        (
            "backup",
            "dest",
            "the new file's path",
            cmd_backup,
            "copy a SQLite ledger, consistent while the engine runs, to a new file, checked",
            "Copy a SQLite ledger to DEST while the engine runs: one consistent snapshot, checked (SQLite's "
            "integrity check, then `ledger check`), written under a temporary name and renamed, so DEST is the "
            "whole copy or absent; readable by its owner only. DEST must not exist. A PostgreSQL ledger is "
            "backed up with pg_dump.",
        ),
        (
            "restore",
            "backup",
            "the backup's path",
            cmd_restore,
            "put a backup in the SQLite ledger's place, the engine and the page stopped; the old one is kept",
            "Put BACKUP (made by `ledger backup`) in the place of the SQLite ledger, which nothing may have "
            "open: stop the engine and the page first. The backup is checked the same way before it replaces "
            "anything, and the ledger it replaces is kept beside it (…before-restore-TIME). At its next start "
            "the engine reconciles with Asterisk as after any restart.",
        ),
    ):
        a = lsub.add_parser(action, help=about, description=description)
        a.add_argument(path, help=path_help)
        _db(a)
        a.set_defaults(handler=_sync(handler))


def _limits(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fraud limits (each: a value, or none)")
    g.add_argument(
        "--timezone",
        help="IANA time zone of the office (caps' days and months, office hours, time bands); "
        "default: the plan's, else UTC",
    )
    g.add_argument("--max-calls", help="at most this many chargeable calls at once; beyond: too_many_calls")
    g.add_argument("--max-attempts", help="at most this many chargeable call attempts per minute: rate_limited")
    g.add_argument("--velocity", help="at most this much spending per rolling hour (decimal): velocity_limit")
    g.add_argument("--block-prefixes", nargs="+", metavar="PREFIX", help="E.164 prefixes refused (or none)")
    g.add_argument(
        "--office-hours",
        help='outside e.g. "mon-fri 08:00-19:00; sat 09:00-12:00", international and premium calls: outside_hours',
    )
    g.add_argument(
        "--auto-topups-per-day", type=int, help="automatic top-ups attempted a day at most, 1 to 24 (default 2)"
    )


def _count(text: str | None, what: str) -> int | None:
    if text is None or text.lower() == "none":
        return None
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 1_000_000:
        raise ConfigError(f"{what}: a whole number from 1 to 1000000, or none")
    return int(text)


def _with_limits(args: argparse.Namespace) -> dict[str, Any]:
    """The limit settings the command line gives, the others kept from `base`."""
    out: dict[str, Any] = {}
    if args.timezone is not None:
        out["timezone"] = args.timezone
    if args.max_calls is not None:
        out["max_calls"] = _count(args.max_calls, "--max-calls")
    if args.max_attempts is not None:
        out["max_attempts"] = _count(args.max_attempts, "--max-attempts")
    if args.velocity is not None:
        out["velocity_limit"] = _amount(args.velocity, "--velocity", allow_none=True)
        if out["velocity_limit"] == 0:
            raise ConfigError("--velocity: a positive amount, or none")
    if args.block_prefixes is not None:
        prefixes = [] if args.block_prefixes == ["none"] else [p.lstrip("+") for p in args.block_prefixes]
        out["blocked_prefixes"] = tuple(sorted(set(prefixes)))
    if args.office_hours is not None:
        out["office_hours"] = "" if args.office_hours.lower() == "none" else args.office_hours.strip()
    if args.auto_topups_per_day is not None:
        out["auto_topups_per_day"] = args.auto_topups_per_day
    return out


def _sync(fn: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(fn(args))

    return run


async def _open(args: argparse.Namespace, create: bool = False) -> Ledger:
    """Open the ledger the command names; only `account create` may create one."""
    url = args.db or default_url()
    if url.startswith("sqlite:///") and sqlite_file(url) is None:
        raise ConfigError("--db sqlite:/// needs a file path: sqlite:///path/to/ledger.sqlite3")
    ledger = make_ledger(url)
    ledger.create = create
    try:
        await ledger.open()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ConfigError(f"cannot open the ledger {safe_url(url)}: {exc}") from None
    return ledger


def _amount(text: str | None, what: str, allow_none: bool = False) -> int | None:
    if text is None or (allow_none and text.lower() == "none"):
        return None
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _plan(path: str) -> Plan:
    return next(iter(load_tariffs([path]).plans.values()))


async def cmd_create(args: argparse.Namespace) -> int:
    plan = _plan(args.plan)
    settings = Accounts.new_settings(
        plan,
        threshold=_amount(args.threshold, "--threshold") or 0,
        on_low=OnLow(args.on_low),
        topup_amount=_amount(args.topup_amount, "--topup-amount") or 0,
        block_on_topup_failure=not args.no_block_on_failure,
        **_with_limits(args),
    )
    ledger = await _open(args, create=True)
    try:
        acc = await Accounts(ledger).create(args.account, settings)
    finally:
        await ledger.close()
    print(
        f"created account {acc.id} on plan {plan.name} ({plan.currency}); threshold "
        f"{format_amount(settings.threshold, plan.currency)}, on low: {settings.on_low.value}"
    )
    return 0


async def cmd_set(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    plan = _plan(args.plan) if args.plan is not None else None
    if args.threshold is not None:
        changes["threshold"] = _amount(args.threshold, "--threshold")
    if args.on_low is not None:
        changes["on_low"] = OnLow(args.on_low)
    if args.topup_amount is not None:
        changes["topup_amount"] = _amount(args.topup_amount, "--topup-amount")
    if args.block_on_failure is not None:
        changes["block_on_topup_failure"] = args.block_on_failure == "yes"
    changes.update(_with_limits(args))
    ledger = await _open(args)
    try:
        changed = await Accounts(ledger).change(args.account, changes, actor="cli", plan=plan)
    finally:
        await ledger.close()
    if not changed:
        print(f"account {args.account}: nothing to change")
    for name, detail in changed:
        print(f"account {args.account}: {name} {detail}")
    return 0


async def cmd_audit(args: argparse.Namespace) -> int:
    ledger = await _open(args)
    try:
        entries = await Accounts(ledger).audit(args.account, args.limit)
    finally:
        await ledger.close()
    table([[iso(e.at), e.actor, e.action, e.detail] for e in entries], ["at", "by", "what", "detail"])
    return 0


async def cmd_topup(args: argparse.Namespace) -> int:
    amount = _amount(args.amount, "amount") or 0
    Accounts.check_topup(amount, args.reference)  # before the ledger is opened
    ledger = await _open(args)
    try:
        done = await Accounts(ledger).top_up(args.account, amount, args.reference, source="cli", actor="cli")
    finally:
        await ledger.close()
    cur = done.account.settings.currency
    what = "added" if done.created else "already recorded (same reference): nothing added"
    print(
        f"{format_amount(amount, cur)} {cur} {what}; balance {format_amount(done.account.balance, cur)} {cur} "
        f"(reference {done.topup.reference})"
    )
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    ledger = await _open(args)
    try:
        seen = await Accounts(ledger).overview(args.account)
    finally:
        await ledger.close()
    acc, exts, live = seen.account, seen.extensions, seen.live
    cur = acc.settings.currency

    def m(v: int) -> str:
        return format_amount(v, cur)

    data: dict[str, Any] = {
        "account": acc.id,
        "plan": acc.settings.plan,
        "currency": cur,
        "balance": m(acc.balance),
        "reserved": m(acc.reserved),
        "available": m(acc.available),
        "floor": m(acc.floor),
        "threshold": m(acc.settings.threshold),
        "on_low": acc.settings.on_low.value,
        "topup_amount": m(acc.settings.topup_amount),
        "topup_failed": acc.topup_failed,
        "topup_pending": acc.topup_pending,
        "live_calls": len(live),
        "timezone": acc.settings.timezone,
        "max_calls": acc.settings.max_calls,
        "max_attempts": acc.settings.max_attempts,
        "velocity": m(acc.settings.velocity_limit) if acc.settings.velocity_limit is not None else None,
        "blocked_prefixes": list(acc.settings.blocked_prefixes),
        "office_hours": acc.settings.office_hours or None,
        "extensions": [
            {
                "ext": e.ext,
                "chargeable": e.settings.chargeable,
                "kinds": sorted(e.settings.classes) if e.settings.classes is not None else "all",
                "daily_cap": m(e.settings.daily_cap) if e.settings.daily_cap is not None else None,
                "monthly_cap": m(e.settings.monthly_cap) if e.settings.monthly_cap is not None else None,
                "reserved": m(e.reserved),
                "spent_today": m(e.day_spent),
                "spent_month": m(e.month_spent),
                "max_calls": e.settings.max_calls,
                "max_attempts": e.settings.max_attempts,
                "live_calls": e.live_calls,
            }
            for e in exts
        ],
    }
    if args.json:
        print_json(data)
        return 0
    money_keys = ("balance", "reserved", "available", "floor", "threshold", "topup_amount")
    limits = ("timezone", "max_calls", "max_attempts", "velocity", "blocked_prefixes", "office_hours")
    for key in ("account", "plan", *money_keys, "on_low", "topup_failed", "topup_pending", "live_calls", *limits):
        value = data[key]
        shown = ",".join(value) or "-" if isinstance(value, list) else "-" if value is None else value
        unit = f" {cur}" if key in (*money_keys, "velocity") and value is not None else ""
        print(f"{key:<17}{shown}{unit}")
    if exts:
        print()
        table(
            [
                [
                    x["ext"],
                    "yes" if x["chargeable"] else "no",
                    x["kinds"] if isinstance(x["kinds"], str) else ",".join(x["kinds"]) or "none",
                    x["daily_cap"] or "-",
                    x["monthly_cap"] or "-",
                    x["reserved"],
                    x["spent_today"],
                    x["spent_month"],
                ]
                for x in data["extensions"]
            ],
            ["ext", "chargeable", "kinds", "daily_cap", "monthly_cap", "reserved", "today", "month"],
        )
    return 0


async def cmd_confirm(args: argparse.Namespace) -> int:
    ledger = await _open(args)
    try:
        t = await Accounts(ledger).confirm_topup(
            args.reference,
            not args.failed,
            "refused by operator" if args.failed else "confirmed by operator",
            actor="cli",
        )
    finally:
        await ledger.close()
    print(f"top-up {t.reference} of account {t.account_id}: {t.status.value}")
    return 0


async def cmd_extension_set(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}  # options not given are kept
    if args.kinds is not None:
        unknown = sorted(set(args.kinds) - set(CLASSES) - {"all"})
        if unknown:
            raise ConfigError(f"unknown extension kind(s) {', '.join(unknown)}; known: {', '.join(CLASSES)}, all")
        changes["classes"] = None if "all" in args.kinds else frozenset(DestinationClass(k) for k in args.kinds)
    if args.chargeable is not None:
        changes["chargeable"] = args.chargeable == "yes"
    if args.name is not None:
        changes["name"] = args.name
    if args.daily_cap is not None:
        changes["daily_cap"] = _amount(args.daily_cap, "--daily-cap", allow_none=True)
    if args.monthly_cap is not None:
        changes["monthly_cap"] = _amount(args.monthly_cap, "--monthly-cap", allow_none=True)
    if args.max_calls is not None:
        changes["max_calls"] = _count(args.max_calls, "--max-calls")
    if args.max_attempts is not None:
        changes["max_attempts"] = _count(args.max_attempts, "--max-attempts")
    ledger = await _open(args)
    try:
        account, e = await Accounts(ledger).change_extension(args.account, args.ext, changes)
    finally:
        await ledger.close()
    cur = account.settings.currency
    kinds = "all" if e.settings.classes is None else ",".join(sorted(e.settings.classes)) or "none"

    def cap(v: int | None) -> str:
        return "-" if v is None else f"{format_amount(v, cur)} {cur}"

    print(
        f"extension {e.ext} of {e.account_id}: chargeable {'yes' if e.settings.chargeable else 'no'}, "
        f"kinds {kinds}, daily cap {cap(e.settings.daily_cap)}, monthly cap {cap(e.settings.monthly_cap)}, "
        f"max calls {e.settings.max_calls or '-'}, max attempts/min {e.settings.max_attempts or '-'}"
    )
    return 0


async def cmd_activity(args: argparse.Namespace) -> int:
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    ledger = await _open(args)
    try:
        seen = await Accounts(ledger).activity(args.account, args.extension, since, until)
    finally:
        await ledger.close()
    rows, topups = seen.calls, seen.topups
    cur = seen.account.settings.currency
    if args.csv:
        w = csv.writer(sys.stdout)
        w.writerow(
            [
                "call_id",
                "extension",
                "started",
                "ended",
                "dialed",
                "e164",
                "destination",
                "kind",
                "billable_seconds",
                "cost",
                "balance_after",
                "estimated",
            ]
        )
        for r in rows:
            w.writerow(
                [
                    r.call_id,
                    r.ext,
                    iso(r.started_at) if r.started_at else "",
                    iso(r.ended_at),
                    r.dialed,
                    r.e164,
                    r.destination,
                    r.kind,
                    r.billable_seconds,
                    format_amount(r.cost, cur),
                    format_amount(r.balance_after, cur),
                    "yes" if r.estimated else "no",
                ]
            )
        return 0
    table(
        [
            [
                iso(r.ended_at),
                r.ext,
                r.dialed,
                r.destination,
                r.kind,
                str(r.billable_seconds),
                format_amount(r.cost, cur),
                format_amount(r.balance_after, cur),
                "estimated" if r.estimated else "",
            ]
            for r in rows
        ],
        ["ended", "ext", "dialed", "destination", "kind", "seconds", "cost", "balance", ""],
    )
    print("\ntotals per extension")
    table(
        [[t.ext, str(t.calls), str(t.seconds), format_amount(t.cost, cur)] for t in extension_totals(rows)],
        ["ext", "calls", "seconds", f"cost {cur}"],
    )
    if topups:
        print("\ntop-ups")
        table(
            [
                [iso(t.at), t.reference, t.source, format_amount(t.amount, cur), t.status.value, t.detail]
                for t in topups
            ],
            ["at", "reference", "source", "amount", "status", "detail"],
        )
    return 0


async def cmd_check(args: argparse.Namespace) -> int:
    ledger = await _open(args)
    try:
        problems = await ledger.check()
        n = len(await ledger.accounts())
    finally:
        await ledger.close()
    for p in problems:
        print(f"account {p.account_id}: {p.message}", file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {n} account(s), every balance equals its journal")
    return 0


def _sqlite_file(args: argparse.Namespace, what: str) -> Path:
    url = args.db or default_url()
    path = sqlite_file(url)
    if path is None:
        raise ConfigError(f"ledger {what} is for a SQLite file; {safe_url(url)} is not one (PostgreSQL: pg_dump)")
    return path


async def cmd_backup(args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    copied = await _copy(backup_sqlite, _sqlite_file(args, "backup"), dest)
    verdict = _verdict(copied.problems, "in the copy")
    print(f"backed up {copied.accounts} account(s) to {dest} ({copied.size} bytes); check on the copy: {verdict}")
    return 1 if copied.problems else 0


async def cmd_restore(args: argparse.Namespace) -> int:
    target, backup = _sqlite_file(args, "restore"), Path(args.backup)
    copied = await _copy(restore_sqlite, backup, target)
    before = f"; the ledger it replaced is {copied.replaced}" if copied.replaced else ""
    verdict = _verdict(copied.problems, "restored")
    print(f"restored {copied.accounts} account(s) from {backup} to {target}{before}; ledger check: {verdict}")
    return 1 if copied.problems else 0


async def _copy(fn: Callable[[Path, Path], Copied], source: Path, dest: Path) -> Copied:
    """Off the event loop (a big file takes a while), its refusals as one line."""
    try:
        return await asyncio.to_thread(fn, source, dest)
    except LedgerError as exc:
        raise ConfigError(str(exc)) from None


def _verdict(problems: list[CheckProblem], where: str) -> str:
    """Each problem `ledger check` found, on stderr; the word for the summary line."""
    for p in problems:
        print(f"account {p.account_id} {where}: {p.message}", file=sys.stderr)
    return "FAILED" if problems else "ok"
