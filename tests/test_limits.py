"""Fraud limits: concurrent calls, attempts per minute, velocity, the account's time zone, office
hours and block lists; enforced in the ledger on both backends like the balance, and by the engine."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from rating_engine.calls import AuthorizeRequest
from rating_engine.clock import Clock
from rating_engine.config import EngineSection
from rating_engine.contract import Reason
from rating_engine.engine import Engine
from rating_engine.hours import OfficeHours
from rating_engine.ledger import AccountSettings, CallDetails, ExtensionSettings, Ledger, LedgerError, Refusal
from rating_engine.ledger.models import zone
from rating_engine.ledger.schema import migrations, statements
from rating_engine.rating.catalog import TariffStore

from .conftest import OFFICE_FR
from .helpers import EUR
from .ledgers import opened, raw_sql

NOW = 1_795_535_109  # Tuesday 2026-11-24 09:45 UTC
HOUR = 3600


async def account(ledger: Ledger, balance: int = 100 * EUR, **limits: object) -> None:
    await ledger.create_account("acme", AccountSettings("office-fr", "EUR", **limits), now=NOW)  # type: ignore[arg-type]
    await ledger.topup("acme", balance, "opening", now=NOW)


# ---------------------------------------------------------------- concurrent calls


async def test_hundreds_of_simultaneous_reservations_never_pass_the_concurrent_call_limit(ledger: Ledger) -> None:
    await account(ledger, max_calls=5)
    results = await asyncio.gather(
        *(ledger.reserve(f"c{i}", "acme", f"2{i % 40:02d}", 10_000, now=NOW) for i in range(300))
    )
    held = [i for i, r in enumerate(results) if r.ok]
    assert len(held) == 5
    assert {r.refusal for r in results if not r.ok} == {Refusal.TOO_MANY_CALLS}
    assert (await ledger.account("acme")).live_calls == 5
    for i in held[:2]:
        await ledger.settle(f"c{i}", 5_000, now=NOW + 30)
    await ledger.release(f"c{held[2]}", now=NOW + 30)
    again = await asyncio.gather(*(ledger.reserve(f"d{i}", "acme", "201", 10_000, now=NOW + 31) for i in range(10)))
    assert sum(r.ok for r in again) == 3
    assert await ledger.check() == []


async def test_an_extensions_concurrent_call_limit_leaves_the_others_free(ledger: Ledger) -> None:
    await account(ledger)
    await ledger.set_extension("acme", "201", ExtensionSettings(max_calls=2))
    results = await asyncio.gather(*(ledger.reserve(f"c{i}", "acme", "201", 10_000, now=NOW) for i in range(50)))
    assert sum(r.ok for r in results) == 2
    assert {r.refusal for r in results if not r.ok} == {Refusal.TOO_MANY_CALLS}
    assert (await ledger.reserve("other", "acme", "202", 10_000, now=NOW)).ok
    assert (await ledger.extension("acme", "201")).live_calls == 2  # type: ignore[union-attr]
    assert await ledger.check() == []


async def test_a_renewal_is_not_a_new_call(ledger: Ledger) -> None:
    await account(ledger, max_calls=1, max_attempts=1)
    assert (await ledger.reserve("c1", "acme", "201", 10_000, now=NOW)).ok
    assert (await ledger.extend("c1", 10_000, now=NOW + 1)).ok
    assert (await ledger.reserve("c2", "acme", "201", 10_000, now=NOW + 2)).refusal is Refusal.TOO_MANY_CALLS


# ---------------------------------------------------------------- attempts per minute


async def test_attempts_per_minute_are_limited_and_the_next_minute_starts_afresh(ledger: Ledger) -> None:
    await account(ledger, max_attempts=10)
    minute = NOW - NOW % 60
    outcomes = []
    for i in range(25):
        r = await ledger.reserve(f"c{i}", "acme", f"2{i % 5:02d}", 10_000, now=minute + 1)
        outcomes.append(r.refusal)
        if r.ok:
            await ledger.release(f"c{i}", now=minute + 2)
    assert outcomes[:10] == [None] * 10 and set(outcomes[10:]) == {Refusal.RATE_LIMITED}
    assert (await ledger.reserve("next", "acme", "201", 10_000, now=minute + 61)).ok


async def test_an_extensions_attempts_are_limited_alone(ledger: Ledger) -> None:
    await account(ledger)
    await ledger.set_extension("acme", "201", ExtensionSettings(max_attempts=3))
    refusals = []
    for i in range(6):
        r = await ledger.reserve(f"c{i}", "acme", "201", 10_000, now=NOW)
        refusals.append(r.refusal)
        if r.ok:
            await ledger.release(f"c{i}", now=NOW)
    assert refusals == [None, None, None, Refusal.RATE_LIMITED, Refusal.RATE_LIMITED, Refusal.RATE_LIMITED]
    assert (await ledger.reserve("x", "acme", "202", 10_000, now=NOW)).ok


async def test_an_attempt_the_money_refuses_is_not_counted(ledger: Ledger) -> None:
    """A phone retrying on an account that has run out is told it is the money at every attempt, not
    that it is over its attempt limit: the extension had taken the attempt before the account refused,
    and gave it back (as the account does for one the velocity limit refuses)."""
    await account(ledger, balance=3 * EUR, velocity_limit=EUR + EUR // 2, max_attempts=2)
    await ledger.set_extension("acme", "201", ExtensionSettings(max_attempts=1))
    refusals = [(await ledger.reserve(f"c{i}", "acme", "201", 4 * EUR, now=NOW + i)).refusal for i in range(3)]
    assert refusals == [Refusal.INSUFFICIENT_FUNDS] * 3
    assert (await ledger.reserve("held", "acme", "202", EUR // 2, now=NOW + 3)).ok  # the account's first attempt
    # the velocity limit (1.5 EUR an hour) refuses after both budgets took the attempt: neither counts it
    speed = [(await ledger.reserve(f"v{i}", "acme", "203", 5 * EUR // 4, now=NOW + 4 + i)).refusal for i in range(2)]
    assert speed == [Refusal.VELOCITY_LIMIT] * 2
    # 201's limit of one attempt a minute, and the account's of two, are untouched
    assert (await ledger.reserve("next", "acme", "201", EUR // 4, now=NOW + 6)).ok
    assert (await ledger.account("acme")).live_calls == 2 and await ledger.check() == []


# ---------------------------------------------------------------- velocity


async def test_velocity_counts_spending_and_holds_of_the_rolling_hour_and_alerts_once(ledger: Ledger) -> None:
    await account(ledger, velocity_limit=5 * EUR)
    assert (await ledger.reserve("a", "acme", "201", 4 * EUR, now=NOW)).ok
    await ledger.settle("a", 4 * EUR, CallDetails(NOW, NOW + 600), now=NOW + 600)
    first = await ledger.reserve("b", "acme", "201", 2 * EUR, now=NOW + 700)
    assert (first.refusal, first.alert) == (Refusal.VELOCITY_LIMIT, True)
    second = await ledger.reserve("c", "acme", "202", 2 * EUR, now=NOW + 800)
    assert (second.refusal, second.alert) == (Refusal.VELOCITY_LIMIT, False)
    assert (await ledger.reserve("d", "acme", "201", EUR, now=NOW + 900)).ok  # 4 + 1 fits
    assert (await ledger.extend("d", EUR // 2, now=NOW + 950)).refusal is Refusal.VELOCITY_LIMIT
    await ledger.release("d", now=NOW + 1000)
    assert (await ledger.reserve("e", "acme", "201", 2 * EUR, now=NOW + 600 + HOUR + 1)).ok  # the debit aged out
    alerts = [e for e in await ledger.audit("acme") if e.action == "velocity limit reached"]
    assert len(alerts) == 1 and alerts[0].actor == "engine"
    acc = await ledger.account("acme")
    assert acc.live_calls == 1 and await ledger.check() == []


# ---------------------------------------------------------------- the account's time zone


async def test_daily_caps_follow_the_accounts_time_zone(ledger: Ledger) -> None:
    await account(ledger, timezone="Europe/Paris")
    await ledger.set_extension("acme", "201", ExtensionSettings(daily_cap=EUR))
    evening = 1_795_559_400  # 2026-11-24 22:30 UTC = 23:30 in Paris
    assert (await ledger.reserve("a", "acme", "201", EUR, now=evening)).ok
    await ledger.settle("a", EUR, now=evening + 60)
    assert (await ledger.reserve("b", "acme", "201", 1, now=evening + 1200)).refusal is Refusal.CAP_REACHED
    past_midnight_in_paris = evening + HOUR  # 23:30 UTC, still the 24th in UTC
    assert (await ledger.reserve("c", "acme", "201", EUR, now=past_midnight_in_paris)).ok


# ---------------------------------------------------------------- settings, audit, proof


async def test_settings_changes_are_audited_with_who_and_old_and_new(ledger: Ledger) -> None:
    await account(ledger)
    before = (await ledger.account("acme")).settings
    changed = AccountSettings("office-fr", "EUR", threshold=2 * EUR, max_calls=4, blocked_prefixes=("44",))
    await ledger.update_settings("acme", changed, actor="admin@acme", now=NOW + 5)
    await ledger.update_settings("acme", changed, actor="admin@acme", now=NOW + 6)  # no change: no entry
    entries = await ledger.audit("acme")
    assert {(e.action, e.detail, e.actor) for e in entries} == {
        ("set threshold", "0.00 EUR → 2.00 EUR", "admin@acme"),
        ("set max_calls", "none → 4", "admin@acme"),
        ("set blocked_prefixes", "none → 44", "admin@acme"),
    }
    assert before != changed
    with pytest.raises(LedgerError):
        await ledger.update_settings("acme", AccountSettings("office-fr", "USD"))


@pytest.mark.parametrize(
    "bad",
    [
        {"timezone": "Mars/Olympus"},
        {"timezone": ""},
        {"max_calls": 0},
        {"max_attempts": -1},
        {"velocity_limit": 0},
        {"blocked_prefixes": ("44a",)},
        {"blocked_prefixes": ("١٢",)},
        {"office_hours": "mon-fry 08:00-19:00"},
        {"office_hours": "mon 8-19"},
        {"office_hours": "mon 08:00-08:00"},
    ],
)
def test_bad_limits_are_refused_with_a_clear_message(bad: dict[str, object]) -> None:
    with pytest.raises(LedgerError):
        AccountSettings("office-fr", "EUR", **bad)  # type: ignore[arg-type]


async def test_check_finds_a_live_call_count_that_does_not_match(url: str) -> None:
    async with opened(url) as ledger:
        await account(ledger)
        assert (await ledger.reserve("a", "acme", "201", EUR, now=NOW)).ok
    await raw_sql(url, "UPDATE accounts SET live_calls = 7")
    async with opened(url) as ledger:
        [problem] = await ledger.check()
        assert "live calls" in problem.message


def test_a_version_1_ledger_is_upgraded_with_its_live_calls_counted(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for sql in statements(migrations("sqlite")[0][1]):
        conn.execute(sql)
    conn.execute("INSERT INTO schema_version VALUES (1)")
    for sql in (
        "INSERT INTO accounts (id, plan, currency, balance, reserved, created_at) VALUES ('a', 'p', 'EUR', 9, 5, 0)",
        "INSERT INTO journal (account_id, at, entry, amount, reference, balance_after)"
        " VALUES ('a', 0, 'topup', 9, 'x', 9)",
        "INSERT INTO extensions (account_id, ext, reserved) VALUES ('a', '201', 5)",
        "INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at)"
        " VALUES ('c', 'a', '201', 5, 0, 0)",
    ):
        conn.execute(sql)
    conn.close()

    async def upgraded() -> None:
        async with opened(f"sqlite:///{path}") as ledger:
            acc = await ledger.account("a")
            assert (acc.live_calls, acc.settings.timezone, acc.settings.max_calls) == (1, "UTC", None)
            assert await ledger.check() == []
            assert (await ledger.settle("c", 3, now=10)).settled

    asyncio.run(upgraded())


# ---------------------------------------------------------------- office hours


@pytest.mark.parametrize(
    ("text", "local", "inside"),
    [
        ("mon-fri 08:00-19:00", "2026-11-24T08:00", True),  # Tuesday
        ("mon-fri 08:00-19:00", "2026-11-24T19:00", False),  # the end is excluded
        ("mon-fri 08:00-19:00", "2026-11-28T12:00", False),  # Saturday
        ("mon-fri 08:00-19:00; sat 09:00-12:00", "2026-11-28T11:59", True),
        ("fri 22:00-06:00", "2026-11-28T05:59", True),  # Friday night into Saturday
        ("sun 22:00-02:00", "2026-11-30T01:00", True),  # Sunday night into Monday
        ("sat,sun 00:00-24:00", "2026-11-29T23:59", True),
    ],
)
def test_office_hours(text: str, local: str, inside: bool) -> None:
    from datetime import datetime

    paris = zone("Europe/Paris")
    moment = int(datetime.fromisoformat(local).replace(tzinfo=paris).timestamp())
    assert OfficeHours.parse(text).contains(moment, paris) is inside


def _engine(ledger: Ledger, at: float) -> Engine:
    return Engine(TariffStore([OFFICE_FR]), ledger, Clock(start=at), EngineSection())


async def _authorize(engine: Engine, dialed: str, uid: str, ext: str = "201") -> tuple[str, str]:
    a = await engine.authorize(AuthorizeRequest(uid, dialed, ext, "acme"))
    return a.status, a.reason


async def test_outside_office_hours_only_international_and_premium_calls_are_refused(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path / 'l.sqlite3'}") as ledger:
        await account(ledger, timezone="Europe/Paris", office_hours="mon-fri 08:00-19:00")
        saturday_noon = 1_795_863_600  # 2026-11-28 11:00 UTC = 12:00 in Paris
        engine = _engine(ledger, saturday_noon)
        assert await _authorize(engine, "0899123456", "1") == ("DENY", Reason.OUTSIDE_HOURS)
        assert await _authorize(engine, "+1 212 555 0100", "2") == ("DENY", Reason.OUTSIDE_HOURS)
        assert await _authorize(engine, "0612345678", "3") == ("ALLOW", Reason.INCLUDED)
        assert await _authorize(engine, "112", "4") == ("ALLOW", Reason.EMERGENCY)
        monday_ten = saturday_noon + 2 * 86_400 - 2 * HOUR
        assert await _authorize(_engine(ledger, monday_ten), "0899123456", "5") == ("ALLOW", Reason.CHARGED)


async def test_the_accounts_blocked_prefixes_refuse_even_what_the_plan_includes(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path / 'l.sqlite3'}") as ledger:
        await account(ledger, blocked_prefixes=("33899", "336"))
        engine = _engine(ledger, NOW)
        assert await _authorize(engine, "0899123456", "1") == ("DENY", Reason.BLOCKED_DESTINATION)
        assert await _authorize(engine, "0612345678", "2") == ("DENY", Reason.BLOCKED_DESTINATION)
        assert await _authorize(engine, "0892680123", "3") == ("ALLOW", Reason.CHARGED)
        assert await _authorize(engine, "112", "4") == ("ALLOW", Reason.EMERGENCY)


async def test_the_engine_says_why_a_limit_refused_and_counts_the_velocity_alert(tmp_path: Path) -> None:
    async with opened(f"sqlite:///{tmp_path / 'l.sqlite3'}") as ledger:
        await account(ledger, max_calls=2, velocity_limit=10 * EUR)
        engine = _engine(ledger, NOW)
        assert [await _authorize(engine, "0899123456", str(i)) for i in range(3)] == [
            ("ALLOW", Reason.CHARGED),
            ("ALLOW", Reason.CHARGED),
            ("DENY", Reason.TOO_MANY_CALLS),
        ]
        for uid in ("0", "1"):
            await ledger.release(uid, now=NOW)
        await ledger.update_settings("acme", AccountSettings("office-fr", "EUR", velocity_limit=EUR), now=NOW)
        assert await _authorize(engine, "0899123456", "9") == ("DENY", Reason.VELOCITY_LIMIT)
        assert engine.stats.velocity_alerts == 1
        assert engine.stats.outcomes["deny_velocity_limit"] == 1


async def test_two_hundred_simultaneous_fastagi_authorizations_allow_exactly_the_limit(tmp_path: Path) -> None:
    from .asterisk_helpers import agi_request, agi_transcript, engine_rig

    env, _, _ = agi_transcript("answered_callee_hangs_up")
    base = [line for line in env if not line.startswith(("agi_uniqueid", "agi_arg_"))]
    async with engine_rig(tmp_path, balance=1_000 * EUR) as rig:
        await rig.ledger.update_settings("acme", AccountSettings("office-fr", "EUR", max_calls=10))

        async def one(i: int) -> str:
            lines = [*base, f"agi_uniqueid: 1795535109.{i}", "agi_arg_1: 201", "agi_arg_2: 0899123456"]
            commands = await agi_request(rig.port, lines)
            return next(c for c in commands if "RATING_REASON" in c).split(" ", 3)[3].strip('"')

        reasons = await asyncio.gather(*(one(i) for i in range(200)))
        assert reasons.count("charged") == 10 and reasons.count("too_many_calls") == 190
        assert len(await rig.ledger.reservations()) == 10 and await rig.ledger.check() == []
