"""The card on file through Stripe's SDK, against a local server that speaks Stripe's API: the card
saved on the hosted page and reported by webhook, top-ups charged once per key whatever happens
(declines, 3-D Secure, timeouts, a crash between charge and credit), and webhooks that are signed,
fresh and applied once."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import stripe

from rating_engine.accounts import Accounts
from rating_engine.ledger import Ledger, OnLow, TopupRequest, TopupStatus, make_ledger
from rating_engine.payments import TopupRunner
from rating_engine.payments.stripe_provider import StripeKeys, StripeProvider
from rating_engine.rating.catalog import load_tariffs
from rating_engine.users import Users
from rating_engine.web.app import create_app

from .conftest import OFFICE_FR
from .fake_stripe import SECRET_KEY, WEBHOOK_SECRET, FakeStripe, signed
from .helpers import EUR, csrf_token

PLAN = next(iter(load_tariffs([OFFICE_FR]).plans.values()))
PASSWORD = "correct horse battery"


@dataclass
class World:
    fake: FakeStripe
    ledger: Ledger
    provider: StripeProvider
    client: httpx.AsyncClient

    async def token(self, path: str = "/login") -> str:
        return csrf_token((await self.client.get(path)).text)

    async def post(self, path: str, **form: str) -> httpx.Response:
        return await self.client.post(path, data={**form, "csrftoken": await self.token("/accounts/acme/balance")})

    async def webhook(self, event: dict[str, Any], **how: Any) -> httpx.Response:
        body, signature = signed(event, **how)
        return await self.client.post("/webhooks/stripe", content=body, headers={"stripe-signature": signature})

    async def save_card(self, pm: str) -> None:
        r = await self.post("/accounts/acme/card")
        assert r.status_code == 303 and r.headers["location"].startswith("https://checkout.stripe.com/c/pay/cs_")
        card = await self.ledger.card("acme")
        assert card is not None and card.customer.startswith("cus_")
        assert (await self.webhook(self.fake.setup_succeeded(card.customer, pm))).json()["done"] == "card saved"

    async def buy(self, amount: int, key: str) -> str:
        r = await self.post("/accounts/acme/funds", amount=str(amount), purchase=key)
        return (await self.client.get(r.headers["location"])).text


@pytest.fixture
async def world() -> AsyncIterator[World]:
    fake = FakeStripe()
    await fake.start()
    ledger = make_ledger("sqlite:///")
    await ledger.open()
    await Accounts(ledger).create("acme", Accounts.new_settings(PLAN, threshold=EUR))
    await Accounts(ledger).create("globex", Accounts.new_settings(PLAN))
    await Accounts(ledger).top_up("acme", 10 * EUR, "opening", source="test")
    await Users(ledger).add("admin@acme", PASSWORD, "acme")
    provider = StripeProvider(
        ledger, StripeKeys(SECRET_KEY, WEBHOOK_SECRET, fake.url), public_url="http://testserver", timeout=0.5
    )
    app = create_app(ledger, "stripe-test-secret" * 2, provider=provider)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        w = World(fake, ledger, provider, client)
        r = await client.post(
            "/login", data={"username": "admin@acme", "password": PASSWORD, "csrftoken": await w.token()}
        )
        assert r.status_code == 303
        yield w
    await ledger.close()
    await fake.close()


async def test_the_card_is_saved_on_stripes_page_and_shown_as_stripe_reports_it(world: World) -> None:
    body = (await world.client.get("/accounts/acme/card")).text
    assert "No card on file." in body
    await world.save_card("pm_card_visa")
    body = (await world.client.get("/accounts/acme/card")).text
    assert "Visa" in body and "•••• 4242" in body and "12/2030" in body
    card = await world.ledger.card("acme")
    assert card is not None and (card.payment_method, card.brand, card.last4) == ("pm_card_visa", "visa", "4242")
    await world.post("/accounts/acme/card")  # "Edit" again: the same customer, a new page
    assert len(world.fake.customers) == 1
    csp = (await world.client.get("/accounts/acme/card")).headers["content-security-policy"]
    assert "form-action 'self' https://checkout.stripe.com" in csp


async def test_add_funds_charges_the_card_once_and_credits_once(world: World) -> None:
    await world.save_card("pm_card_visa")
    assert "Done" in await world.buy(25 * EUR, "k1")
    assert "Done" in await world.buy(25 * EUR, "k1")  # pressed twice
    assert len(world.fake.charges) == 1 and world.fake.charges[0]["amount"] == 2500
    assert world.fake.charges[0]["metadata"] == {"account": "acme", "reference": "web:acme:k1"}
    assert (await world.ledger.account("acme")).balance == 35 * EUR
    event = world.fake.event("payment_intent.succeeded", world.fake.charges[0])
    assert (await world.webhook(event)).json()["done"] == "credited"  # Stripe's own word, after ours: once
    assert (await world.ledger.account("acme")).balance == 35 * EUR
    assert await world.ledger.check() == []


@pytest.mark.parametrize(
    ("pm", "reason"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
    ],
)
async def test_a_decline_is_failed_with_its_reason_and_credits_nothing(world: World, pm: str, reason: str) -> None:
    await world.save_card(pm)
    shown = await world.buy(10 * EUR, "k2")
    assert f"Declined: {reason}" in shown
    t = await world.ledger.find_topup("web:acme:k2")
    assert t is not None and (t.status, t.detail) == (TopupStatus.FAILED, reason)
    assert (await world.ledger.account("acme")).balance == 10 * EUR and world.fake.charges == []


async def test_no_card_on_file_is_said_and_nothing_is_charged(world: World) -> None:
    assert "Declined: no card on file" in await world.buy(10 * EUR, "k3")
    assert world.fake.attempts == 0


async def test_3d_secure_waits_on_the_customer_then_the_webhook_credits_once(world: World) -> None:
    await world.save_card("pm_card_authenticationRequired")
    shown = await world.buy(50 * EUR, "k4")
    assert "Your bank asks you to confirm this payment" in shown
    link = re.search(
        r'<a href="(https://checkout\.stripe\.com/c/pay/cs_[^"]+)" rel="noreferrer">Confirm the payment', shown
    )
    assert link, shown
    t = await world.ledger.find_topup("web:acme:k4")
    assert t is not None and t.status is TopupStatus.PENDING and t.action_url == link.group(1)
    failed = world.fake.event("payment_intent.payment_failed", next(iter(world.fake.intents.values())))
    assert (await world.webhook(failed)).json()["done"] == "ignored: awaiting the customer's confirmation"
    confirmed = world.fake.customer_confirms("web:acme:k4", "acme", 5000)
    assert (await world.webhook(confirmed)).json()["done"] == "credited"
    assert (await world.webhook(confirmed)).json()["done"] == "replayed: nothing changed"  # Stripe sends again
    assert (await world.ledger.account("acme")).balance == 60 * EUR
    again = world.fake.event("payment_intent.succeeded", confirmed["data"]["object"])  # a duplicate, new id
    await world.webhook(again)
    assert (await world.ledger.account("acme")).balance == 60 * EUR


async def test_a_timeout_is_asked_again_with_the_same_key_and_charges_once(world: World) -> None:
    await world.save_card("pm_card_visa")
    await world.ledger.request_topup("acme", 20 * EUR, "auto:acme:slow", "auto")
    world.fake.delay_payment_intents = [2.0]  # Stripe charged, but the answer comes after our timeout
    runner = TopupRunner(world.ledger, world.provider, timeout=0.3, retry_delays=(0.05, 0.05))
    outcome = await runner.pay(TopupRequest("auto:acme:slow", "acme", 20 * EUR), retries=True)
    assert outcome.ok and runner.attempts == 2 and runner.outcomes == {"succeeded": 1}  # the metrics' counts
    assert len(world.fake.charges) == 1 and world.fake.requests.count("/v1/payment_intents") == 2
    assert (await world.ledger.account("acme")).balance == 30 * EUR


async def test_a_crash_between_charge_and_credit_credits_once_after_restart(world: World) -> None:
    await world.save_card("pm_card_visa")
    await world.ledger.request_topup("acme", 20 * EUR, "web:acme:crash", "web")
    assert (await world.provider.charge("acme", 20 * EUR, "web:acme:crash")).ok  # then the engine died
    assert (await world.ledger.account("acme")).balance == 10 * EUR
    runner = TopupRunner(world.ledger, world.provider, retry_delays=())
    assert await runner.resume() == 1  # the restarted engine asks again under the same key
    await runner.close()
    assert len(world.fake.charges) == 1 and world.fake.attempts == 1
    assert (await world.ledger.account("acme")).balance == 30 * EUR


async def test_stripe_refuses_a_key_reused_with_other_parameters(world: World) -> None:
    client = world.provider.client
    params: Any = {"amount": 100, "currency": "eur", "payment_method": "pm_card_visa", "confirm": True}
    first = await client.v1.payment_intents.create_async(params, {"idempotency_key": "same"})
    assert (await client.v1.payment_intents.create_async(params, {"idempotency_key": "same"})).id == first.id
    other: Any = {**params, "amount": 200}
    with pytest.raises(stripe.IdempotencyError, match="same parameters"):
        await client.v1.payment_intents.create_async(other, {"idempotency_key": "same"})
    assert len(world.fake.charges) == 1


@pytest.mark.parametrize(
    "how",
    [
        {"secret": "whsec_someone_else"},  # a bad signature
        {"at": int(time.time()) - 3600},  # replayed an hour later: outside the tolerance
    ],
)
async def test_a_webhook_not_signed_by_stripe_now_gets_400_and_writes_nothing(
    world: World, how: dict[str, Any]
) -> None:
    await world.ledger.request_topup("acme", 20 * EUR, "web:acme:forged", "web")
    event = world.fake.customer_confirms("web:acme:forged", "acme", 2000)
    r = await world.webhook(event, **how)
    assert r.status_code == 400
    assert (await world.ledger.account("acme")).balance == 10 * EUR
    assert (await world.ledger.find_topup("web:acme:forged")).status is TopupStatus.PENDING  # type: ignore[union-attr]


async def test_a_body_that_is_not_an_event_gets_400(world: World) -> None:
    r = await world.client.post("/webhooks/stripe", content=b"{not json", headers={"stripe-signature": "t=1,v1=00"})
    assert r.status_code == 400
    r = await world.client.post("/webhooks/stripe", content=b"{}")
    assert r.status_code == 400


async def test_events_for_unknown_accounts_or_objects_are_acknowledged_and_ignored(world: World) -> None:
    unknown = world.fake.customer_confirms("web:nobody:k", "nobody", 2000)
    assert (await world.webhook(unknown)).json() == {"received": True, "done": "ignored: unknown top-up"}
    await world.ledger.request_topup("globex", 20 * EUR, "web:globex:k", "web")
    wrong = world.fake.customer_confirms("web:globex:k", "acme", 2000)  # another account's top-up
    assert (await world.webhook(wrong)).json()["done"] == "ignored: unknown top-up"
    stranger = world.fake.setup_succeeded("cus_someone_else", "pm_card_visa")
    assert (await world.webhook(stranger)).json()["done"] == "ignored: unknown customer"
    other = world.fake.event("customer.created", {"id": "cus_x", "object": "customer"})
    assert (await world.webhook(other)).status_code == 200
    assert (await world.ledger.find_topup("web:globex:k")).status is TopupStatus.PENDING  # type: ignore[union-attr]


async def test_the_card_updated_by_the_bank_or_removed_follows_stripe(world: World) -> None:
    await world.save_card("pm_card_visa")
    card = await world.ledger.card("acme")
    assert card is not None
    method = world.fake.attach(card.customer, "pm_card_visa", exp=(3, 2031))
    await world.webhook(world.fake.event("payment_method.automatically_updated", method))
    assert "03/2031" in (await world.client.get("/accounts/acme/card")).text
    detached = {**method, "customer": None}
    r = await world.webhook(
        world.fake.event("payment_method.detached", detached, previous_attributes={"customer": card.customer})
    )
    assert r.json()["done"] == "card removed"
    assert "No card on file." in (await world.client.get("/accounts/acme/card")).text
    audit = [e.action for e in await world.ledger.audit("acme")]
    assert audit.count("card saved") == 2 and "card removed" in audit


async def test_a_declining_card_is_tried_twice_a_day_not_at_every_call(world: World) -> None:
    await world.save_card("pm_card_chargeDeclinedInsufficientFunds")
    s = (await world.ledger.account("acme")).settings
    from dataclasses import replace

    await world.ledger.update_settings(
        "acme", replace(s, on_low=OnLow.TOPUP, threshold=15 * EUR, topup_amount=20 * EUR, block_on_topup_failure=False)
    )
    runner = TopupRunner(world.ledger, world.provider, retry_delays=())
    for i in range(20):  # every settle lands below the threshold
        assert (await world.ledger.reserve(f"c{i}", "acme", "201", 10_000)).ok
        done = await world.ledger.settle(f"c{i}", 10_000)
        if done.topup is not None:
            runner.start(done.topup)
        await runner.drain()
    assert world.fake.attempts == 2 and runner.attempts == 2 and runner.outcomes["failed"] == 2
    failed = [t for t in await world.ledger.topups("acme") if t.source == "auto"]
    assert [t.detail for t in failed] == ["insufficient_funds"] * 2


async def test_stripe_is_chosen_in_the_config_with_its_keys_from_the_environment_or_a_file(
    world: World, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rating_engine.config import PaymentsSection
    from rating_engine.errors import ConfigError
    from rating_engine.payments import make_provider

    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"\$STRIPE_SECRET_KEY"):
        make_provider(PaymentsSection(provider="stripe"), world.ledger)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_from_env")
    from_env = make_provider(PaymentsSection(provider="stripe"), world.ledger)
    assert isinstance(from_env, StripeProvider) and from_env.keys.secret_key == "sk_test_from_env"
    (tmp_path / "key").write_text("sk_test_from_file\n")
    (tmp_path / "hook").write_text("whsec_from_file\n")
    section = PaymentsSection(
        provider="stripe", stripe_key_file=str(tmp_path / "key"), stripe_webhook_secret_file=str(tmp_path / "hook")
    )
    from_file = make_provider(section, world.ledger)
    assert isinstance(from_file, StripeProvider)
    assert (from_file.keys.secret_key, from_file.keys.webhook_secret) == ("sk_test_from_file", "whsec_from_file")
    assert "sk_test" not in repr(from_file) and "sk_test" not in repr(from_file.keys)
    assert "whsec" not in repr(from_file.keys)
    with pytest.raises(ConfigError, match=r"cannot read payments\.stripe_key_file"):
        make_provider(PaymentsSection(provider="stripe", stripe_key_file=str(tmp_path / "missing")), world.ledger)


async def test_many_calls_ending_together_make_one_payment_intent(world: World) -> None:
    import asyncio
    from dataclasses import replace

    await world.save_card("pm_card_visa")
    s = (await world.ledger.account("acme")).settings
    await world.ledger.update_settings("acme", replace(s, on_low=OnLow.TOPUP, threshold=9 * EUR, topup_amount=20 * EUR))
    runner = TopupRunner(world.ledger, world.provider, retry_delays=())
    for i in range(20):
        assert (await world.ledger.reserve(f"c{i}", "acme", f"2{i:02d}", 100_000)).ok

    async def settle(i: int) -> None:
        done = await world.ledger.settle(f"c{i}", 100_000)
        if done.topup is not None:
            runner.start(done.topup)

    await asyncio.gather(*(settle(i) for i in range(20)))
    await runner.drain()
    assert world.fake.attempts == 1 and len(world.fake.charges) == 1  # never two in flight for one account
    acc = await world.ledger.account("acme")
    assert acc.balance == 10 * EUR - 20 * 100_000 + world.fake.charges[0]["amount"] * 10_000
    assert await world.ledger.check() == []
