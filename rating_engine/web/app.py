"""The Prepaid Account page as an ASGI application: routes, sessions, CSRF, security headers, a
cap on a request's body.

`rating-engine web` serves it next to `rating-engine run`, on the same ledger (SQLite file or
PostgreSQL), through the same use cases as the CLI. Every state change is a POST checked for CSRF
(asgi-csrf: a signed token in a cookie and in the form); sessions are signed HttpOnly SameSite
cookies that expire; an administrator of one account gets 404 for everything of another.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from asgi_csrf import asgi_csrf
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..ledger import Ledger
from ..money import MICRO
from ..payments import ManualProvider, PaymentProvider
from ..rating.plan import Plan
from . import activity, auth, balance, card, extensions, funds, operator, settings, webhooks
from .base import Site, current_user, render

log = logging.getLogger("rating_engine.web")
STATIC = Path(__file__).parent / "static"
CSP = "default-src 'self'; frame-ancestors 'none'; form-action 'self'{hosted}; base-uri 'none'"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
POST_PATHS = {"/login", "/logout", "/language"}


WEBHOOKS = "/webhooks/"


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hosted_origin: str = "") -> None:
        """`hosted_origin`: the payment provider's pages, where "Edit" (a POST) may lead."""
        self.app = app
        csp = CSP.format(hosted=f" {hosted_origin}" if hosted_origin else "")
        self.headers = [(b"content-security-policy", csp.encode()), *SECURITY_HEADERS]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.app(scope, receive, with_headers)


MAX_BODY = 1024 * 1024
"""Bytes a request's body may hold: a form of this page is a few hundred, a provider's event under
`webhooks.MAX_BODY`. Whatever reads a body here (the CSRF check, a form, the webhook) reads it
whole into memory; a reverse proxy's limit, if any, is the operator's and may be none."""


class _TooLarge(Exception):
    pass


class BodyLimit:
    """413 for a request whose body is over `limit` bytes, said by its Content-Length or counted as
    it arrives (chunked), before the application holds it."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and (len(declared) > 15 or int(declared) > self.limit):
            await _refuse(scope, send)
            return
        seen = 0
        refused = answered = False

        async def counted() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit and not refused:
                refused = True
                if not answered:  # else the answer has begun: the body is only cut short
                    await _refuse(scope, send)
                raise _TooLarge
            return message

        async def unless_refused(message: Message) -> None:
            nonlocal answered
            if refused and not answered:
                return  # the application's answer to a body it never got whole: 413 was sent
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, counted, unless_refused)


async def _refuse(scope: Scope, send: Send) -> None:
    client = scope.get("client") or ("", 0)
    log.warning("request body too large: refused", extra={"path": scope.get("path", ""), "client": client[0]})
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"request body too large"})


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (301, 302, 303, 307):
        return Response(status_code=exc.status_code, headers=exc.headers)
    user = await current_user(request)
    return render(request, "error.html", user, exc.status_code, status=exc.status_code)


DEFAULT_AMOUNTS = tuple(n * MICRO for n in (10, 25, 50, 100))


def create_app(
    ledger: Ledger,
    secret: str,
    *,
    provider: PaymentProvider | None = None,
    amounts: tuple[int, ...] = DEFAULT_AMOUNTS,
    plans: dict[str, Plan] | None = None,
    session_hours: float = 8.0,
    secure_cookies: bool = False,
) -> ASGIApp:
    """The page on `ledger` (opened and closed by the caller). `secret` signs sessions and CSRF
    tokens; `provider` pays Add Funds (the manual one, pending for the operator, by default);
    `plans` are those an operator may open a new account on."""
    routes = [
        Route("/", auth.home),
        Route("/login", auth.login_page, methods=["GET"]),
        Route("/login", auth.login, methods=["POST"]),
        Route("/logout", auth.logout, methods=["POST"]),
        Route("/language", auth.language, methods=["POST"]),
        Route("/accounts", operator.accounts, methods=["GET"]),
        Route("/accounts", operator.create, methods=["POST"]),
        Route("/accounts/{account}/operator", operator.account_page, methods=["GET"]),
        Route("/accounts/{account}/operator/funds", operator.add_funds, methods=["POST"]),
        Route("/accounts/{account}/operator/topups", operator.decide, methods=["POST"]),
        Route("/accounts/{account}/operator/admins", operator.add_admin, methods=["POST"]),
        Route("/accounts/{account}/balance", balance.balance),
        Route("/accounts/{account}/balance.json", balance.balance_json),
        Route("/accounts/{account}/activity", activity.activity),
        Route("/accounts/{account}/activity.csv", activity.activity_csv),
        Route("/accounts/{account}/funds", funds.funds, methods=["GET"]),
        Route("/accounts/{account}/funds", funds.buy, methods=["POST"]),
        Route("/accounts/{account}/extensions", extensions.extensions, methods=["GET"]),
        Route("/accounts/{account}/extensions", extensions.save, methods=["POST"]),
        Route("/accounts/{account}/card", card.card, methods=["GET"]),
        Route("/accounts/{account}/card", card.edit, methods=["POST"]),
        Route("/webhooks/stripe", webhooks.stripe_webhook, methods=["POST"]),
        Route("/accounts/{account}/settings", settings.settings, methods=["GET"]),
        Route("/accounts/{account}/settings", settings.save, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=secret,
                session_cookie="re_session",
                max_age=int(session_hours * 3600),
                same_site="lax",
                https_only=secure_cookies,
            )
        ],
        exception_handlers={HTTPException: _error},
    )
    app.state.site = Site.on(ledger, provider or ManualProvider(), amounts, plans or {}, secure_cookies)
    protected: Any = asgi_csrf(
        app,
        signing_secret=secret,
        always_protect=POST_PATHS,
        cookie_secure=secure_cookies,
        always_set_cookie=True,
        skip_if_scope=lambda scope: scope.get("path", "").startswith(WEBHOOKS),  # signed by the provider
    )
    return SecurityHeaders(BodyLimit(protected), getattr(app.state.site.runner.provider, "hosted_origin", ""))
