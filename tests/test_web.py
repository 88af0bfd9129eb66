"""The Prepaid Account page in-process (httpx on the ASGI app, the real ledger): logging in, what
each role may see, CSRF on every POST, escaping, the two languages, the CSV export."""

from __future__ import annotations

import html
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from rating_engine.accounts import Accounts
from rating_engine.contract import DestinationClass
from rating_engine.ledger import AccountSettings, CallDetails, Ledger, make_ledger
from rating_engine.rating.catalog import load_tariffs
from rating_engine.users import Users
from rating_engine.web.app import create_app

from .conftest import OFFICE_FR
from .helpers import EUR, csrf_token
from .payment_doubles import ScriptedProvider

PLAN = next(iter(load_tariffs([OFFICE_FR]).plans.values()))
PASSWORD = "correct horse battery"
NOW = 1_795_535_109
FRENCH = {"accept-language": "fr-FR,fr;q=0.9"}


@dataclass
class Page:
    client: httpx.AsyncClient
    ledger: Ledger

    async def token(self, path: str = "/login") -> str:
        return csrf_token((await self.client.get(path)).text)

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
    transport = httpx.ASGITransport(app=create_app(ledger, "test-secret" * 4, plans={PLAN.name: PLAN}))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Page(client, ledger)
    await ledger.close()


ACME_ROUTES = [
    "/accounts/acme/balance",
    "/accounts/acme/funds",
    "/accounts/acme/settings",
    "/accounts/acme/extensions",
    "/accounts/acme/balance.json",
    "/accounts/acme/activity",
    "/accounts/acme/activity?ext=201&since=2026-01-01",
    "/accounts/acme/activity.csv",
    "/accounts/acme/card",
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


async def test_the_names_a_guesser_tries_do_not_pile_up_in_the_page_s_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed logins are counted per name and per address, in memory. A name is the guesser's to
    choose, any length: a name tried while throttled, or that no user can have, is not kept, and a
    failure is let go once past the window."""
    from argon2 import PasswordHasher

    from rating_engine import users as users_module

    monkeypatch.setattr(users_module, "PasswordHasher", lambda: PasswordHasher(1, 64, 1))
    monkeypatch.setattr(users_module, "SWEEP_AT", 50)
    ledger = make_ledger("sqlite:///")
    await ledger.open()
    try:
        now = [float(NOW)]
        users = Users(ledger, clock=lambda: now[0])
        await users.add("admin@acme", PASSWORD, None)
        for k in range(users_module.PER_ADDRESS):
            assert await users.login(f"guess{k}", "wrong", "203.0.113.9") is None
        for k in range(300):  # throttled: nothing more is kept, whatever the name
            with pytest.raises(users_module.Throttled):
                await users.login(f"guess-{k}-" + "x" * 10_000, "wrong", "203.0.113.9")
        assert len(users._failures) == users_module.PER_ADDRESS + 1
        assert await users.login("x" * 10_000, "wrong", "198.51.100.7") is None  # no user's name: by address only
        assert await users.login("no such\nname", "wrong", "198.51.100.7") is None
        assert not any("x" * 101 in key or "\n" in key for key in users._failures)
        now[0] += users_module.WINDOW + 1
        for k in range(40):  # other names from other addresses: the old failures are swept out
            assert await users.login(f"late{k}", "wrong", f"192.0.2.{k}") is None
        assert len(users._failures) == 80 and not any(key.startswith("user:guess") for key in users._failures)
        assert await users.login("admin@acme", "wrong", "203.0.113.9") is None  # its window has passed
        for k in range(users_module.PER_USER - 1):
            assert await users.login("admin@acme", "wrong", f"198.51.100.{k}") is None
        with pytest.raises(users_module.Throttled):  # the name's own limit, from any address
            await users.login("admin@acme", PASSWORD, "192.0.2.200")
        now[0] += users_module.WINDOW + 1
        assert await users.login("admin@acme", PASSWORD, "203.0.113.9") is not None
        assert "user:admin@acme" not in users._failures
    finally:
        await ledger.close()


async def test_a_body_too_large_is_refused_before_anything_reads_it(page: Page) -> None:
    """The CSRF check, a form and the webhook each read a body whole into memory: over 1 MiB, said
    or chunked, the page answers 413 first (with its security headers), and nothing is counted."""
    from rating_engine.web.app import MAX_BODY

    token = await page.token()
    big = {"username": "admin@acme", "password": "x" * MAX_BODY, "csrftoken": token}
    r = await page.client.post("/login", data=big)
    assert r.status_code == 413 and r.headers["x-frame-options"] == "DENY"

    async def chunks() -> AsyncIterator[bytes]:
        yield f"csrftoken={token}&username=admin%40acme&password=".encode()
        for _ in range(MAX_BODY // 65536 + 1):
            yield b"y" * 65536

    headers = {"content-type": "application/x-www-form-urlencoded"}
    r = await page.client.post("/login", content=chunks(), headers=headers)
    assert r.status_code == 413 and "content-length" not in r.request.headers
    r = await page.client.post("/webhooks/stripe", content=b"{" * (MAX_BODY + 1))
    assert r.status_code == 413
    assert (await page.login("admin@acme")).status_code == 303  # and the page goes on


async def test_the_body_limit_speaks_asgi_whatever_the_length_said_or_when_the_answer_began() -> None:
    """A Content-Length of 5,000 digits is refused unread (no int of it); an application that began
    its answer before the body ran over gets it cut short, never a second answer's start."""
    from starlette.types import Message, Receive, Scope, Send

    from rating_engine.web.app import BodyLimit

    sent: list[Message] = []
    reached: list[str] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def chunks() -> Message:
        return {"type": "http.request", "body": b"x" * 600, "more_body": True}

    async def never(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append("app")

    headers = [(b"content-length", b"9" * 5000)]
    await BodyLimit(never, limit=1000)({"type": "http", "path": "/login", "headers": headers}, chunks, send)
    assert reached == [] and [m.get("status") for m in sent if m["type"] == "http.response.start"] == [413]

    async def answers_first(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            await receive()

    sent.clear()
    await BodyLimit(answers_first, limit=1000)({"type": "http", "path": "/x", "headers": []}, chunks, send)
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [200]


@pytest.mark.parametrize("route", ACME_ROUTES)
async def test_another_accounts_administrator_gets_404_for_every_route(page: Page, route: str) -> None:
    assert (await page.login("admin@globex")).status_code == 303
    r = await page.client.get(route)
    assert r.status_code == 404 and "France premium" not in r.text and "8.73" not in r.text
    assert (await page.client.get(route.replace("acme", "no-such-account"))).status_code == 404
    assert (await page.client.get("/accounts")).status_code == 404  # the operator's list
    token = await page.token("/accounts/globex/balance")
    for action, form in (
        ("funds", {"amount": str(10 * EUR), "purchase": "k1"}),
        ("settings", {"on_low": "block"}),
        ("extensions", {"ext": "201", "name": "taken over"}),
        ("card", {}),
    ):
        posted = await page.client.post(f"/accounts/acme/{action}", data={**form, "threshold": "0", "csrftoken": token})
        assert posted.status_code == 404
    assert (await page.ledger.account("acme")).settings.threshold == EUR and len(await page.ledger.topups("acme")) == 1
    ext = await page.ledger.extension("acme", "201")
    assert ext is not None and ext.settings.name == ""


OPERATOR_POSTS = [
    ("/accounts", {"account": "taken-over", "plan": "office-fr", "threshold": "0"}),
    ("/accounts/acme/operator/funds", {"amount": "1000", "reference": "mine now"}),
    ("/accounts/acme/operator/topups", {"reference": "acme-opening", "decision": "confirm"}),
    ("/accounts/acme/operator/admins", {"username": "intruder", "password": "long enough password"}),
]


async def test_an_administrator_gets_404_for_every_operator_route_even_on_their_own_account(page: Page) -> None:
    await page.login("admin@acme")
    assert (await page.client.get("/accounts/acme/operator")).status_code == 404
    token = await page.token("/accounts/acme/balance")
    for path, form in OPERATOR_POSTS:
        assert (await page.client.post(path, data={**form, "csrftoken": token})).status_code == 404, path
    assert [a.id for a in await page.ledger.accounts()] == ["acme", "globex"]
    assert (await page.ledger.account("acme")).balance == 8_734_200 and await page.ledger.find_user("intruder") is None
    assert "Operator" not in (await page.client.get("/accounts/acme/balance")).text


async def test_every_operator_post_needs_the_csrf_token(page: Page) -> None:
    await page.login("operator")
    for path, form in OPERATOR_POSTS:
        assert (await page.client.post(path, data=form)).status_code == 403, path
    assert len(await page.ledger.accounts()) == 2 and len(await page.ledger.topups("acme")) == 1


async def _operator(page: Page, path: str, **form: str) -> httpx.Response:
    token = await page.token("/accounts")
    return await page.client.post(path, data={**form, "csrftoken": token})


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"account": "bad name!", "plan": "office-fr"}, "account"),
        ({"account": "", "plan": "office-fr"}, "account"),
        ({"account": "acme", "plan": "office-fr"}, "account"),  # exists already
        ({"account": "initech", "plan": "no-such-plan"}, "plan"),
        ({"account": "initech", "plan": "office-fr", "threshold": "-1"}, "threshold"),
    ],
)
async def test_a_bad_new_account_is_said_beside_the_field_and_nothing_created(
    page: Page, form: dict[str, str], field: str
) -> None:
    await page.login("operator")
    r = await _operator(page, "/accounts", **form)
    assert r.status_code == 400 and f'id="{field}-error"' in r.text
    assert [a.id for a in await page.ledger.accounts()] == ["acme", "globex"]


async def test_the_operator_opens_an_account_adds_its_administrator_and_funds_it_by_hand(page: Page) -> None:
    await page.login("operator")
    r = await _operator(page, "/accounts", account="initech", plan="office-fr", threshold="2.50")
    assert r.headers["location"] == "/accounts/initech/operator?created=1"
    acc = await page.ledger.account("initech")
    assert (acc.settings.plan, acc.settings.currency, acc.settings.threshold, acc.balance) == (
        "office-fr",
        "EUR",
        2_500_000,
        0,
    )
    assert (
        await _operator(page, "/accounts/initech/operator/admins", username="boss@initech", password="short")
    ).status_code == 400
    r = await _operator(page, "/accounts/initech/operator/admins", username="admin@acme", password=PASSWORD)
    assert r.status_code == 400 and "This user name is taken." in r.text
    r = await _operator(
        page, "/accounts/initech/operator/admins", username="boss@initech", password=PASSWORD, language="fr"
    )
    assert r.headers["location"] == "/accounts/initech/operator?said=admin"
    for _ in range(2):  # the same transfer entered twice credits once
        r = await _operator(page, "/accounts/initech/operator/funds", amount="150.5", reference="VIR-2026-001")
    assert r.headers["location"] == "/accounts/initech/operator?said=already"
    assert (await page.ledger.account("initech")).balance == 150_500_000
    body = (await page.client.get("/accounts/initech/settings")).text
    assert "Funds added by hand" in body and "web:operator" in body and "VIR-2026-001" in body
    for bad in (
        {"amount": "0", "reference": "x"},
        {"amount": "abc", "reference": "x"},
        {"amount": "5", "reference": ""},
    ):
        assert (await _operator(page, "/accounts/initech/operator/funds", **bad)).status_code == 400
    assert (await page.ledger.account("initech")).balance == 150_500_000
    boss = Page(page.client, page.ledger)
    await page.client.post("/logout", data={"csrftoken": await page.token("/accounts")})
    assert (await boss.login("boss@initech")).headers["location"] == "/accounts/initech/balance"
    assert "Solde" in (await page.client.get("/accounts/initech/balance")).text  # in the language given
    assert (await page.client.get("/accounts/acme/balance")).status_code == 404


async def test_pending_top_ups_are_confirmed_once_or_refused_with_a_reason(page: Page) -> None:
    await page.login("admin@acme")
    await _buy(page, str(10 * EUR), key="first")
    await _buy(page, str(25 * EUR), key="second")
    await page.client.post("/logout", data={"csrftoken": await page.token("/accounts/acme/balance")})
    await page.login("operator")
    listed = (await page.client.get("/accounts")).text
    assert listed.count("web:acme:") == 2 and "€25.00" in listed
    before = (await page.ledger.account("acme")).balance
    for _ in range(2):  # pressed twice: credited once
        r = await _operator(page, "/accounts/acme/operator/topups", reference="web:acme:first", decision="confirm")
    assert (await page.ledger.account("acme")).balance == before + 10 * EUR
    r = await _operator(
        page,
        "/accounts/acme/operator/topups",
        reference="web:acme:second",
        decision="refuse",
        reason="no transfer came",
    )
    assert r.headers["location"] == "/accounts/acme/operator?said=refused"
    refused = await page.ledger.find_topup("web:acme:second")
    assert refused is not None and (refused.status.value, refused.detail) == ("failed", "no transfer came")
    assert (await page.ledger.account("acme")).balance == before + 10 * EUR
    assert "No top-up awaits an outcome." in (await page.client.get("/accounts")).text
    audit = (await page.client.get("/accounts/acme/settings")).text
    assert "Top-up confirmed" in audit and "Top-up refused" in audit and "no transfer came" in audit
    await page.ledger.request_topup("globex", 5 * EUR, "globex-wire", "web")
    r = await _operator(page, "/accounts/acme/operator/topups", reference="globex-wire", decision="confirm")
    assert r.status_code == 404  # another account's top-up through this account's page
    assert (await page.ledger.find_topup("globex-wire")).status.value == "pending"  # type: ignore[union-attr]


async def test_the_operators_list_filters_by_state(page: Page) -> None:
    await page.ledger.topup("globex", 100 * EUR, "globex-big")
    await page.login("operator")
    await _operator(page, "/accounts", account="empty", plan="office-fr", threshold="1")
    low = (await page.client.get("/accounts?state=blocked")).text
    assert ">empty<" in low and ">acme<" not in low and ">globex<" not in low
    assert ">globex<" not in (await page.client.get("/accounts?state=low")).text
    assert ">globex<" in (await page.client.get("/accounts?q=GLOB")).text


async def test_the_operators_list_shows_a_hundred_accounts_at_a_time_with_its_filters_kept(page: Page) -> None:
    """With ten thousand accounts the whole list took 370 ms and 1.9 MB; now a page of a hundred,
    in the order of their names, the search and the state applied to every account first."""
    for i in range(230):
        await page.ledger.create_account(f"shop-{i:03d}", AccountSettings("office-fr", "EUR"))
    await page.login("operator")

    def shown(text: str) -> list[str]:
        return re.findall(r'<a href="/accounts/([^/"]+)/balance">', text)

    first = (await page.client.get("/accounts")).text
    assert shown(first) == ["acme", "globex", *(f"shop-{i:03d}" for i in range(98))]
    assert "1–100 / 232" in first and "Premiers comptes" not in first and "First accounts" not in first
    more = re.search(r'<a href="([^"]+)" rel="next">Next accounts', first)
    assert more and html.unescape(more.group(1)) == "?q=&state=&after=shop-097"
    second = (await page.client.get("/accounts" + html.unescape(more.group(1)))).text
    assert shown(second) == [f"shop-{i:03d}" for i in range(98, 198)] and "101–200 / 232" in second
    assert '<a href="?q=&amp;state=">First accounts</a>' in second
    last = (await page.client.get("/accounts?after=shop-197")).text
    assert shown(last) == [f"shop-{i:03d}" for i in range(198, 230)] and "201–232 / 232" in last
    assert 'rel="next"' not in last
    searched = (await page.client.get("/accounts?q=SHOP-1&state=blocked")).text  # empty accounts: blocked
    assert shown(searched) == [f"shop-{i:03d}" for i in range(100, 200)] and 'rel="next"' not in searched
    assert "1–100 / 100" not in searched  # one page: no pager
    assert shown((await page.client.get("/accounts?q=shop-1&after=shop-150")).text)[0] == "shop-151"
    hostile = (await page.client.get("/accounts", params={"after": '"><script>x()</script>'})).text
    assert "<script>x()" not in hostile


@pytest.mark.parametrize("route", [*ACME_ROUTES, "/accounts/globex/activity", "/accounts", "/accounts/acme/operator"])
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
    assert "A date, e.g. 01/12/2026." in r.text and 'value="yesterday"' in r.text


async def test_days_and_cursors_past_any_calendar_are_refused_not_a_server_error(page: Page) -> None:
    """The page works out the day after the last and the month before the first, and sends the
    cursor's time to the database: a year 1 or 9999, or a time of 5,000 digits, made it fail (500)."""
    await page.login("admin@acme")
    r = await page.client.get("/accounts/acme/activity?since=01/01/0001&until=31/12/9999")
    assert r.status_code == 200 and 'id="since-error"' in r.text and 'id="until-error"' in r.text
    assert r.text.count("A date from 1900 to 9998.") == 2  # the range is named, not a typing slip
    r = await page.client.get("/accounts/acme/activity?until=0001-01-05")
    assert r.status_code == 200 and 'id="until-error"' in r.text
    assert (await page.client.get("/accounts/acme/activity.csv?until=31/12/9999")).status_code == 200
    newest = (await page.client.get("/accounts/acme/activity")).text
    for ended in ("9" * 19, "9" * 5000):
        r = await page.client.get(f"/accounts/acme/activity?before={ended}:c1")
        assert r.status_code == 200 and r.text.count("0899123456") == newest.count("0899123456") > 0


FUZZ_VALUES = ["", " ", "0", "-1", "1e309", "NaN", "99999999999999999999999999", "9" * 5000, "1,5", "12.50",
               "0.000001", "abc", "\x00", "<script>", "a" * 300, "+5", "１２", "٣", "block", "topup", "yes",
               "confirm", "refuse", "office-fr", "fr", "201", "mobile", "acme-opening", "a@b.example", "//evil.example",
               "31/12/9999", "0001-01-01", "29/02/2025", "9" * 30 + ":c1", "-5:c1"]  # fmt: skip
FUZZ_FORMS = {
    "/accounts/acme/funds": ["amount", "purchase"],
    "/accounts/acme/extensions": ["ext", "name", "chargeable", "kinds", "daily_cap", "monthly_cap"],
    "/accounts/acme/settings": ["on_low", "threshold", "topup_amount"],
    "/language": ["language", "next"],
    "/accounts": ["account", "plan", "threshold"],
    "/accounts/acme/operator/funds": ["amount", "reference"],
    "/accounts/acme/operator/topups": ["reference", "decision"],
    "/accounts/acme/operator/admins": ["username", "password", "language", "email"],
}
FUZZ_QUERIES = [
    *("since", "until", "ext", "before", "purchase", "error", "saved", "q", "state", "created", "said", "after"),
]


@pytest.mark.parametrize("who", ["admin@acme", "operator"])
async def test_whatever_a_form_or_a_query_holds_the_page_never_fails(page: Page, who: str) -> None:
    """Every form of the page posted with odd values (huge, negative, not numbers, other scripts'
    digits, markup, control characters) and every page asked with odd query values: a clear
    refusal at worst, never a server error, and the ledger stays consistent."""
    rnd = random.Random(who)
    await page.login(who)
    token = await page.token("/accounts/acme/balance" if who != "operator" else "/accounts")
    for path, names in FUZZ_FORMS.items():
        for _ in range(40):
            form = {n: rnd.choice(FUZZ_VALUES) for n in names if rnd.random() < 0.8}
            r = await page.client.post(path, data={**form, "csrftoken": token})
            assert r.status_code < 500, (path, form)
    for route in {r.split("?")[0] for r in ACME_ROUTES} | {"/accounts", "/accounts/acme/operator"}:
        for key in FUZZ_QUERIES:  # each value, where the filter reads them; one drawn, elsewhere
            for value in FUZZ_VALUES if "activity" in route else [rnd.choice(FUZZ_VALUES)]:
                r = await page.client.get(route, params={key: value})
                assert r.status_code < 500, (route, key, value)
    assert await page.ledger.check() == []


async def test_security_headers_and_cookies(page: Page) -> None:
    r = await page.login("admin@acme")
    session = next(c for c in r.headers.get_list("set-cookie") if c.startswith("re_session="))
    assert "httponly" in session.lower() and "samesite=lax" in session.lower() and "max-age=28800" in session.lower()
    r = await page.client.get("/accounts/acme/balance")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"


async def _buy(page: Page, amount: str, key: str | None = None) -> httpx.Response:
    body = (await page.client.get("/accounts/acme/funds")).text
    token = csrf_token(body)
    purchase = key or re.search(r'name="purchase" value="([^"]+)"', body)
    assert purchase
    form = {"amount": amount, "purchase": purchase if isinstance(purchase, str) else purchase.group(1)}
    return await page.client.post("/accounts/acme/funds", data={**form, "csrftoken": token})


@pytest.mark.parametrize(
    ("behaviour", "credited", "words"), [("ok", True, "Done"), ("fail", False, "Declined: card declined")]
)
async def test_add_funds_charges_the_provider_once_per_purchase(
    page: Page, behaviour: str, credited: bool, words: str
) -> None:
    provider = ScriptedProvider(behaviour)
    transport = httpx.ASGITransport(app=create_app(page.ledger, "test-secret" * 4, provider=provider))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        shop = Page(client, page.ledger)
        await shop.login("admin@acme")
        before = (await page.ledger.account("acme")).balance
        first = await _buy(shop, str(25 * EUR), key="a1b2c3")
        again = await _buy(shop, str(25 * EUR), key="a1b2c3")  # "Buy" pressed twice, or the page reloaded
        assert first.headers["location"] == again.headers["location"] == "/accounts/acme/funds?purchase=a1b2c3"
        assert len(provider.charges) == 1
        shown = (await client.get(first.headers["location"])).text
        assert words in shown and "€25.00" in shown
        acc = await page.ledger.account("acme")
        assert acc.balance == before + (25 * EUR if credited else 0)
        assert not acc.topup_failed, "a declined purchase does not stop the calls (only a failed automatic top-up)"


async def test_add_funds_with_the_manual_provider_is_pending_for_the_operator(page: Page) -> None:
    await page.login("admin@acme")
    r = await _buy(page, str(10 * EUR))
    assert "Pending" in (await page.client.get(r.headers["location"])).text
    [pending] = [t for t in await page.ledger.topups("acme") if t.source == "web"]
    assert pending.status.value == "pending" and (await page.ledger.account("acme")).balance == 8_734_200


@pytest.mark.parametrize("amount", [str(7 * EUR), "-10000000", "ten", ""])
async def test_an_amount_not_in_the_list_is_refused_and_nothing_written(page: Page, amount: str) -> None:
    await page.login("admin@acme")
    r = await _buy(page, amount)
    assert r.headers["location"].endswith("?error=amount")
    assert "Choose one of the amounts." in (await page.client.get(r.headers["location"])).text
    assert [t for t in await page.ledger.topups("acme") if t.source == "web"] == []


async def _save(page: Page, **form: str) -> httpx.Response:
    token = await page.token("/accounts/acme/settings")
    return await page.client.post("/accounts/acme/settings", data={**form, "csrftoken": token})


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"on_low": "block", "threshold": "-1", "topup_amount": "0"}, "threshold"),
        ({"on_low": "block", "threshold": "abc", "topup_amount": "0"}, "threshold"),
        ({"on_low": "topup", "threshold": "5", "topup_amount": "0"}, "topup_amount"),
        ({"on_low": "sometimes", "threshold": "5", "topup_amount": "10"}, "on_low"),
        ({"on_low": "block", "threshold": "1e3", "topup_amount": "10"}, "threshold"),
    ],
)
async def test_bad_settings_are_said_beside_the_field_and_nothing_written(
    page: Page, form: dict[str, str], field: str
) -> None:
    await page.login("admin@acme")
    before = (await page.ledger.account("acme")).settings
    r = await _save(page, **form)
    assert r.status_code == 400 and f'id="{field}-error"' in r.text
    assert (await page.ledger.account("acme")).settings == before


async def test_settings_change_and_the_audit_list_says_who(page: Page) -> None:
    await page.login("admin@acme")
    r = await _save(page, on_low="topup", threshold="5", topup_amount="20.50")
    assert r.headers["location"] == "/accounts/acme/settings?saved=1"
    s = (await page.ledger.account("acme")).settings
    assert (s.on_low.value, s.threshold, s.topup_amount) == ("topup", 5 * EUR, 20_500_000)
    body = (await page.client.get(r.headers["location"])).text
    assert "web:admin@acme" in body and "Saved." in body


async def _ext(page: Page, **form: str | list[str]) -> httpx.Response:
    token = await page.token("/accounts/acme/extensions")
    return await page.client.post("/accounts/acme/extensions", data={**form, "csrftoken": token})


async def test_an_extensions_rules_are_set_on_the_page_and_shown_in_the_activity(page: Page) -> None:
    await page.login("admin@acme")
    r = await _ext(
        page, ext="201", name="Reception <desk>", chargeable="yes", kinds=["national", "premium"], daily_cap="3"
    )
    assert r.headers["location"] == "/accounts/acme/extensions?saved=201"
    e = await page.ledger.extension("acme", "201")
    assert e is not None and e.settings.name == "Reception <desk>" and e.settings.daily_cap == 3 * EUR
    assert (
        e.settings.classes == frozenset({DestinationClass.NATIONAL, DestinationClass.PREMIUM}) and e.settings.chargeable
    )
    await _ext(page, ext="202", name="", kinds=["national", "international", "mobile_abroad", "premium"])
    e2 = await page.ledger.extension("acme", "202")
    assert e2 is not None and not e2.settings.chargeable and e2.settings.classes is None  # every kind: all
    body = (await page.client.get("/accounts/acme/activity")).text
    assert "Reception &lt;desk&gt;" in body and "<desk>" not in body


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"ext": "201", "daily_cap": "-1"}, "daily_cap"),
        ({"ext": "201", "monthly_cap": "lots"}, "monthly_cap"),
        ({"ext": "20 1"}, "ext"),
        ({"ext": "201", "name": "x" * 61}, "name"),
    ],
)
async def test_bad_extension_rules_are_said_and_nothing_written(page: Page, form: dict[str, str], field: str) -> None:
    await page.login("admin@acme")
    before = await page.ledger.extension("acme", "201")
    r = await _ext(page, chargeable="yes", **form)
    assert r.status_code == 400 and f"{field}-" in r.text and 'class="error"' in r.text
    assert await page.ledger.extension("acme", "201") == before


async def test_the_activity_pages_back_by_keyset_without_losing_or_repeating_a_call(
    page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rating_engine.web import activity

    monkeypatch.setattr(activity, "PAGE", 4)
    monkeypatch.setattr(activity, "CSV_PAGE", 3)
    for i in range(7):  # seven more calls ending at the same second: the call id breaks the tie
        await call(page.ledger, "acme", f"same-second-{i}", "203", 1_000, dialed=f"+4420{i}")
    await page.login("admin@acme")
    seen: list[str] = []
    url = "/accounts/acme/activity"
    while url:
        body = (await page.client.get(url)).text
        seen += re.findall(r"<td>(\+4420\d|0899123456|=HYPERLINK\(1\))</td>", body)
        found = re.search(r'<a href="(\?[^"]+)" rel="next">', body)
        url = "/accounts/acme/activity" + found.group(1).replace("&amp;", "&") if found else ""
    assert sorted(seen) == sorted(["0899123456", "=HYPERLINK(1)", *(f"+4420{i}" for i in range(7))])
    assert "Totals per extension" in body and ">7<" in body  # the totals are the whole selection's
    csv_lines = (await page.client.get("/accounts/acme/activity.csv")).text.strip().splitlines()
    assert len(csv_lines) == 1 + 9 and len(set(csv_lines)) == 10


async def test_the_chart_stacks_each_days_spending_by_extension(page: Page) -> None:
    await page.login("admin@acme")
    body = (await page.client.get("/accounts/acme/activity?since=20/11/2026&until=30/11/2026")).text
    titles = re.findall(r"<rect [^>]*><title>([^<]+)</title>", body)
    assert titles == ["24 Nov · 201: €1.25", "24 Nov · 202: €0.0158"]  # the biggest spender at the bottom
    assert "20/11/2026 – 30/11/2026" in body and "Globex" not in body
    only = (await page.client.get("/accounts/acme/activity?ext=202&since=2026-11-20&until=2026-11-30")).text
    assert re.findall(r"<title>([^<]+)</title>", only)[1:] == ["24 Nov · 202: €0.0158"]
    fr = await page.client.get("/accounts/acme/activity?since=20/11/2026&until=30/11/2026", headers=FRENCH)
    assert "24 nov. · 201: 1,25\u00a0€" in fr.text and "Dépenses par jour" in fr.text
    empty = (await page.client.get("/accounts/acme/activity?since=01/01/2030")).text
    assert "<rect x" not in empty and "No chargeable call in this period." in empty


async def test_french_amounts_and_days_are_read_as_french(page: Page) -> None:
    await page.login("admin@acme")
    token = await page.token("/accounts/acme/balance")
    await page.client.post("/language", data={"language": "fr", "next": "/", "csrftoken": token})
    r = await _save(page, on_low="topup", threshold="2,5", topup_amount="1 000,50")
    assert r.status_code == 303
    s = (await page.ledger.account("acme")).settings
    assert (s.threshold, s.topup_amount) == (2_500_000, 1_000_500_000)
    form = (await page.client.get("/accounts/acme/settings")).text
    assert 'value="2,50"' in form and 'value="1000,50"' in form  # filled in as French writes it
    assert "Seuil modifié" in form and "set threshold" not in form  # the audit in French
    r = await _ext(page, ext="201", daily_cap="0,75")
    e = await page.ledger.extension("acme", "201")
    assert r.status_code == 303 and e is not None and e.settings.daily_cap == 750_000
    body = (await page.client.get("/accounts/acme/activity?since=24/11/2026&until=24/11/2026")).text
    assert body.count("0899123456") == 1 and 'placeholder="jj/mm/aaaa"' in body
    assert "aria-invalid" not in body


async def test_with_the_manual_provider_the_card_page_says_how_payments_are_taken(page: Page) -> None:
    await page.login("admin@acme")
    body = (await page.client.get("/accounts/acme/card")).text
    assert "No card on file." in body and "bank transfer" in body and 'action="/accounts/acme/card"' not in body
    token = await page.token("/accounts/acme/card")
    assert (await page.client.post("/accounts/acme/card", data={"csrftoken": token})).status_code == 404
    assert (await page.client.post("/webhooks/stripe", content=b"{}")).status_code == 404  # no such provider here
    csp = (await page.client.get("/accounts/acme/card")).headers["content-security-policy"]
    assert "form-action 'self';" in csp


async def test_the_operator_gives_an_administrator_an_email_for_notices(page: Page) -> None:
    await page.login("operator")
    r = await _operator(
        page, "/accounts/acme/operator/admins", username="ann", password=PASSWORD, email="not-an-address"
    )
    assert r.status_code == 400 and 'id="email-error"' in r.text and await page.ledger.find_user("ann") is None
    r = await _operator(
        page, "/accounts/acme/operator/admins", username="ann", password=PASSWORD, email="ann@acme.example"
    )
    assert r.status_code == 303
    user = await page.ledger.find_user("ann")
    assert user is not None and user.email == "ann@acme.example"
    assert "&lt;ann@acme.example&gt;" in (await page.client.get("/accounts/acme/operator")).text


def test_the_balance_says_when_automatic_top_up_is_paused_or_waits_for_the_customer() -> None:
    from dataclasses import replace

    from rating_engine.ledger import Account, OnLow, Topup, TopupStatus
    from rating_engine.web.balance import figures
    from rating_engine.web.i18n import Tongue

    s = replace(Accounts.new_settings(PLAN, threshold=EUR), on_low=OnLow.TOPUP, topup_amount=20 * EUR)
    paused = Account("acme", s, 0, 0, 0, True, None, topup_failures=3, topup_paused=True)
    assert figures(Tongue("en"), paused, [], [])["auto_topup"].startswith("paused after 3 failed top-ups")
    assert figures(Tongue("fr"), paused, [], [])["auto_topup"].startswith("suspendu après 3")
    waiting = Topup(
        "auto:acme:c1", "acme", 21 * EUR, NOW, "auto", TopupStatus.PENDING, "", "https://checkout.stripe.com/x"
    )
    account = Account("acme", s, 0, 0, 0, False, "auto:acme:c1")
    assert "waits for your confirmation" in figures(Tongue("en"), account, [], [waiting])["auto_topup"]
