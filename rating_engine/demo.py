"""`make demo`: the engine on the embedded defaults against the Asterisk simulator.

A SQLite ledger in a fresh directory, the sample tariffs, an account with a small balance
shared by five extensions (one barred from chargeable calls, one limited to national and
premium numbers), and a realistic mix of calls placed at once over real sockets — included,
premium, international, emergency, refused by an extension rule, busy — with enough
concurrent chargeable calls to run the shared money out mid-call. Time runs fast.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn

from .accounts import Accounts
from .asterisk.simulator import AsteriskSimulator, Scenario
from .clock import Clock
from .config import AgiSection, AmiSection, Config, EngineSection, LedgerSection, MetricsSection, TariffsSection
from .contract import DestinationClass
from .engine import Call
from .ledger import Ledger, extension_totals, make_ledger
from .money import format_amount, parse_amount
from .rating.catalog import TariffStore
from .service import Service
from .users import Users
from .web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = {"201": "Alice", "202": "Bob", "203": "Carol", "204": "Dave", "205": "Eve"}
CALLS: list[tuple[float, Scenario]] = [
    (0, Scenario("06 12 34 56 78", "201", talk=150)),  # included: French mobile
    (2, Scenario("+49 30 1234567", "202", talk=90)),  # included: German fixed line
    (4, Scenario("0899 12 34 56", "203", talk=95)),  # premium rate
    (6, Scenario("+1 212 555 0100", "201", talk=200)),  # international, 30/6 billing
    (8, Scenario("+44 7911 123456", "205", talk=60)),  # refused: Eve has no mobile-abroad calls
    (10, Scenario("+212 612 345678", "204", talk=60)),  # refused: Dave has no chargeable calls
    (12, Scenario("112", "204", talk=40)),  # emergency: always, free, even for Dave
    (14, Scenario("0892 68 01 23", "202", outcome="busy")),  # busy: nothing charged
    (20, Scenario("+212 612 345678", "201", talk=400)),  # three long chargeable calls at once …
    (21, Scenario("+86 138 0013 8000", "202", talk=400)),  # … run the shared balance out mid-call
    (22, Scenario("0899 12 34 56", "203", talk=400)),
    (70, Scenario("+44 20 7946 0000", "205", talk=60)),  # included: UK fixed line
]


def _show(t0: float, clock: Clock, currency: str) -> Any:
    def observe(what: str, f: dict[str, Any]) -> None:
        maybe: Call | None = f.get("call")
        t = f"[{clock.now() - t0:6.1f}s]"
        if maybe is None:
            if what == "authorized":
                print(f"{t} {f['e164'] or '?':>15}  {f['status']} {f['reason']}")
            return
        call = maybe
        who = f"{call.ext} {PEOPLE.get(call.ext, '')}"
        if what == "authorized":
            print(
                f"{t} {call.e164:>15}  ALLOW charged from {who}: {call.destination}, "
                f"{call.granted} s reserved ({format_amount(call.reserved, currency)} {currency})"
            )
        elif what == "answered":
            print(f"{t} {call.e164:>15}  answered; deadline set in Asterisk in {call.granted} s")
        elif what == "renewed":
            print(f"{t} {call.e164:>15}  quota renewed: +{f['more']} s, deadline moved to {call.granted} s")
        elif what == "settled":
            cut = "  (cut at its paid deadline)" if f["cut"] else ""
            print(
                f"{t} {call.e164:>15}  ended after {f['billable']} s: {format_amount(f['cost'], currency)} "
                f"{currency} debited from {who}; balance {format_amount(f['balance'], currency)}{cut}"
            )
        elif what == "warned":
            print(f"{t} {call.e164:>15}  no money for more: {who} hears the warning, {f['seconds_left']} s left")
        elif what == "released":
            print(f"{t} {call.e164:>15}  not answered: reservation released, nothing charged")

    return observe


async def run_demo(speed: float = 15.0, balance: str = "4.00", directory: str | None = None, web: bool = False) -> int:
    work = Path(directory or tempfile.mkdtemp(prefix="rating-engine-demo-"))
    clock = Clock(speed=speed)
    sim = AsteriskSimulator(clock, agi_port=0)
    ami_port = await sim.start()
    config = Config(
        engine=EngineSection(quota_seconds=60, renew_margin=10, ring_timeout=30),
        agi=AgiSection(bind="127.0.0.1:0", account="fixed:acme-office"),  # a free port, whatever runs here
        ami=AmiSection(port=ami_port, username="rating"),
        ledger=LedgerSection(url=f"sqlite:///{work / 'ledger.sqlite3'}"),
        tariffs=TariffsSection(plans=(str(ROOT / "tariffs" / "office-fr.toml"),)),
        metrics=MetricsSection(bind=""),
    )
    ledger = make_ledger(config.ledger.url)
    await ledger.open()
    accounts = Accounts(ledger)
    plan = TariffStore(config.plan_paths()).current.plan("office-fr")
    await accounts.create("acme-office", Accounts.new_settings(plan))
    await accounts.top_up("acme-office", parse_amount(balance), "demo-opening", source="demo")
    await accounts.change_extension("acme-office", "204", {"chargeable": False})
    await accounts.change_extension(
        "acme-office", "205", {"classes": frozenset({DestinationClass.NATIONAL, DestinationClass.PREMIUM})}
    )
    service = Service(config, clock=clock, ledger=ledger, ami_secret="simulator")  # the demo keeps its ledger
    await service.start()
    sim.agi_port = service.agi_port
    assert service.ami is not None
    await service.ami.wait_logged_in(5)
    print(
        f"rating-engine demo: ledger {work / 'ledger.sqlite3'}, plan office-fr, account acme-office "
        f"with {balance} EUR shared by {len(PEOPLE)} extensions; time runs {speed:g}x\n"
    )
    page = await _serve_page(ledger) if web else None
    t0 = clock.now()
    service.engine.observer = _show(t0, clock, "EUR")

    async def place(at: float, s: Scenario) -> None:
        await clock.sleep_until(t0 + at)
        await sim.place_call(replace(s, name=PEOPLE.get(s.ext, s.ext)))

    await asyncio.gather(*(place(at, s) for at, s in CALLS))
    await asyncio.sleep(0.2)
    await service.stop(grace=0)
    if page is not None:
        page.should_exit = True
        await asyncio.sleep(0.2)
    await _summary(ledger)
    problems = await ledger.check()
    print("\nledger check:", problems if problems else "ok, every balance equals its journal")
    await ledger.close()
    await sim.close()
    return 0 if not problems else 1


async def _summary(ledger: Any) -> None:
    acc = await ledger.account("acme-office")
    rows = await ledger.activity("acme-office")
    print(
        f"\naccount acme-office: balance {format_amount(acc.balance, 'EUR')} EUR, "
        f"reserved {format_amount(acc.reserved, 'EUR')} EUR, available {format_amount(acc.available, 'EUR')} EUR"
    )
    print("\nactivity (chargeable calls)")
    for r in rows:
        print(
            f"  {r.ext} {PEOPLE.get(r.ext, ''):6} {r.e164:>15}  {r.destination:28} {r.billable_seconds:4d} s  "
            f"{format_amount(r.cost, 'EUR'):>9} EUR  balance after {format_amount(r.balance_after, 'EUR')}"
        )
    print("\ntotals per extension")
    for t in extension_totals(rows):
        print(
            f"  {t.ext} {PEOPLE.get(t.ext, ''):6} {t.calls} call(s)  {t.seconds:5d} s  "
            f"{format_amount(t.cost, 'EUR'):>9} EUR"
        )


async def _serve_page(ledger: Ledger) -> uvicorn.Server:
    """The Prepaid Account page on the demo's ledger while the calls run, with a fresh login."""
    password = secrets.token_urlsafe(9)
    await Users(ledger).add("admin@acme-office", password, "acme-office")
    app = create_app(ledger, secrets.token_urlsafe(32))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False))
    asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(f"the Prepaid Account page: http://127.0.0.1:{port}/  (user admin@acme-office, password {password})")
    return server
