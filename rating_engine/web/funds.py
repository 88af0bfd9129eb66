"""Add Funds: an amount from the configured list, charged through the account's payment provider,
credited once per purchase (the form carries its own key), and the outcome said plainly."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts import AccountError
from ..ledger import TopupStatus
from .base import account_for, render, site, tongue

SOURCE = "web"


async def funds(request: Request) -> Response:
    account_id = request.path_params["account"]
    user, account = await account_for(request, account_id)
    s, t = site(request), tongue(request, user)
    outcome = None
    key = request.query_params.get("purchase", "")
    if key:
        topup = await s.ledger.find_topup(f"{SOURCE}:{account_id}:{key}")
        if topup is not None and topup.account_id == account_id:
            said = {
                TopupStatus.SUCCEEDED: t.gettext("Done: the funds were added."),
                TopupStatus.FAILED: t.gettext("Declined:") + " " + (topup.detail or t.gettext("no reason given")),
                TopupStatus.PENDING: t.gettext("Pending: the funds are added once the payment is confirmed."),
            }[topup.status]
            if topup.status is TopupStatus.PENDING and topup.action_url:
                said = t.gettext("Your bank asks you to confirm this payment on the provider's page.")
            outcome = {
                "status": topup.status.value,
                "text": said,
                "amount": t.money(topup.amount, account.settings.currency),
                "confirm": topup.action_url if topup.status is TopupStatus.PENDING else "",
            }
    return render(
        request,
        "funds.html",
        user,
        account=account,
        amounts=[(a, t.money(a, account.settings.currency)) for a in s.amounts],
        key=uuid.uuid4().hex,
        outcome=outcome,
        error=request.query_params.get("error", "") == "amount",
    )


async def buy(request: Request) -> Response:
    account_id = request.path_params["account"]
    await account_for(request, account_id)
    s = site(request)
    form = await request.form()
    chosen, key = str(form.get("amount", "")), str(form.get("purchase", ""))
    amount = next((a for a in s.amounts if str(a) == chosen), None)
    if amount is None:  # only the amounts of the list: nothing is written
        return RedirectResponse(f"/accounts/{account_id}/funds?error=amount", 303)
    try:
        await s.accounts.buy(account_id, amount, key, s.runner, source=SOURCE)
    except AccountError:
        return RedirectResponse(f"/accounts/{account_id}/funds?error=amount", 303)
    return RedirectResponse(f"/accounts/{account_id}/funds?purchase={key}", 303)
