"""The account use cases the CLI, the demo and the page share: each rule once, nothing half-written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from rating_engine.accounts import AccountError, Accounts
from rating_engine.contract import DestinationClass
from rating_engine.ledger import OnLow, make_ledger
from rating_engine.rating.catalog import load_tariffs

from .conftest import OFFICE_FR
from .helpers import EUR

PLAN = next(iter(load_tariffs([OFFICE_FR]).plans.values()))


@pytest.fixture
async def accounts() -> AsyncIterator[Accounts]:
    ledger = make_ledger("sqlite:///")
    await ledger.open()
    try:
        yield Accounts(ledger)
    finally:
        await ledger.close()


async def test_an_account_is_created_on_its_plan_in_the_plans_currency(accounts: Accounts) -> None:
    acc = await accounts.create("acme", Accounts.new_settings(PLAN, threshold=2 * EUR))
    assert (acc.settings.plan, acc.settings.currency, acc.settings.threshold) == ("office-fr", "EUR", 2 * EUR)
    with pytest.raises(AccountError, match="plan, threshold_x"):
        Accounts.new_settings(PLAN, plan="other", threshold_x=1)


def test_a_new_account_takes_its_plan_s_time_zone_unless_given_one() -> None:
    from rating_engine.rating.plan import load_plan

    from .conftest import ROOT

    bands = load_plan(ROOT / "tariffs" / "office-fr-bands.toml")
    assert Accounts.new_settings(bands).timezone == "Europe/Paris"  # its time bands are read there
    assert Accounts.new_settings(bands, timezone="America/Martinique").timezone == "America/Martinique"
    assert Accounts.new_settings(PLAN).timezone == "UTC"  # a plan without a zone


async def test_a_change_keeps_what_it_does_not_name_and_says_what_changed(accounts: Accounts) -> None:
    await accounts.create("acme", Accounts.new_settings(PLAN, threshold=2 * EUR, max_calls=4))
    changed = await accounts.change("acme", {"on_low": OnLow.TOPUP, "topup_amount": 20 * EUR}, actor="admin")
    assert [name for name, _ in changed] == ["on_low", "topup_amount"]
    s = (await accounts.overview("acme")).account.settings
    assert (s.threshold, s.max_calls, s.on_low, s.topup_amount) == (2 * EUR, 4, OnLow.TOPUP, 20 * EUR)
    assert await accounts.change("acme", {"max_calls": 4}, actor="admin") == []  # nothing to change
    [entry, *_] = await accounts.audit("acme")
    assert entry.actor == "admin"


async def test_a_bad_change_writes_nothing(accounts: Accounts) -> None:
    await accounts.create("acme", Accounts.new_settings(PLAN))
    before = (await accounts.overview("acme")).account.settings
    for bad in ({"threshold": -1}, {"max_calls": 0}, {"timezone": "Mars/Olympus"}, {"currency": "USD"}):
        with pytest.raises(AccountError):
            await accounts.change("acme", bad, actor="admin")
    usd = replace(PLAN, currency="USD")
    with pytest.raises(AccountError, match="currency USD is not the account's"):
        await accounts.change("acme", {}, actor="admin", plan=usd)
    assert (await accounts.overview("acme")).account.settings == before


async def test_a_top_up_is_positive_has_a_reference_and_credits_once(accounts: Accounts) -> None:
    await accounts.create("acme", Accounts.new_settings(PLAN))
    for amount, reference in ((0, None), (-EUR, None), (EUR, ""), (EUR, "  ")):
        with pytest.raises(AccountError):
            await accounts.top_up("acme", amount, reference, source="admin")
    first = await accounts.top_up("acme", 5 * EUR, "wire-1", source="admin")
    again = await accounts.top_up("acme", 5 * EUR, "wire-1", source="admin")
    assert first.created and not again.created and again.account.balance == 5 * EUR
    fresh = await accounts.top_up("acme", EUR, source="admin")
    assert fresh.topup.reference.startswith("admin:") and fresh.account.balance == 6 * EUR


async def test_an_extension_changes_field_by_field(accounts: Accounts) -> None:
    await accounts.create("acme", Accounts.new_settings(PLAN))
    _, e = await accounts.change_extension("acme", "201", {"daily_cap": 3 * EUR})
    assert (e.settings.chargeable, e.settings.daily_cap, e.settings.classes) == (True, 3 * EUR, None)
    _, e = await accounts.change_extension("acme", "201", {"classes": frozenset({DestinationClass.PREMIUM})})
    assert (e.settings.daily_cap, e.settings.classes) == (3 * EUR, frozenset({DestinationClass.PREMIUM}))
    for bad in ({"daily_cap": -1}, {"colour": "red"}, {"classes": frozenset({"satellite"})}):
        with pytest.raises(AccountError):
            await accounts.change_extension("acme", "201", bad)
    [ext] = (await accounts.overview("acme")).extensions
    assert (ext.settings.daily_cap, ext.settings.classes) == (3 * EUR, frozenset({DestinationClass.PREMIUM}))
