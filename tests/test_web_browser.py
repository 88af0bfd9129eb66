"""The Prepaid Account page in a real browser (Debian's chromium driven by Playwright): log in,
watch the balance follow a call, switch to French, filter the activity and download its CSV, buy
funds, change the settings (a bad value first).
Screenshots of each page go to test-artifacts/ (look at them). Without chromium this skips, with
the reason; under CI (CI=true) it must run."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rating_engine.accounts import Accounts
from rating_engine.ledger import CallDetails, make_ledger
from rating_engine.rating.catalog import load_tariffs
from rating_engine.users import Users

from .conftest import OFFICE_FR, ROOT
from .helpers import EUR
from .payment_doubles import ScriptedProvider

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "correct horse battery"
NOW = 1_795_535_109


def _need_a_browser() -> None:
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI must run the browser tests: chromium is missing (.ci/run installs it)")
    pytest.skip("no chromium here (apt-get install chromium): the page's browser tests did not run")


async def _seed(url: str) -> None:
    ledger = make_ledger(url)
    await ledger.open()
    try:
        plan = next(iter(load_tariffs([OFFICE_FR]).plans.values()))
        accounts = Accounts(ledger)
        await accounts.create("acme", Accounts.new_settings(plan, threshold=EUR))
        await accounts.top_up("acme", 25 * EUR, "opening", source="test")
        await Users(ledger).add("admin@acme", PASSWORD, "acme")
        await Users(ledger).add("operator", PASSWORD, None)
        for i, (ext, cost) in enumerate([("201", 1_250_000), ("202", 320_000), ("201", 45_000)]):
            await ledger.reserve(f"old{i}", "acme", ext, cost, now=NOW + i)
            at = NOW + i
            details = CallDetails(at, at + 90, "0899123456", "+33899123456", "France premium 0899", "premium", 90)
            await ledger.settle(f"old{i}", cost, details, now=NOW + i + 90)
    finally:
        await ledger.close()


class Site(threading.Thread):
    """`rating-engine web` in a thread of this process: uvicorn, the app, its own ledger connection."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.port = 0
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        import uvicorn

        from rating_engine.web.app import create_app

        ledger = make_ledger(self.url)
        await ledger.open()
        plan = next(iter(load_tariffs([OFFICE_FR]).plans.values()))
        app = create_app(ledger, "browser-secret" * 3, provider=ScriptedProvider("ok"), plans={plan.name: plan})
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        self.port = server.servers[0].sockets[0].getsockname()[1]
        self.ready.set()
        while not self.stop.is_set():
            await asyncio.sleep(0.05)
        server.should_exit = True
        await task
        await ledger.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, str]]:
    _need_a_browser()
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    asyncio.run(_seed(url))
    s = Site(url)
    s.start()
    assert s.ready.wait(20), "the page did not start"
    try:
        yield f"http://127.0.0.1:{s.port}", url
    finally:
        s.stop.set()
        s.join(20)


async def _call(url: str, step: str) -> None:
    """A call on the account, as the engine would do it in another process: reserve, then settle."""
    ledger = make_ledger(url)
    await ledger.open()
    try:
        if step == "reserve":
            assert (await ledger.reserve("live", "acme", "203", 2 * EUR, now=NOW + 500)).ok
        else:
            details = CallDetails(NOW + 500, NOW + 620, "+12125550100", "+12125550100", "USA and Canada", "fixed", 120)
            await ledger.settle("live", 1_500_000, details, now=NOW + 620)
    finally:
        await ledger.close()


def _on_the_side(url: str, step: str) -> None:
    """Run `_call` in a thread of its own (Playwright's sync API holds this thread's event loop)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_call(url, step))
        except BaseException as exc:
            failed.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(20)
    assert not failed, failed


def test_an_administrator_watches_the_balance_switches_to_french_and_downloads_the_activity(
    site: tuple[str, str], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, url = site
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(locale="en-GB", viewport={"width": 1100, "height": 800})
            page.goto(f"{base}/login")
            page.screenshot(path=str(ARTIFACTS / "login.png"))
            page.get_by_label("User name").fill("admin@acme")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{base}/accounts/acme/balance")
            assert page.inner_text("[data-field=balance]") == "€23.385"
            _on_the_side(url, "reserve")  # a call starts: the page follows without a reload
            expect(page.locator("[data-field=live_calls]")).to_have_text("1", timeout=10_000)
            assert page.inner_text("[data-field=reserved]") == "€2.00"
            page.screenshot(path=str(ARTIFACTS / "balance-live-call.png"), full_page=True)
            _on_the_side(url, "settle")
            expect(page.locator("[data-field=balance]")).to_have_text("€21.885", timeout=10_000)
            assert page.inner_text("[data-field=live_calls]") == "0"

            page.select_option("#language", "fr")
            page.get_by_role("button", name="Change").click()
            page.wait_for_load_state()
            assert page.inner_text("h1").startswith("Solde")
            assert page.inner_text("[data-field=balance]") == "21,885\u00a0€"
            page.screenshot(path=str(ARTIFACTS / "balance-fr.png"), full_page=True)

            page.get_by_role("link", name="Activité prépayée").click()
            page.get_by_label("Du").fill("20/11/2026")  # a day as French writes it
            page.get_by_label("Au").fill("30/11/2026")
            page.get_by_role("button", name="Afficher").click()
            page.wait_for_url("**/activity?ext=&since=20%2F11%2F2026*")
            bars = page.locator("svg.chart rect")
            expect(bars).to_have_count(3)  # 201 and 202 on the 24th, and the live call's 203
            assert "24 nov. · 201: 1,295\u00a0€" in bars.locator("title").all_text_contents()
            page.screenshot(path=str(ARTIFACTS / "activity-fr.png"), full_page=True)
            page.select_option("#ext", "201")
            page.get_by_role("button", name="Afficher").click()
            page.wait_for_url("**/activity?ext=201*")
            rows = page.locator("section:has(h2:text('Appels')) tbody tr")
            assert rows.count() == 2
            expect(bars).to_have_count(1)
            with page.expect_download() as download:
                page.get_by_role("link", name="Télécharger en CSV").click()
            saved = tmp_path / "activity.csv"
            download.value.save_as(saved)
            lines = saved.read_text().strip().splitlines()
            assert lines[0].startswith("ended,extension") and len(lines) == 3 and all(",201," in x for x in lines[1:])
            page.get_by_label("Du").fill("01/01/0001")  # a day, but before any call: the range is named
            page.get_by_role("button", name="Afficher").click()
            page.wait_for_url("**/activity?ext=201&since=01%2F01%2F0001*")
            expect(page.locator("#since-error")).to_have_text("Une date de 1900 à 9998.")
            assert page.get_by_label("Du").input_value() == "01/01/0001"
            page.screenshot(path=str(ARTIFACTS / "activity-date-range-fr.png"), full_page=True)

            page.get_by_role("link", name="Ajouter des fonds").click()
            page.get_by_label("25,00\u00a0€").check()
            page.get_by_role("button", name="Acheter").click()
            expect(page.locator(".outcome")).to_contain_text("Fait : les fonds ont été ajoutés.")
            page.screenshot(path=str(ARTIFACTS / "funds-fr.png"), full_page=True)
            page.get_by_role("link", name="Solde").click()
            expect(page.locator("[data-field=balance]")).to_have_text("46,885\u00a0€")

            page.get_by_role("link", name="Paramètres").click()
            page.get_by_label("recharger automatiquement").check()
            page.get_by_label("Seuil (EUR)").fill("-5")
            page.get_by_role("button", name="Enregistrer").click()
            expect(page.locator("#threshold-error")).to_be_visible()  # said beside the field, nothing saved
            page.get_by_label("Seuil (EUR)").fill("5")
            page.get_by_label("Montant du rechargement (EUR)").fill("20")
            page.get_by_role("button", name="Enregistrer").click()
            expect(page.locator(".outcome")).to_have_text("Enregistré.")
            expect(page.locator("table")).to_contain_text("web:admin@acme")
            page.screenshot(path=str(ARTIFACTS / "settings-fr.png"), full_page=True)

            page.get_by_role("link", name="Postes").click()
            page.fill("#ext-new", "204")
            page.fill("#name-new", "Accueil")
            page.fill("#daily_cap-new", "-2,5")  # not an amount: said beside the field
            page.locator("form:has(#ext-new) button").click()
            expect(page.locator("#daily_cap-new-error")).to_be_visible()
            page.fill("#daily_cap-new", "2,5")  # a French decimal comma
            page.locator("form:has(#ext-new) button").click()
            expect(page.locator(".outcome")).to_contain_text("Enregistré.")
            expect(page.locator("h2", has_text="Poste 204 — Accueil")).to_be_visible()
            expect(page.locator("#daily_cap-204")).to_have_value("2,50")
            page.screenshot(path=str(ARTIFACTS / "extensions-fr.png"), full_page=True)

            phone = browser.new_page(
                viewport={"width": 390, "height": 844}, locale="fr-FR", storage_state=page.context.storage_state()
            )
            phone.goto(f"{base}/accounts/acme/balance")
            phone.screenshot(path=str(ARTIFACTS / "balance-phone.png"), full_page=True)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, "nothing wider than a phone's screen"

            desk = browser.new_page(locale="en-GB", viewport={"width": 1100, "height": 800})
            desk.goto(f"{base}/login")
            desk.get_by_label("User name").fill("operator")
            desk.get_by_label("Password").fill(PASSWORD)
            desk.get_by_role("button", name="Log in").click()
            desk.wait_for_url(f"{base}/accounts")
            desk.screenshot(path=str(ARTIFACTS / "accounts.png"), full_page=True)
            desk.get_by_role("link", name="acme").click()
            desk.get_by_role("link", name="Operator").click()
            desk.get_by_label("Amount (EUR)").fill("100")
            desk.get_by_label("Bank transfer reference").fill("VIR-2026-12-02")
            desk.get_by_role("button", name="Add funds").click()
            expect(desk.locator(".outcome")).to_have_text("The funds were added.")
            desk.screenshot(path=str(ARTIFACTS / "operator.png"), full_page=True)
            desk.get_by_role("link", name="Balance").click()
            expect(desk.locator("[data-field=balance]")).to_have_text("€146.885")
        finally:
            browser.close()
