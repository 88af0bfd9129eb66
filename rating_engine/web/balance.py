"""Balance: the money, the calls now, and the automatic top-up. It follows the calls: the page asks
`balance.json` every few seconds and redraws the figures (a little script, no reload)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..ledger import Account, OnLow, Reservation, Topup
from .base import account_for, render, site, tongue
from .i18n import Tongue


def figures(t: Tongue, account: Account, live: list[Reservation], topups: list[Topup]) -> dict[str, Any]:
    """What the page shows, formatted for its reader (the same for the page and its live updates)."""
    cur = account.settings.currency
    autos = [x for x in topups if x.source == "auto"]
    last = autos[-1] if autos else None
    if account.settings.on_low is not OnLow.TOPUP:
        auto = t.gettext("off: below the threshold chargeable calls are refused")
    elif account.topup_paused:
        auto = t.gettext("paused after 3 failed top-ups: update the card or save the settings to resume")
    elif account.topup_pending and last is not None and last.action_url:
        auto = t.gettext("on; a top-up waits for your confirmation (see Add Funds)")
    elif account.topup_pending:
        auto = t.gettext("on; a top-up is pending")
    elif account.topup_failed:
        auto = t.gettext("on; the last top-up failed: chargeable calls are refused until funds are added")
    else:
        auto = t.gettext("on")
    by_ext = Counter(r.ext for r in live)
    return {
        "balance": t.money(account.balance, cur),
        "reserved": t.money(account.reserved, cur),
        "available": t.money(account.available, cur),
        "floor": t.money(account.floor, cur),
        "threshold": t.money(account.settings.threshold, cur),
        "live_calls": len(live),
        "by_extension": [{"ext": ext, "calls": n} for ext, n in sorted(by_ext.items())],
        "auto_topup": auto,
        "last_topup": (
            f"{t.when(last.at, account.settings.timezone)}: {t.money(last.amount, cur)}, {t.gettext(last.status.value)}"
            if last
            else ""
        ),
    }


async def _seen(request: Request, account_id: str) -> tuple[Any, Account, dict[str, Any]]:
    user, _ = await account_for(request, account_id)
    s = site(request)
    overview = await s.accounts.overview(account_id)
    topups = await s.ledger.topups(account_id)
    return user, overview.account, figures(tongue(request, user), overview.account, overview.live, topups)


async def balance(request: Request) -> Response:
    account_id = request.path_params["account"]
    user, account, shown = await _seen(request, account_id)
    return render(request, "balance.html", user, account=account, shown=shown)


async def balance_json(request: Request) -> Response:
    _, _, shown = await _seen(request, request.path_params["account"])
    return JSONResponse(shown, headers={"Cache-Control": "no-store"})
