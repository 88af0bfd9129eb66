"""The Prepaid Account page in-process (httpx on the ASGI app, the real ledger): logging in, what
each role may see, CSRF on every POST, escaping, the two languages, the CSV export."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from rating_engine.accounts import Accounts
from rating_engine.ledger import CallDetails, Ledger, make_ledger
from rating_engine.rating.catalog import load_tariffs
from rating_engine.users import Users
from rating_engine.web.app import create_app

from .conftest import OFFICE_FR
from .helpers import EUR

PLAN = next(iter(load_tariffs([OFFICE_FR]).plans.values()))
PASSWORD = "correct horse battery"
NOW = 1_795_535_109


@dataclass
class Page:
    client: httpx.AsyncClient
    ledger: Ledger

    async def token(self, path: str = "/login") -> str:
        found = re.search(r'name="csrftoken" value="([^"]+)"', (await self.client.get(path)).text)
        assert found, "every form carries the CSRF token"
        return found.group(1)

    async def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        token = await self.token()
        return await self.client.post("/login", data={"username": username, "password": password, "csrftoken": token})


async def call(ledger: Ledger, account: str, call_id: str, ext: str, cost: int, **details: object) -> None:
    assert (await ledger.reserve(call_id, account, ext, cost, now=NOW)).ok
    info = CallDetails(started_at=NOW, ended_at=NOW + 60, billable_seconds=60, **details)  # type: ignore[arg-type]
    await ledger.settle(call_id, cost, info, now=NOW + 60)


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    ledger = make_ledger("sqlite:///")
    await ledger.open()
    accounts, users = Accounts(ledger), Users(ledger)
    for name in ("acme", "globex"):
        await accounts.create(name, Accounts.new_settings(PLAN, threshold=EUR))
        await accounts.top_up(name, 10 * EUR, f"{name}-opening", source="test")
        await users.add(f"admin@{name}", PASSWORD, name)
    await users.add("operator", PASSWORD, None)
    await call(
        ledger, "acme", "c1", "201", 1_250_000, dialed="0899123456", destination="France premium", kind="premium"
    )
    await call(ledger, "acme", "c2", "202", 15_800, dialed="=HYPERLINK(1)", destination="<script>x()</script>")
    await call(ledger, "globex", "g1", "301", 500_000, dialed="+12125550100", destination="Globex secret place")
    transport = httpx.ASGITransport(app=create_app(ledger, "test-secret" * 4))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Page(client, ledger)
    await ledger.close()


ACME_ROUTES = [
    "/accounts/acme/balance",
    "/accounts/acme/balance.json",
    "/accounts/acme/activity",
    "/accounts/acme/activity?ext=201&since=2026-01-01",
    "/accounts/acme/activity.csv",
]


async def test_an_administrator_logs_in_to_their_account_and_sees_its_balance(page: Page) -> None:
    r = await page.login("admin@acme")
    assert (r.status_code, r.headers["location"]) == (303, "/accounts/acme/balance")
    body = (await page.client.get("/accounts/acme/balance")).text
    assert "€8.73" in body and "acme" in body and "globex" not in body  # 10 - 1.25 - 0.0158, exact
    live = (await page.client.get("/accounts/acme/balance.json")).json()
    assert live["balance"] == "€8.7342" and live["live_calls"] == 0


async def test_a_wrong_password_is_refused_and_guessing_is_throttled(page: Page) -> None:
    r = await page.login("admin@acme", "not the password")
    assert r.status_code == 401 and "Wrong user name or password." in r.text
    assert (await page.login("nobody", "whatever")).status_code == 401
    for _ in range(4):
        await page.login("admin@acme", "still wrong")
    r = await page.login("admin@acme")  # the right password, but too late
    assert r.status_code == 429 and (await page.client.get("/accounts/acme/balance")).status_code == 303


@pytest.mark.parametrize("route", ACME_ROUTES)
async def test_another_accounts_administrator_gets_404_for_every_route(page: Page, route: str) -> None:
    assert (await page.login("admin@globex")).status_code == 303
    r = await page.client.get(route)
    assert r.status_code == 404 and "France premium" not in r.text and "8.73" not in r.text
    assert (await page.client.get(route.replace("acme", "no-such-account"))).status_code == 404
    assert (await page.client.get("/accounts")).status_code == 404  # the operator's list


@pytest.mark.parametrize("route", [*ACME_ROUTES, "/accounts/globex/activity", "/accounts"])
async def test_the_operator_sees_every_account(page: Page, route: str) -> None:
    assert (await page.login("operator")).headers["location"] == "/accounts"
    assert (await page.client.get(route)).status_code == 200


@pytest.mark.parametrize("route", [*ACME_ROUTES, "/accounts"])
async def test_nobody_logged_in_is_sent_to_the_login_page(page: Page, route: str) -> None:
    r = await page.client.get(route)
    assert (r.status_code, r.headers.get("location")) == (303, "/login")


async def test_every_post_needs_the_csrf_token(page: Page) -> None:
    form = {"username": "admin@acme", "password": PASSWORD}
    assert (await page.client.post("/login", data=form)).status_code == 403
    assert (await page.client.post("/login", data={**form, "csrftoken": "forged"})).status_code == 403
    await page.login("admin@acme")
    assert (await page.client.post("/logout", data={})).status_code == 403
    assert (await page.client.post("/language", data={"language": "fr"})).status_code == 403
    assert (await page.client.get("/accounts/acme/balance")).status_code == 200  # still logged in
    r = await page.client.post("/logout", data={"csrftoken": await page.token("/accounts/acme/balance")})
    assert r.status_code == 303 and (await page.client.get("/accounts/acme/balance")).status_code == 303


async def test_what_the_page_shows_is_escaped(page: Page) -> None:
    await page.login("admin@acme")
    body = (await page.client.get("/accounts/acme/activity")).text
    assert "<script>x()</script>" not in body and "&lt;script&gt;x()&lt;/script&gt;" in body
    assert "<script" not in body.replace('<script src="/static/live.js"', "")


async def test_the_page_speaks_french_with_french_money(page: Page) -> None:
    await page.login("admin@acme")
    body = (await page.client.get("/accounts/acme/balance", headers={"accept-language": "fr-FR,fr;q=0.9"})).text
    assert "Solde" in body and "8,7342\u00a0€" in body and 'lang="fr"' in body  # a no-break space
    token = await page.token("/accounts/acme/balance")
    r = await page.client.post(
        "/language", data={"language": "en", "next": "/accounts/acme/balance", "csrftoken": token}
    )
    assert r.headers["location"] == "/accounts/acme/balance"
    body = (await page.client.get("/accounts/acme/balance", headers={"accept-language": "fr"})).text
    assert "Balance" in body and "€8.7342" in body  # the choice on the page wins over the browser's
    r = await page.client.post("/language", data={"language": "fr", "next": "//evil.example", "csrftoken": token})
    assert r.headers["location"] == "/"  # never sent to another site


async def test_the_csv_is_exactly_what_the_filter_selects(page: Page) -> None:
    await page.login("admin@acme")
    r = await page.client.get("/accounts/acme/activity.csv?ext=202")
    assert r.headers["content-type"].startswith("text/csv") and "attachment" in r.headers["content-disposition"]
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("ended,extension,dialed") and len(lines) == 2
    assert ",202,'=HYPERLINK(1)," in lines[1] and lines[1].endswith(",0.0158,8.7342")  # no formula, exact money
    assert len((await page.client.get("/accounts/acme/activity.csv")).text.strip().splitlines()) == 3
    future = await page.client.get("/accounts/acme/activity.csv?since=2030-01-01")
    assert future.text.strip().splitlines() == [future.text.strip()]  # the header alone


async def test_a_bad_date_in_the_filter_is_said_beside_the_field(page: Page) -> None:
    await page.login("admin@acme")
    r = await page.client.get("/accounts/acme/activity?since=yesterday")
    assert r.status_code == 200 and 'id="since-error"' in r.text and 'aria-invalid="true"' in r.text


async def test_security_headers_and_cookies(page: Page) -> None:
    r = await page.login("admin@acme")
    session = next(c for c in r.headers.get_list("set-cookie") if c.startswith("re_session="))
    assert "httponly" in session.lower() and "samesite=lax" in session.lower() and "max-age=28800" in session.lower()
    r = await page.client.get("/accounts/acme/balance")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
