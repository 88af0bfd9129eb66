"""The operator's pages: every account (balance, live calls, low or blocked; search), the top-ups
awaiting an outcome, new accounts; and per account, funds added by hand (a bank transfer and its
reference), confirming or refusing its pending top-ups, and its administrators.

Everything here is the operator's alone: an account's administrator gets 404, as for a page that
does not exist. The rules are the CLI's, through the same use cases.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..accounts import AccountError, Accounts
from ..errors import InvalidAmount
from ..ledger import Account, OnLow, User
from ..ledger.models import ACCOUNT_ID
from ..users import LANGUAGES, MIN_PASSWORD, UserError
from .base import account_for, render, require_user, site, tongue
from .i18n import Tongue


async def require_operator(request: Request) -> User:
    user = await require_user(request)
    if not user.operator:
        raise HTTPException(404)
    return user


def _state(t: Tongue, a: Account) -> tuple[str, str]:
    """(filter key, words) of an account's state on the list."""
    if a.topup_failed:
        return "blocked", t.gettext("blocked: top-up failed")
    if a.available <= 0:
        return "blocked", t.gettext("blocked: below the threshold")
    if a.balance - a.reserved < a.settings.threshold * 2:
        return "low", t.gettext("low")
    return "ok", ""


STATES = ("low", "blocked")
PAGE_ACCOUNTS = 100
"""Accounts the list shows at once: with ten thousand, the whole list took 370 ms to render and
weighed 1.9 MB; the search and the state filter still see them all."""


async def _accounts_page(
    request: Request, user: User, form: dict[str, str], errors: dict[str, str], code: int = 200
) -> Response:
    s, t = site(request), tongue(request, user)
    q = request.query_params.get("q", "").strip().lower()
    wanted = request.query_params.get("state", "")
    after = request.query_params.get("after", "")
    rows = []
    # In Python's order of the names, which `after` is compared in (a database's collation may differ).
    every = sorted(await s.ledger.accounts(), key=lambda a: a.id)
    matching = []
    for a in every:
        key, words = _state(t, a)
        if not (q and q not in a.id.lower()) and not (wanted in STATES and key != wanted):
            matching.append((a, words))
    later = [m for m in matching if m[0].id > after]
    for a, words in later[:PAGE_ACCOUNTS]:
        rows.append(
            {
                "id": a.id,
                "balance": t.money(a.balance, a.settings.currency),
                "available": t.money(a.available, a.settings.currency),
                "live_calls": a.live_calls,
                "state": words,
            }
        )
    chosen = {"q": q, "state": wanted if wanted in STATES else ""}
    more = "?" + urlencode({**chosen, "after": rows[-1]["id"]}) if len(later) > PAGE_ACCOUNTS else None
    currency = {a.id: a.settings.currency for a in every}
    pending = [(p, currency.get(p.account_id, "")) for p in await s.ledger.pending_topups()]
    return render(
        request,
        "accounts.html",
        user,
        code,
        rows=rows,
        q=q,
        state=chosen["state"],
        matching=len(matching),
        skipped=len(matching) - len(later),
        more=more,
        first="?" + urlencode(chosen) if after else None,
        pending=pending,
        plans=sorted(s.plans),
        form=form,
        errors=errors,
        created=request.query_params.get("created", ""),
    )


async def accounts(request: Request) -> Response:
    user = await require_operator(request)
    return await _accounts_page(request, user, {"on_low": "block", "threshold": ""}, {})


async def create(request: Request) -> Response:
    """A new account on one of the deployment's plans (its currency), blocking below the threshold;
    its administrators and money come next, on its own operator page."""
    user = await require_operator(request)
    s, t = site(request), tongue(request, user)
    posted = await request.form()
    form = {k: str(posted.get(k, "")).strip() for k in ("account", "plan", "threshold")}
    errors: dict[str, str] = {}
    if ACCOUNT_ID.fullmatch(form["account"]) is None:
        errors["account"] = t.gettext("Letters, digits and . _ @ - (at most 64), e.g. acme-office.")
    plan = s.plans.get(form["plan"])
    if plan is None:
        errors["plan"] = t.gettext("Choose one of the plans.")
    threshold = 0
    try:
        threshold = t.parse_amount(form["threshold"]) if form["threshold"] else 0
    except InvalidAmount:
        errors["threshold"] = t.gettext("An amount, e.g. 10 or 12.50 (not negative).")
    if not errors and plan is not None:
        try:
            await s.accounts.create(
                form["account"], Accounts.new_settings(plan, threshold=threshold, on_low=OnLow.BLOCK)
            )
        except AccountError as exc:
            errors["account"] = t.gettext("This account already exists.") if "exists" in str(exc) else str(exc)
    if errors:
        return await _accounts_page(request, user, form, errors, 400)
    return RedirectResponse(f"/accounts/{form['account']}/operator?created=1", 303)


async def _operator_page(
    request: Request,
    user: User,
    account: Account,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    code: int = 200,
) -> Response:
    s = site(request)
    pending = [p for p in await s.ledger.pending_topups() if p.account_id == account.id]
    return render(
        request,
        "operator.html",
        user,
        code,
        account=account,
        pending=pending,
        admins=await s.ledger.account_users(account.id),
        languages_offered=LANGUAGES,
        errors=errors or {},
        form=form or {},
        said=request.query_params.get("said", ""),
        created=request.query_params.get("created") == "1",
        min_password=MIN_PASSWORD,
    )


async def _operator_account(request: Request) -> tuple[User, Account]:
    await require_operator(request)
    return await account_for(request, request.path_params["account"])


async def account_page(request: Request) -> Response:
    user, account = await _operator_account(request)
    return await _operator_page(request, user, account)


async def add_funds(request: Request) -> Response:
    """Funds received by bank transfer: credited once per reference (entering it twice adds nothing)."""
    user, account = await _operator_account(request)
    s, t = site(request), tongue(request, user)
    posted = await request.form()
    form = {k: str(posted.get(k, "")).strip() for k in ("amount", "reference")}
    errors: dict[str, str] = {}
    amount = 0
    try:
        amount = t.parse_amount(form["amount"])
        if amount <= 0:
            raise InvalidAmount("not positive")
    except InvalidAmount:
        errors["amount"] = t.gettext("An amount above zero, e.g. 100 or 12.50.")
    if not form["reference"] or len(form["reference"]) > 100:
        errors["reference"] = t.gettext("The bank transfer's reference (at most 100 characters).")
    if not errors:
        try:
            done = await s.accounts.top_up(
                account.id, amount, form["reference"], source="operator", actor=f"web:{user.username}"
            )
        except AccountError as exc:
            errors["reference"] = str(exc)
        else:
            said = "added" if done.created else "already"
            return RedirectResponse(f"/accounts/{account.id}/operator?said={said}", 303)
    return await _operator_page(request, user, account, errors, form, 400)


async def decide(request: Request) -> Response:
    """Confirm (credit once) or refuse a pending top-up of this account."""
    user, account = await _operator_account(request)
    s = site(request)
    posted = await request.form()
    reference, decision = str(posted.get("reference", "")), str(posted.get("decision", ""))
    topup = await s.ledger.find_topup(reference)
    if topup is None or topup.account_id != account.id or decision not in ("confirm", "refuse"):
        raise HTTPException(404)
    reason = str(posted.get("reason", "")).strip()[:200]
    ok = decision == "confirm"
    detail = reason or ("confirmed by operator" if ok else "refused by operator")
    await s.accounts.confirm_topup(reference, ok, detail, actor=f"web:{user.username}")
    return RedirectResponse(f"/accounts/{account.id}/operator?said={'confirmed' if ok else 'refused'}", 303)


async def add_admin(request: Request) -> Response:
    """An administrator for this account (the same as `rating-engine user add NAME --account A`)."""
    user, account = await _operator_account(request)
    s, t = site(request), tongue(request, user)
    posted = await request.form()
    form: dict[str, Any] = {k: str(posted.get(k, "")).strip() for k in ("username", "language", "email")}
    password = str(posted.get("password", ""))
    errors: dict[str, str] = {}
    if len(password) < MIN_PASSWORD:
        errors["password"] = t.gettext("At least 10 characters.")
    if form["language"] not in ("", *LANGUAGES):
        errors["language"] = t.gettext("Choose one.")
    if not errors:
        try:
            await s.users.add(form["username"], password, account.id, form["language"], email=form["email"])
        except UserError as exc:
            if "email" in str(exc):
                errors["email"] = t.gettext("Not an email address.")
                return await _operator_page(request, user, account, errors, form, 400)
            known = "already exists" in str(exc)
            errors["username"] = (
                t.gettext("This user name is taken.")
                if known
                else t.gettext("Letters, digits and . _ @ + - (at most 100), e.g. admin@acme.")
            )
    if errors:
        return await _operator_page(request, user, account, errors, form, 400)
    return RedirectResponse(f"/accounts/{account.id}/operator?said=admin", 303)
