"""What every view shares: the site (ledger, use cases, templates), who is logged in, which account
they may see, and rendering in their language. Views hold no SQL and no money rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..accounts import Accounts
from ..ledger import Account, Ledger, User
from ..payments import PaymentProvider, TopupRunner
from ..rating.plan import Plan
from ..users import Users
from .i18n import LANGUAGES, Tongue, choose

TEMPLATES = Path(__file__).parent / "templates"
LANGUAGE_COOKIE = "re_lang"


@dataclass
class Site:
    ledger: Ledger
    accounts: Accounts
    users: Users
    templates: Environment
    runner: TopupRunner
    """Pays Add Funds through the deployment's payment provider."""
    amounts: tuple[int, ...]
    """What Add Funds offers, in micro-units of the account's currency."""
    plans: dict[str, Plan]
    """The deployment's plans, by name: what a new account may be on."""
    secure_cookies: bool = False

    @classmethod
    def on(
        cls,
        ledger: Ledger,
        provider: PaymentProvider,
        amounts: tuple[int, ...],
        plans: dict[str, Plan],
        secure_cookies: bool = False,
    ) -> Site:
        env = Environment(
            loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True, default_for_string=True)
        )
        runner = TopupRunner(ledger, provider)
        return cls(ledger, Accounts(ledger), Users(ledger), env, runner, amounts, plans, secure_cookies)


def site(request: Request) -> Site:
    found: Site = request.app.state.site
    return found


async def current_user(request: Request) -> User | None:
    username = request.session.get("user")
    if not isinstance(username, str):
        return None
    return await site(request).ledger.find_user(username)


async def require_user(request: Request) -> User:
    user = await current_user(request)
    if user is None:
        raise HTTPException(303, headers={"Location": "/login"})
    return user


async def account_for(request: Request, account_id: str) -> tuple[User, Account]:
    """The account, if this user may see it: its own administrators and operators. Anyone else
    gets 404, the same as for an account that does not exist (nothing to learn from it)."""
    user = await require_user(request)
    if not user.operator and user.account_id != account_id:
        raise HTTPException(404)
    account = await site(request).ledger.find_account(account_id)
    if account is None:
        raise HTTPException(404)
    return user, account


def tongue(request: Request, user: User | None) -> Tongue:
    return Tongue(
        choose(
            request.cookies.get(LANGUAGE_COOKIE),
            user.language if user else None,
            request.headers.get("accept-language", ""),
        )
    )


def render(request: Request, name: str, user: User | None, code: int = 200, **context: Any) -> HTMLResponse:
    t = tongue(request, user)
    csrf = request.scope.get("csrftoken")
    page = (
        site(request)
        .templates.get_template(name)
        .render(
            user=user,
            language=t.language,
            languages=list(LANGUAGES),
            csrftoken=csrf() if callable(csrf) else "",
            path=request.url.path,
            **t.helpers(),
            **context,
        )
    )
    return HTMLResponse(page, status_code=code)
