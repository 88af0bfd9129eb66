"""Prepaid Activity: every chargeable call and top-up, filtered by extension and dates, with totals
per extension, and the same selection as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..accounts import day_span
from ..ledger import Account, User
from ..money import format_amount
from .base import account_for, render, site, tongue
from .chart import spending_chart

PAGE = 100
CSV_PAGE = 5_000


@dataclass(frozen=True, slots=True)
class Selection:
    user: User
    account: Account
    ext: str | None
    first_day: date | None
    last_day: date | None
    chosen: dict[str, str]
    problems: dict[str, str]


async def _selection(request: Request) -> Selection:
    account_id = request.path_params["account"]
    user, account = await account_for(request, account_id)
    q = request.query_params
    chosen = {k: q.get(k, "").strip() for k in ("ext", "since", "until")}
    t = tongue(request, user)
    first, last = t.parse_day(chosen["since"]), t.parse_day(chosen["until"])
    problems = {k: said for k in ("since", "until") if (said := t.day_problem(chosen[k]))}
    return Selection(user, account, chosen["ext"] or None, first, last, chosen, problems)


def chart_period(account: Account, first_day: date | None, last_day: date | None) -> tuple[date, date]:
    """The days the chart draws: those of the filter; without an end, up to today in the account's
    time zone; without a start, the 30 days to the end."""
    today = datetime.now(ZoneInfo(account.settings.timezone)).date()
    last = last_day or max(today, first_day or today)
    first = first_day or last - timedelta(days=29)
    return (first, last) if first <= last else (last, first)


def _cursor(text: str) -> tuple[int, str] | None:
    """`before=ENDED:CALL_ID` of the "older calls" link (a call id may itself hold colons); one the
    page did not write (a time past any database's integer) is no cursor: the newest calls."""
    ended, _, call_id = text.partition(":")
    return (int(ended), call_id) if ended.isascii() and ended.isdigit() and len(ended) <= 18 and call_id else None


async def activity(request: Request) -> Response:
    sel = await _selection(request)
    s = site(request)
    before = _cursor(request.query_params.get("before", ""))
    page = await s.accounts.activity_page(sel.account.id, sel.ext, sel.first_day, sel.last_day, before, PAGE)
    names = {e.ext: e.settings.name for e in await s.ledger.extensions(sel.account.id)}
    t = tongue(request, sel.user)
    first, last = chart_period(sel.account, sel.first_day, sel.last_day)
    spending = await s.ledger.activity_days(sel.account.id, sel.ext, first.isoformat(), last.isoformat())
    cur = sel.account.settings.currency
    chart = spending_chart(
        first,
        last,
        spending,
        lambda e: f"{e} {names[e]}" if names.get(e) else e,
        lambda amount: t.money(amount, cur),
        t.short_day,
        t.gettext("other extensions"),
    )
    older = None
    if page.older is not None:
        older = "?" + urlencode({**sel.chosen, "before": f"{page.older[0]}:{page.older[1]}"})
    return render(
        request,
        "activity.html",
        sel.user,
        account=sel.account,
        calls=page.calls,
        topups=list(reversed(await s.ledger.topups(sel.account.id))),
        totals=page.totals,
        chosen=sel.chosen,
        problems=sel.problems,
        extensions=sorted({t.ext for t in page.totals} | set(names)),
        names=names,
        older=older,
        first_page=before is None,
        chart=chart,
        period=(t.day_input(chart.first), t.day_input(chart.last)),
    )


CSV_COLUMNS = ["ended", "extension", "dialed", "e164", "destination", "kind", "seconds", "cost", "balance_after"]


async def activity_csv(request: Request) -> Response:
    """Exactly what the filter selects, newest first, read and sent a page at a time (a big account's
    export never sits in memory whole)."""
    sel = await _selection(request)
    ledger, cur = site(request).ledger, sel.account.settings.currency
    zone = ZoneInfo(sel.account.settings.timezone)
    since, until = day_span(sel.account, sel.first_day, sel.last_day)

    async def lines() -> AsyncIterator[str]:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_COLUMNS)
        before: tuple[int, str] | None = None
        while True:
            rows = await ledger.activity_page(sel.account.id, sel.ext, since, until, before, CSV_PAGE)
            for r in rows:
                ended = datetime.fromtimestamp(r.ended_at, zone).isoformat()
                cells = [ended, r.ext, _safe(r.dialed), r.e164, _safe(r.destination), r.kind, r.billable_seconds]
                w.writerow([*cells, format_amount(r.cost, cur), format_amount(r.balance_after, cur)])
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
            if len(rows) < CSV_PAGE:
                return
            before = (rows[-1].ended_at, rows[-1].call_id)

    name = f"activity-{sel.account.id}.csv"
    return StreamingResponse(
        lines(), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def _safe(cell: str) -> str:
    """A cell a spreadsheet would run as a formula (=, +, -, @) is written as text."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@") and not cell[1:].isdigit() else cell
