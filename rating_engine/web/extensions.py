"""Extensions: for each, a display name, whether it may place chargeable calls, the kinds of
destination it may pay for, and daily and monthly caps — the rules the CLI sets, through the same
use case (`Accounts.change_extension`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts import AccountError
from ..contract import DestinationClass
from ..errors import InvalidAmount
from ..ledger import Account, Extension
from ..ledger.models import EXTENSION
from .base import account_for, render, site, tongue
from .i18n import Tongue

KIND_LABELS = {
    DestinationClass.NATIONAL: "national",
    DestinationClass.INTERNATIONAL: "international",
    DestinationClass.MOBILE_ABROAD: "mobiles abroad",
    DestinationClass.PREMIUM: "premium-rate",
}


def _row(account: Account, e: Extension, t: Tongue) -> dict[str, Any]:
    s, cur = e.settings, account.settings.currency
    return {
        "ext": e.ext,
        "name": s.name,
        "chargeable": s.chargeable,
        "kinds": set(DestinationClass) if s.classes is None else set(s.classes),
        "daily_cap": "" if s.daily_cap is None else t.amount_input(s.daily_cap, cur),
        "monthly_cap": "" if s.monthly_cap is None else t.amount_input(s.monthly_cap, cur),
        "spent_today": e.day_spent,
        "spent_month": e.month_spent,
    }


async def _page(
    request: Request,
    account: Account,
    user: Any,
    errors: dict[str, dict[str, str]],
    code: int,
    posted: dict[str, Any] | None = None,
) -> Response:
    exts = await site(request).ledger.extensions(account.id)
    t = tongue(request, user)
    rows = [_row(account, e, t) for e in exts]
    if posted is not None and posted["ext"] in {r["ext"] for r in rows}:  # redraw that one as it was sent
        rows = [posted if r["ext"] == posted["ext"] else r for r in rows]
        posted = None
    return render(
        request,
        "extensions.html",
        user,
        code,
        account=account,
        rows=rows,
        new=posted,
        kinds=list(KIND_LABELS.items()),
        errors=errors,
        saved=request.query_params.get("saved", ""),
    )


async def extensions(request: Request) -> Response:
    user, account = await account_for(request, request.path_params["account"])
    return await _page(request, account, user, {}, 200)


async def save(request: Request) -> Response:
    account_id = request.path_params["account"]
    user, account = await account_for(request, account_id)
    t = tongue(request, user)
    form = await request.form()
    ext = str(form.get("ext", "")).strip()
    problems: dict[str, str] = {}
    if EXTENSION.fullmatch(ext) is None:
        problems["ext"] = t.gettext("An extension number, e.g. 201.")
    changes: dict[str, Any] = {
        "name": str(form.get("name", "")).strip(),
        "chargeable": form.get("chargeable") == "yes",
    }
    chosen = {str(k) for k in form.getlist("kinds")}
    known = {k.value for k in DestinationClass}
    changes["classes"] = None if chosen >= known else frozenset(DestinationClass(k) for k in chosen & known)
    for cap in ("daily_cap", "monthly_cap"):
        text = str(form.get(cap, "")).strip()
        try:
            changes[cap] = t.parse_amount(text) if text else None
        except InvalidAmount:
            problems[cap] = t.gettext("An amount, e.g. 10 or 12.50 (not negative), or empty for no cap.")
    if not problems:
        try:
            await site(request).accounts.change_extension(account_id, ext, changes)
        except AccountError as exc:
            problems["name"] = str(exc)
    if problems:
        sent = {
            "ext": ext,
            "name": changes["name"],
            "chargeable": changes["chargeable"],
            "kinds": {DestinationClass(k) for k in chosen & known},
            "daily_cap": str(form.get("daily_cap", "")),
            "monthly_cap": str(form.get("monthly_cap", "")),
            "spent_today": 0,
            "spent_month": 0,
        }
        return await _page(request, account, user, {ext: problems}, 400, sent)
    return RedirectResponse(f"/accounts/{account_id}/extensions?saved={ext}", 303)
