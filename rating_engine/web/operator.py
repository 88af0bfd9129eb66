"""The operator's list of every account: balance, live calls, low or blocked; search by name."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .base import render, require_user, site, tongue


async def accounts(request: Request) -> Response:
    user = await require_user(request)
    if not user.operator:
        raise HTTPException(404)
    t = tongue(request, user)
    q = request.query_params.get("q", "").strip().lower()
    rows = []
    for a in await site(request).ledger.accounts():
        if q and q not in a.id.lower():
            continue
        if a.topup_failed:
            state = t.gettext("blocked: top-up failed")
        elif a.available <= 0:
            state = t.gettext("blocked: below the threshold")
        elif a.balance - a.reserved < a.settings.threshold * 2:
            state = t.gettext("low")
        else:
            state = ""
        rows.append(
            {
                "id": a.id,
                "balance": t.money(a.balance, a.settings.currency),
                "available": t.money(a.available, a.settings.currency),
                "live_calls": a.live_calls,
                "state": state,
            }
        )
    return render(request, "accounts.html", user, rows=rows, q=q)
