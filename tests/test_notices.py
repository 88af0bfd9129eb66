"""Notices by email, received by a real SMTP server on 127.0.0.1 (aiosmtpd): each sent once, to the
account's administrators, in each one's language; a mail server that is down delays them only."""

from __future__ import annotations

import email
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from email import policy
from email.message import EmailMessage as Message

import pytest
from aiosmtpd.controller import Controller

from rating_engine.accounts import Accounts
from rating_engine.ledger import Card, Ledger, OnLow, make_ledger
from rating_engine.ledger import programs as P
from rating_engine.notices import Notifier, SmtpSettings
from rating_engine.payments import TopupRunner
from rating_engine.rating.catalog import load_tariffs
from rating_engine.users import Users

from .conftest import OFFICE_FR
from .helpers import EUR
from .payment_doubles import ScriptedProvider

PLAN = next(iter(load_tariffs([OFFICE_FR]).plans.values()))
NOW = 1_795_535_109


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.mails.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content, policy=policy.default)))  # type: ignore[attr-defined]
        return "250 OK"


@dataclass
class World:
    ledger: Ledger
    inbox: Inbox
    notifier: Notifier
    clock: list[float]

    def subjects(self) -> list[tuple[str, str]]:
        return [(to[0], str(m["Subject"])) for to, m in self.inbox.mails]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    inbox = Inbox()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    ledger = make_ledger("sqlite:///")
    await ledger.open()
    accounts, users = Accounts(ledger), Users(ledger)
    settings = Accounts.new_settings(PLAN, threshold=5 * EUR, on_low=OnLow.TOPUP, topup_amount=20 * EUR)
    await accounts.create("acme", settings)
    await accounts.top_up("acme", 6 * EUR, "opening", source="test")
    await users.add("marie", "correct horse battery", "acme", "fr", email="marie@acme.example")
    await users.add("john", "correct horse battery", "acme", "en", email="john@acme.example")
    await users.add("nomail", "correct horse battery", "acme")
    await accounts.create("globex", Accounts.new_settings(PLAN))
    await users.add("g", "correct horse battery", "globex", email="g@globex.example")
    clock = [time.time() + 3600]  # notices are due when written: by the ledger's clock or the tests' NOW
    notifier = Notifier(
        ledger, SmtpSettings("127.0.0.1", port, tls="none", sender="billing@pbx.example"), lambda: clock[0]
    )
    yield World(ledger, inbox, notifier, clock)
    await ledger.close()
    smtp.stop()


async def _call(ledger: Ledger, call_id: str, cost: int, runner: TopupRunner | None = None) -> None:
    assert (await ledger.reserve(call_id, "acme", "201", cost, now=NOW)).ok
    done = await ledger.settle(call_id, cost, now=NOW + 60)
    if done.topup is not None and runner is not None:
        await runner.pay(done.topup)


async def test_a_low_balance_is_told_once_per_crossing_to_each_administrator_in_their_language(world: World) -> None:
    await _call(world.ledger, "c1", 500_000)  # 6.00 → 5.50: above the threshold
    await _call(world.ledger, "c2", 1_000_000)  # → 4.50: crossed
    await _call(world.ledger, "c3", 100_000)  # still below: not again
    assert await world.notifier.run_once() == 1
    assert sorted(world.subjects()) == [
        ("john@acme.example", "Your prepaid balance is below its threshold"),
        ("marie@acme.example", "Votre solde prépayé est passé sous son seuil"),
    ]
    french = next(m for to, m in world.inbox.mails if to == ["marie@acme.example"])
    assert "4,40\u00a0€" in french.get_content() and "5,00\u00a0€" in french.get_content()
    assert french["Content-Language"] == "fr" and french["From"] == "billing@pbx.example"
    assert await world.notifier.run_once() == 0 and len(world.inbox.mails) == 2  # never twice
    assert [e.action for e in await world.ledger.audit("acme")].count("balance below the threshold") == 1
    await world.ledger.topup("acme", 10 * EUR, "wire")  # back above, then below again: a new crossing
    await _call(world.ledger, "c4", 10 * EUR)
    assert await world.notifier.run_once() == 1 and len(world.inbox.mails) == 4


async def test_automatic_top_ups_done_failed_and_paused_are_told(world: World) -> None:
    runner = TopupRunner(world.ledger, ScriptedProvider("ok", default="fail"), retry_delays=())
    s = (await world.ledger.account("acme")).settings
    await world.ledger.update_settings("acme", replace(s, block_on_topup_failure=False))
    await _call(world.ledger, "c1", 2 * EUR, runner)  # 4.00: topped up to 25.00
    await world.notifier.run_once()
    assert ("john@acme.example", "Automatic top-up done") in world.subjects()
    assert ("marie@acme.example", "Rechargement automatique effectué") in world.subjects()
    world.inbox.mails.clear()
    for day in range(3):  # a declining card, one attempt a day for three days
        cost = 21 * EUR if day == 0 else 10_000
        assert (await world.ledger.reserve(f"d{day}", "acme", "201", cost, now=NOW + day * 86_400)).ok
        done = await world.ledger.settle(f"d{day}", cost, now=NOW + day * 86_400 + 60)
        if done.topup is not None:
            await runner.pay(done.topup)
        await world.notifier.run_once()
    english = [s for to, s in world.subjects() if to == "john@acme.example"]
    assert english.count("Automatic top-up failed") == 3 and english.count("Automatic top-up paused") == 1
    assert "marie@acme.example" in {to for to, _ in world.subjects()} and not any(
        "globex" in to for to, _ in world.subjects()
    )


async def test_a_payment_waiting_on_the_customer_and_an_expiring_card_are_told(world: World) -> None:
    await world.ledger.request_topup("acme", 50 * EUR, "web:acme:k", "web")
    await world.ledger.set_topup_action("web:acme:k", "https://checkout.stripe.com/c/pay/cs_1")
    await world.ledger.set_customer("acme", "stripe", "cus_1", now=NOW)
    card = Card("acme", "stripe", "cus_1", "pm_1", "visa", "4242", 11, 2026)  # NOW is 2026-11-24
    await world.ledger.once_per_event("evt_1", "setup_intent.succeeded", P.save_card, card, NOW, "stripe")
    await world.notifier.run_once()
    await world.notifier.run_once()  # the next day's check finds it again: told once
    mails = {s: m for to, m in world.inbox.mails if to == ["john@acme.example"] for s in [str(m["Subject"])]}
    assert "https://checkout.stripe.com/c/pay/cs_1" in mails["A payment needs your confirmation"].get_content()
    assert "visa •••• 4242" in mails["Your card on file expires soon"].get_content()
    assert len(world.inbox.mails) == 4  # two notices, two administrators with an address
    audit = [e.action for e in await world.ledger.audit("acme")]
    assert audit.count("payment awaits the customer") == 1 and audit.count("card expiring") == 1


async def test_a_mail_server_that_is_down_delays_the_mail_and_nothing_else(world: World) -> None:
    up = world.notifier.smtp
    world.notifier.smtp = replace(up, port=1)  # nothing listens there
    await _call(world.ledger, "c1", 2 * EUR)  # the call is settled whatever the mail server does
    assert (await world.ledger.account("acme")).balance == 4 * EUR
    assert await world.notifier.run_once() == 0 and world.notifier.failures == 1
    world.notifier.smtp = up
    assert await world.notifier.run_once() == 0, "asked again after a delay, not at once"
    world.clock[0] += 61
    assert await world.notifier.run_once() == 1 and len(world.inbox.mails) == 2
    assert await world.notifier.run_once() == 0 and len(world.inbox.mails) == 2
