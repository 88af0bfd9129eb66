"""Payment information: the card on file as the provider reports it (brand, last four, expiry) and
"Edit", which leads to the provider's own hosted page. A card number never passes through here."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .base import account_for, render, site


async def card(request: Request) -> Response:
    user, account = await account_for(request, request.path_params["account"])
    s = site(request)
    on_file = await s.ledger.card(account.id)
    return render(
        request,
        "card.html",
        user,
        account=account,
        card=on_file if on_file is not None and on_file.payment_method else None,
        editable=hasattr(s.runner.provider, "setup_page"),
        saved=request.query_params.get("saved") == "1",
    )


async def edit(request: Request) -> Response:
    """To the provider's page (a POST, CSRF-checked: it makes the customer at the provider)."""
    _, account = await account_for(request, request.path_params["account"])
    provider = site(request).runner.provider
    setup_page = getattr(provider, "setup_page", None)
    if setup_page is None:
        raise HTTPException(404)
    return RedirectResponse(await setup_page(account.id), 303)
