"""Operator commands on the prepaid ledger: accounts, top-ups, extensions, activity, check.

Every input is validated before the database is opened, so bad input writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ..errors import ConfigError
from ..ledger import AccountSettings, ExtensionSettings, Ledger, OnLow, default_url, extension_totals, make_ledger
from ..money import format_amount, parse_amount
from ..rating.catalog import load_tariffs
from ..rating.decision import DestinationClass
from .common import iso, parse_time, print_json, table

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
    _db(c)
    c.set_defaults(handler=_sync(cmd_create))
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
    es.add_argument(
        "--kinds",
        nargs="+",
        metavar="KIND",
        help=f"destination kinds allowed for chargeable calls: {', '.join(CLASSES)}, or all",
    )
    es.add_argument("--daily-cap", help="spending cap per UTC day (decimal, or none)")
    es.add_argument("--monthly-cap", help="spending cap per UTC month (decimal, or none)")
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


def _sync(fn: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(fn(args))

    return run


async def _open(args: argparse.Namespace) -> Ledger:
    ledger = make_ledger(args.db or default_url())
    await ledger.open()
    return ledger


def _amount(text: str | None, what: str, allow_none: bool = False) -> int | None:
    if text is None or (allow_none and text.lower() == "none"):
        return None
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


async def cmd_create(args: argparse.Namespace) -> int:
    tariffs = load_tariffs([args.plan])
    plan = next(iter(tariffs.plans.values()))
    settings = AccountSettings(
        plan=plan.name,
        currency=plan.currency,
        threshold=_amount(args.threshold, "--threshold") or 0,
        on_low=OnLow(args.on_low),
        topup_amount=_amount(args.topup_amount, "--topup-amount") or 0,
        block_on_topup_failure=not args.no_block_on_failure,
    )
    ledger = await _open(args)
    try:
        acc = await ledger.create_account(args.account, settings)
    finally:
        await ledger.close()
    print(
        f"created account {acc.id} on plan {plan.name} ({plan.currency}); threshold "
        f"{format_amount(settings.threshold, plan.currency)}, on low: {settings.on_low.value}"
    )
    return 0


async def cmd_topup(args: argparse.Namespace) -> int:
    amount = _amount(args.amount, "amount")
    if not amount:
        raise ConfigError("amount: a top-up must be positive")
    import uuid

    reference = args.reference or f"cli:{uuid.uuid4().hex}"
    ledger = await _open(args)
    try:
        _, created = await ledger.topup(args.account, amount, reference, source="cli")
        acc = await ledger.account(args.account)
    finally:
        await ledger.close()
    cur = acc.settings.currency
    what = "added" if created else "already recorded (same reference): nothing added"
    print(
        f"{format_amount(amount, cur)} {cur} {what}; balance {format_amount(acc.balance, cur)} {cur} "
        f"(reference {reference})"
    )
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    ledger = await _open(args)
    try:
        acc = await ledger.account(args.account)
        exts = await ledger.extensions(args.account)
        live = await ledger.reservations(args.account)
    finally:
        await ledger.close()
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
            }
            for e in exts
        ],
    }
    if args.json:
        print_json(data)
        return 0
    money_keys = ("balance", "reserved", "available", "floor", "threshold", "topup_amount")
    for key in ("account", "plan", *money_keys, "on_low", "topup_failed", "topup_pending", "live_calls"):
        print(f"{key:<14}{data[key]}{' ' + cur if key in money_keys else ''}")
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
        t = await ledger.complete_topup(args.reference, ok=not args.failed, detail="confirmed by operator")
    finally:
        await ledger.close()
    print(f"top-up {t.reference} of account {t.account_id}: {t.status.value}")
    return 0


async def cmd_extension_set(args: argparse.Namespace) -> int:
    classes: frozenset[str] | bool | None = False  # False: keep
    if args.kinds is not None:
        unknown = sorted(set(args.kinds) - set(CLASSES) - {"all"})
        if unknown:
            raise ConfigError(f"unknown extension kind(s) {', '.join(unknown)}; known: {', '.join(CLASSES)}, all")
        classes = None if "all" in args.kinds else frozenset(args.kinds)
    daily = _amount(args.daily_cap, "--daily-cap", allow_none=True)
    monthly = _amount(args.monthly_cap, "--monthly-cap", allow_none=True)
    ledger = await _open(args)
    try:
        cur = (await ledger.account(args.account)).settings.currency
        current = await ledger.extension(args.account, args.ext)
        base = current.settings if current else ExtensionSettings()
        settings = ExtensionSettings(
            chargeable=base.chargeable if args.chargeable is None else args.chargeable == "yes",
            classes=base.classes if classes is False else classes,  # type: ignore[arg-type]
            daily_cap=base.daily_cap if args.daily_cap is None else daily,
            monthly_cap=base.monthly_cap if args.monthly_cap is None else monthly,
        )
        e = await ledger.set_extension(args.account, args.ext, settings)
    finally:
        await ledger.close()
    kinds = "all" if e.settings.classes is None else ",".join(sorted(e.settings.classes)) or "none"

    def cap(v: int | None) -> str:
        return "-" if v is None else f"{format_amount(v, cur)} {cur}"

    print(
        f"extension {e.ext} of {e.account_id}: chargeable {'yes' if e.settings.chargeable else 'no'}, "
        f"kinds {kinds}, daily cap {cap(e.settings.daily_cap)}, monthly cap {cap(e.settings.monthly_cap)}"
    )
    return 0


async def cmd_activity(args: argparse.Namespace) -> int:
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    ledger = await _open(args)
    try:
        acc = await ledger.account(args.account)
        rows = await ledger.activity(args.account, args.extension, since, until)
        topups = await ledger.topups(args.account)
    finally:
        await ledger.close()
    cur = acc.settings.currency
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
