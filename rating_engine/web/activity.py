"""Prepaid Activity: every chargeable call and top-up, filtered by extension and dates, with totals
per extension, and the same selection as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..accounts import Activity
from ..ledger import extension_totals
from ..money import format_amount
from .base import account_for, render, site


def _day(text: str, zone: ZoneInfo) -> int | None:
    """A date from the filter (YYYY-MM-DD) as the unix time of that midnight in the account's zone."""
    try:
        d = date.fromisoformat(text)
    except ValueError:
        return None
    return int(datetime.combine(d, time(), zone).timestamp())


async def _selection(request: Request) -> tuple[object, Activity, dict[str, str], list[str]]:
    account_id = request.path_params["account"]
    user, account = await account_for(request, account_id)
    zone = ZoneInfo(account.settings.timezone)
    q = request.query_params
    chosen = {k: q.get(k, "").strip() for k in ("ext", "since", "until")}
    problems = []
    since = _day(chosen["since"], zone) if chosen["since"] else None
    until_day = _day(chosen["until"], zone) if chosen["until"] else None
    if chosen["since"] and since is None:
        problems.append("since")
    if chosen["until"] and until_day is None:
        problems.append("until")
    until = None if until_day is None else until_day + int(timedelta(days=1).total_seconds())  # the whole last day
    seen = await site(request).accounts.activity(account_id, chosen["ext"] or None, since, until)
    return user, seen, chosen, problems


async def activity(request: Request) -> Response:
    user, seen, chosen, problems = await _selection(request)
    return render(
        request,
        "activity.html",
        user,  # type: ignore[arg-type]
        account=seen.account,
        calls=list(reversed(seen.calls)),
        topups=list(reversed(seen.topups)),
        totals=extension_totals(seen.calls),
        chosen=chosen,
        problems=problems,
        extensions=sorted({c.ext for c in seen.calls}),
    )


CSV_COLUMNS = ["ended", "extension", "dialed", "e164", "destination", "kind", "seconds", "cost", "balance_after"]


async def activity_csv(request: Request) -> Response:
    """Exactly what the filter selects, written row by row as it is sent."""
    _, seen, _, _ = await _selection(request)
    cur = seen.account.settings.currency

    async def lines() -> AsyncIterator[str]:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_COLUMNS)
        for r in seen.calls:
            w.writerow(
                [
                    datetime.fromtimestamp(r.ended_at, ZoneInfo(seen.account.settings.timezone)).isoformat(),
                    r.ext,
                    _safe(r.dialed),
                    r.e164,
                    _safe(r.destination),
                    r.kind,
                    r.billable_seconds,
                    format_amount(r.cost, cur),
                    format_amount(r.balance_after, cur),
                ]
            )
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
        if not seen.calls:
            yield buf.getvalue()

    name = f"activity-{seen.account.id}.csv"
    return StreamingResponse(
        lines(), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def _safe(cell: str) -> str:
    """A cell a spreadsheet would run as a formula (=, +, -, @) is written as text."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@") and not cell[1:].isdigit() else cell
