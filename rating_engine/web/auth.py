"""Logging in and out, and the language of the page."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..users import Throttled
from .base import LANGUAGE_COOKIE, current_user, render, site, tongue
from .i18n import LANGUAGES


def home_of(user_account: str | None) -> str:
    return "/accounts" if user_account is None else f"/accounts/{user_account}/balance"


async def login_page(request: Request) -> Response:
    user = await current_user(request)
    if user is not None:
        return RedirectResponse(home_of(user.account_id), 303)
    return render(request, "login.html", None)


async def login(request: Request) -> Response:
    form = await request.form()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    address = request.client.host if request.client else ""
    t = tongue(request, None)
    try:
        user = await site(request).users.login(username, password, address)
    except Throttled:
        return render(request, "login.html", None, 429, error=t.gettext("Too many failed logins: wait a few minutes."))
    if user is None:
        return render(request, "login.html", None, 401, error=t.gettext("Wrong user name or password."))
    request.session.clear()
    request.session["user"] = user.username
    return RedirectResponse(home_of(user.account_id), 303)


async def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/login", 303)


async def language(request: Request) -> Response:
    form = await request.form()
    chosen = str(form.get("language", ""))
    back = str(form.get("next", "/"))
    if not back.startswith("/") or back.startswith("//"):
        back = "/"  # never a redirect to another site
    response = RedirectResponse(back, 303)
    if chosen in LANGUAGES:
        user = await current_user(request)
        if user is not None:
            await site(request).users.set_language(user, chosen)
        response.set_cookie(
            LANGUAGE_COOKIE,
            chosen,
            max_age=365 * 86400,
            httponly=True,
            samesite="lax",
            secure=site(request).secure_cookies,
        )
    return response


async def home(request: Request) -> Response:
    user = await current_user(request)
    return RedirectResponse("/login" if user is None else home_of(user.account_id), 303)
