"""Settings: below the threshold block chargeable calls or top up automatically; the threshold and
the top-up amount. Checked field by field (the message beside the field, nothing written), every
change audited with who made it, and the audit list shown."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts import AccountError
from ..errors import InvalidAmount
from ..ledger import Account, OnLow
from .base import account_for, render, site, tongue
from .i18n import Tongue


def _form_of(account: Account, t: Tongue) -> dict[str, str]:
    s = account.settings
    return {
        "on_low": s.on_low.value,
        "threshold": t.amount_input(s.threshold, s.currency),
        "topup_amount": t.amount_input(s.topup_amount, s.currency),
    }


async def _page(
    request: Request, account: Account, user: Any, form: dict[str, str], errors: dict[str, str], code: int
) -> Response:
    audit = await site(request).accounts.audit(account.id, 30)
    return render(
        request,
        "settings.html",
        user,
        code,
        account=account,
        form=form,
        errors=errors,
        audit=audit,
        saved=request.query_params.get("saved") == "1",
    )


async def settings(request: Request) -> Response:
    user, account = await account_for(request, request.path_params["account"])
    return await _page(request, account, user, _form_of(account, tongue(request, user)), {}, 200)


async def save(request: Request) -> Response:
    account_id = request.path_params["account"]
    user, account = await account_for(request, account_id)
    t = tongue(request, user)
    posted = await request.form()
    form = {k: str(posted.get(k, "")).strip() for k in ("on_low", "threshold", "topup_amount")}
    errors: dict[str, str] = {}
    changes: dict[str, Any] = {}
    if form["on_low"] in (OnLow.BLOCK.value, OnLow.TOPUP.value):
        changes["on_low"] = OnLow(form["on_low"])
    else:
        errors["on_low"] = t.gettext("Choose one.")
    for field in ("threshold", "topup_amount"):
        try:
            changes[field] = t.parse_amount(form[field])
        except InvalidAmount:
            errors[field] = t.gettext("An amount, e.g. 10 or 12.50 (not negative).")
    if not errors and changes["on_low"] is OnLow.TOPUP and changes["topup_amount"] <= 0:
        errors["topup_amount"] = t.gettext("Automatic top-up needs an amount above zero.")
    if not errors:
        try:
            await site(request).accounts.change(account_id, changes, actor=f"web:{user.username}")
        except AccountError as exc:
            errors["threshold"] = str(exc)
    if errors:
        return await _page(request, account, user, form, errors, 400)
    return RedirectResponse(f"/accounts/{account_id}/settings?saved=1", 303)
