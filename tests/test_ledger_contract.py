"""One contract, both backends: every test here runs on SQLite and on PostgreSQL (the `url` and
`ledger` fixtures of conftest)."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import replace

import pytest

from rating_engine.ledger import (
    AccountSettings,
    CallDetails,
    ExtensionSettings,
    Ledger,
    LedgerError,
    OnLow,
    Refusal,
    SchemaTooNew,
    SettleResult,
    TopupStatus,
)
from rating_engine.ledger import programs as P
from rating_engine.ledger.programs import Program
from rating_engine.ledger.sqlite import SqliteLedger
from rating_engine.payments import ManualProvider, TopupRunner

from .helpers import EUR, observed_above
from .ledgers import opened, raw_sql, until, until_settled, write_lock_held
from .payment_doubles import ScriptedProvider

DAY = 86_400
NOW = 1_795_535_109  # 2026-11-24


async def funded(ledger: Ledger, balance: int = 10 * EUR, **settings: object) -> str:
    await ledger.create_account("acme", AccountSettings("office-fr", "EUR", **settings), now=NOW)  # type: ignore[arg-type]
    if balance:
        await ledger.topup("acme", balance, "opening", now=NOW)
    return "acme"


async def test_accounts_are_created_once_and_unknown_ones_are_refused(ledger: Ledger) -> None:
    await funded(ledger)
    acc = await ledger.account("acme")
    assert (acc.balance, acc.reserved, acc.available, acc.settings.currency) == (10 * EUR, 0, 10 * EUR, "EUR")
    with pytest.raises(LedgerError, match="already exists"):
        await funded(ledger)
    with pytest.raises(LedgerError, match="unknown account"):
        await ledger.account("nobody")
    with pytest.raises(LedgerError, match="unknown account"):
        await ledger.topup("nobody", EUR, "x")


async def test_topup_is_idempotent_on_its_reference(ledger: Ledger) -> None:
    await funded(ledger, 0)
    _, created = await ledger.topup("acme", 5 * EUR, "bank-42")
    _, again = await ledger.topup("acme", 5 * EUR, "bank-42")
    assert created and not again
    assert (await ledger.account("acme")).balance == 5 * EUR
    with pytest.raises(LedgerError, match="already used"):
        await ledger.topup("acme", 6 * EUR, "bank-42")
    with pytest.raises(LedgerError, match="positive"):
        await ledger.topup("acme", -1, "neg")
    assert (await ledger.account("acme")).balance == 5 * EUR


async def test_reserve_takes_only_available_money_above_the_floor(ledger: Ledger) -> None:
    await funded(ledger, 10 * EUR, threshold=2 * EUR)  # block mode: floor = 2 EUR
    assert (await ledger.reserve("c1", "acme", "201", 5 * EUR, now=NOW)).ok
    assert (await ledger.account("acme")).available == 3 * EUR
    blocked = await ledger.reserve("c2", "acme", "202", 4 * EUR, now=NOW)
    assert (blocked.ok, blocked.refusal) == (False, Refusal.ACCOUNT_BLOCKED)
    broke = await ledger.reserve("c3", "acme", "202", 6 * EUR, now=NOW)
    assert (broke.ok, broke.refusal) == (False, Refusal.INSUFFICIENT_FUNDS)
    assert (await ledger.reserve("c4", "acme", "202", 3 * EUR, now=NOW)).ok
    assert (await ledger.account("acme")).available == 0
    dup = await ledger.reserve("c1", "acme", "201", 1, now=NOW)
    assert dup.refusal is Refusal.DUPLICATE_CALL
    assert (await ledger.reserve("c5", "ghost", "201", 1, now=NOW)).refusal is Refusal.UNKNOWN_ACCOUNT
    assert [r.call_id for r in await ledger.reservations()] == ["c1", "c4"]
    assert await ledger.check() == []


async def test_extend_follows_the_same_rule(ledger: Ledger) -> None:
    await funded(ledger, 10 * EUR)
    await ledger.reserve("c1", "acme", "201", 4 * EUR, now=NOW, deadline=NOW + 120)
    grown = await ledger.extend("c1", 4 * EUR, now=NOW + 100, deadline=NOW + 240)
    assert grown.ok and grown.reserved == 8 * EUR
    refused = await ledger.extend("c1", 4 * EUR, now=NOW + 200)
    assert refused.refusal is Refusal.INSUFFICIENT_FUNDS
    [r] = await ledger.reservations("acme")
    assert (r.amount, r.deadline) == (8 * EUR, NOW + 240)
    assert (await ledger.extend("nope", 1)).refusal is Refusal.UNKNOWN_CALL


async def test_settle_debits_releases_the_rest_and_records_activity_once(ledger: Ledger) -> None:
    await funded(ledger, 10 * EUR)
    await ledger.reserve("c1", "acme", "201", 3 * EUR, now=NOW)
    details = CallDetails(
        started_at=NOW,
        ended_at=NOW + 95,
        dialed="0899123456",
        e164="+33899123456",
        destination="France premium 0899",
        kind="premium",
        billable_seconds=95,
    )
    first = await ledger.settle("c1", 1_386_667, details, now=NOW + 95)
    assert first.settled and not first.overdraft and first.balance_after == 10 * EUR - 1_386_667
    again = await ledger.settle("c1", 1_386_667, details, now=NOW + 96)
    assert (again.settled, again.already) == (False, True)
    acc = await ledger.account("acme")
    assert (acc.balance, acc.reserved) == (10 * EUR - 1_386_667, 0)
    [row] = await ledger.activity("acme")
    assert (row.ext, row.e164, row.billable_seconds, row.cost, row.balance_after) == (
        "201",
        "+33899123456",
        95,
        1_386_667,
        acc.balance,
    )
    assert (await ledger.settle("never-reserved", 5)).unknown
    assert await ledger.check() == []


async def test_a_cost_above_the_reservation_is_debited_and_flagged(ledger: Ledger) -> None:
    await funded(ledger, 10 * EUR)
    await ledger.reserve("c1", "acme", "201", EUR, now=NOW)
    result = await ledger.settle("c1", 2 * EUR, now=NOW)
    assert result.settled and result.overdraft
    assert (await ledger.activity("acme"))[0].overdraft
    assert (await ledger.account("acme")).balance == 8 * EUR


async def test_release_gives_everything_back(ledger: Ledger) -> None:
    await funded(ledger, 10 * EUR)
    await ledger.reserve("c1", "acme", "201", 4 * EUR, now=NOW)
    assert await ledger.release("c1")
    assert not await ledger.release("c1")
    acc = await ledger.account("acme")
    assert (acc.balance, acc.reserved, await ledger.activity("acme")) == (10 * EUR, 0, [])


async def test_extension_caps_are_a_second_budget(ledger: Ledger) -> None:
    await funded(ledger, 100 * EUR)
    await ledger.set_extension("acme", "201", ExtensionSettings(daily_cap=5 * EUR, monthly_cap=8 * EUR))
    assert (await ledger.reserve("c1", "acme", "201", 4 * EUR, now=NOW)).ok
    assert (await ledger.reserve("c2", "acme", "201", 2 * EUR, now=NOW)).refusal is Refusal.CAP_REACHED
    await ledger.settle("c1", 3 * EUR, now=NOW)  # 3 spent today, 2 left
    assert (await ledger.reserve("c3", "acme", "201", 2 * EUR, now=NOW)).ok
    await ledger.settle("c3", 2 * EUR, now=NOW)
    assert (await ledger.reserve("c4", "acme", "201", 1, now=NOW)).refusal is Refusal.CAP_REACHED
    # Next day the daily cap is fresh, but the month has only 3 EUR left.
    assert (await ledger.reserve("c5", "acme", "201", 4 * EUR, now=NOW + DAY)).refusal is Refusal.CAP_REACHED
    assert (await ledger.reserve("c6", "acme", "201", 3 * EUR, now=NOW + DAY)).ok
    # Other extensions are not capped by 201's caps.
    assert (await ledger.reserve("c7", "acme", "202", 20 * EUR, now=NOW)).ok
    assert await ledger.check() == []


async def test_an_extension_denied_chargeable_calls_cannot_reserve(ledger: Ledger) -> None:
    await funded(ledger)
    ext = await ledger.set_extension("acme", "203", ExtensionSettings(chargeable=False, classes=frozenset()))
    assert not ext.settings.chargeable and ext.settings.classes == frozenset()
    assert (await ledger.reserve("c1", "acme", "203", 1, now=NOW)).refusal is Refusal.EXTENSION_NOT_ALLOWED
    assert [e.ext for e in await ledger.extensions("acme")] == ["203"]


async def test_a_refused_reservation_leaves_nothing_behind(ledger: Ledger) -> None:
    await funded(ledger, 5 * EUR, threshold=1 * EUR)
    await ledger.set_extension("acme", "201", ExtensionSettings(daily_cap=2 * EUR))
    assert (await ledger.reserve("held", "acme", "201", 1 * EUR, now=NOW)).ok
    before = await ledger.account("acme")
    refusals = await asyncio.gather(
        ledger.reserve("c1", "acme", "299", 4 * EUR, now=NOW),  # a first call, over the floor
        ledger.reserve("c2", "acme", "201", 2 * EUR, now=NOW),  # over 201's daily cap
        ledger.reserve("c3", "acme", "202", 10 * EUR, now=NOW),  # a first call, more than the balance
        ledger.extend("held", 4 * EUR, now=NOW),  # over the cap and the floor
    )
    assert [r.refusal for r in refusals] == [
        Refusal.ACCOUNT_BLOCKED,
        Refusal.CAP_REACHED,
        Refusal.INSUFFICIENT_FUNDS,
        Refusal.CAP_REACHED,
    ]
    after = await ledger.account("acme")
    assert (after.balance, after.reserved) == (before.balance, before.reserved) == (5 * EUR, 1 * EUR)
    assert [(e.ext, e.reserved) for e in await ledger.extensions("acme")] == [("201", 1 * EUR)]
    assert [(r.call_id, r.amount) for r in await ledger.reservations()] == [("held", 1 * EUR)]
    assert await ledger.check() == []


async def test_a_reservation_decided_with_settings_changed_since_holds_nothing(ledger: Ledger) -> None:
    """An engine reserves with the settings revisions it decided with: each save of the account's
    settings or of an extension's rules raises its revision, and a reservation that names an old one
    is refused and leaves no trace (the engine reads again and decides again)."""
    await funded(ledger)
    account, none = await ledger.caller("acme", "201")
    assert none is None and account is not None and account.settings_rev == 0  # no row yet: revision 0
    assert (await ledger.reserve("first", "acme", "201", EUR, now=NOW, expect=(0, 0))).ok  # its row, default rules
    _, made = await ledger.caller("acme", "201")
    assert made is not None and made.settings_rev == 0
    saved = await ledger.set_extension("acme", "201", ExtensionSettings(classes=frozenset()))
    assert saved.settings_rev == 1
    changed = await ledger.update_settings("acme", replace(account.settings, blocked_prefixes=("33899",)))
    assert changed.settings_rev == 1
    before = await ledger.account("acme")
    stale = await asyncio.gather(
        ledger.reserve("c1", "acme", "201", EUR, now=NOW, expect=(0, 1)),  # the account's settings since
        ledger.reserve("c2", "acme", "201", EUR, now=NOW, expect=(1, 0)),  # the extension's rules since
        ledger.reserve("c3", "acme", "202", EUR, now=NOW, expect=(0, 0)),  # a first call: the account's
    )
    assert [r.refusal for r in stale] == [Refusal.SETTINGS_CHANGED] * 3
    after = await ledger.account("acme")
    assert (after.balance, after.reserved, after.live_calls) == (before.balance, before.reserved, 1)
    assert [e.ext for e in await ledger.extensions("acme")] == ["201"]
    assert (await ledger.reserve("c4", "acme", "201", EUR, now=NOW, expect=(1, 1))).ok
    assert (await ledger.reserve("c5", "acme", "202", EUR, now=NOW, expect=(1, 0))).ok
    assert (await ledger.reserve("c6", "acme", "202", EUR, now=NOW)).ok  # no revisions asked: no check
    assert await ledger.check() == []


def _writes_then_fails() -> Program[None]:

    yield P.count(
        "INSERT INTO journal (account_id, at, entry, amount, reference, balance_after)"
        " VALUES ('acme', 0, 'topup', 1, 'stray', 0)"
    )
    raise LedgerError("failed after writing")


async def test_a_program_failing_after_it_wrote_is_undone_alone(ledger: Ledger) -> None:
    """Its neighbours (on SQLite: the same transaction) are answered and kept, once each."""
    await funded(ledger, 10 * EUR)
    commits = getattr(ledger, "commits", 0)
    results = await asyncio.gather(
        ledger.reserve("c1", "acme", "201", 2 * EUR, now=NOW),
        ledger._run(_writes_then_fails),
        ledger.reserve("c2", "acme", "202", 3 * EUR, now=NOW),
        return_exceptions=True,
    )
    assert isinstance(results[1], LedgerError)
    assert [r.reserved for r in (results[0], results[2])] == [2 * EUR, 3 * EUR]  # type: ignore[union-attr]
    if isinstance(ledger, SqliteLedger):
        assert ledger.commits == commits + 1  # all three were one batch
    acc = await ledger.account("acme")
    assert (acc.balance, acc.reserved) == (10 * EUR, 5 * EUR)
    assert sorted(r.call_id for r in await ledger.reservations()) == ["c1", "c2"]
    assert await ledger.check() == []


async def test_close_answers_what_is_already_queued_and_then_refuses(url: str) -> None:
    async with opened(url) as ledger:
        await funded(ledger)
        calls = [asyncio.ensure_future(ledger.reserve(f"c{i}", "acme", "201", EUR // 10, now=NOW)) for i in range(50)]
        await asyncio.sleep(0)  # queued, not yet answered
        await ledger.close()
        assert [c.result().refusal for c in calls] == [None] * 50
        with pytest.raises(RuntimeError, match="not open"):
            await ledger.reserve("late", "acme", "201", 1, now=NOW)
    async with opened(url) as ledger:
        assert len(await ledger.reservations()) == 50 and await ledger.check() == []


async def test_concurrent_first_calls_of_new_extensions_are_all_held(ledger: Ledger) -> None:
    """The extension's row is created by one of them while the others wait for it (a race on PostgreSQL)."""
    await funded(ledger, 100 * EUR)
    held = await asyncio.gather(*(ledger.reserve(f"c{i}", "acme", f"3{i % 8}", EUR // 10, now=NOW) for i in range(320)))
    assert [r.refusal for r in held if not r.ok] == []
    assert [(e.ext, e.reserved) for e in await ledger.extensions("acme")] == [(f"3{k}", 4 * EUR) for k in range(8)]
    assert await ledger.check() == []


async def test_activity_filters_by_extension_and_period(ledger: Ledger) -> None:
    await funded(ledger)
    for i, (ext, t) in enumerate([("201", NOW), ("202", NOW + 10), ("201", NOW + DAY)]):
        await ledger.reserve(f"c{i}", "acme", ext, EUR, now=t)
        await ledger.settle(f"c{i}", 100_000, CallDetails(started_at=t, ended_at=t + 5), now=t + 5)
    assert [r.call_id for r in await ledger.activity("acme", ext="201")] == ["c0", "c2"]
    assert [r.call_id for r in await ledger.activity("acme", since=NOW + 6, until=NOW + DAY)] == ["c1"]


async def _settle_and_pay(runner: TopupRunner, call_id: str, cost: int, now: int = NOW + 60) -> SettleResult:
    """Settle as the engine does: a top-up the settle asks for goes to the runner."""
    result = await runner.ledger.settle(call_id, cost, now=now)
    if result.topup is not None:
        runner.start(result.topup)
    return result


async def test_many_calls_ending_together_trigger_one_auto_topup(url: str) -> None:
    provider = ScriptedProvider("ok")
    async with opened(url) as ledger:
        runner = TopupRunner(ledger, provider)
        await funded(ledger, 10 * EUR, threshold=5 * EUR, on_low=OnLow.TOPUP, topup_amount=20 * EUR)
        for i in range(20):
            assert (await ledger.reserve(f"c{i}", "acme", f"2{i:02d}", 400_000, now=NOW)).ok
        await asyncio.gather(*(_settle_and_pay(runner, f"c{i}", 400_000) for i in range(20)))
        await runner.drain()
        assert len(provider.charges) == 1
        acc = await ledger.account("acme")
        [auto] = [t for t in await ledger.topups("acme") if t.source == "auto"]
        # The 13th settle crosses the threshold at 4.80: it tops up to threshold + amount (25.00).
        assert auto.status is TopupStatus.SUCCEEDED and auto.amount == 25 * EUR - 4_800_000
        assert acc.balance == 10 * EUR - 20 * 400_000 + auto.amount and acc.topup_pending is None
        assert await ledger.check() == []


async def test_a_failed_auto_topup_blocks_chargeable_calls_until_a_topup_succeeds(url: str) -> None:
    provider = ScriptedProvider("fail", "ok")
    async with opened(url) as ledger:
        runner = TopupRunner(ledger, provider)
        await funded(ledger, 6 * EUR, threshold=5 * EUR, on_low=OnLow.TOPUP, topup_amount=20 * EUR)
        assert (await ledger.reserve("c1", "acme", "201", 2 * EUR, now=NOW)).ok
        await _settle_and_pay(runner, "c1", 2 * EUR)  # balance 4 < 5: top-up attempted, declined
        await runner.drain()
        assert len(provider.charges) == 1, "a declined card is not retried by itself"
        acc = await ledger.account("acme")
        assert acc.topup_failed and acc.floor == 5 * EUR and acc.balance == 4 * EUR
        assert (await ledger.reserve("c2", "acme", "201", EUR, now=NOW)).refusal is Refusal.ACCOUNT_BLOCKED
        [failed] = [t for t in await ledger.topups("acme") if t.source == "auto"]
        assert failed.status is TopupStatus.FAILED and "declined" in failed.detail
        await ledger.topup("acme", 10 * EUR, "bank-transfer")
        acc = await ledger.account("acme")
        assert not acc.topup_failed and acc.floor == 0
        assert (await ledger.reserve("c3", "acme", "201", EUR, now=NOW)).ok


async def test_a_declining_card_is_tried_at_most_twice_a_day_and_pauses_after_three_failures(url: str) -> None:
    provider = ScriptedProvider(default="fail")
    async with opened(url) as ledger:
        runner = TopupRunner(ledger, provider)
        await funded(
            ledger,
            44 * EUR,
            threshold=45 * EUR,
            on_low=OnLow.TOPUP,
            topup_amount=20 * EUR,
            block_on_topup_failure=False,
        )
        day = 86_400

        async def calls(n: int, at: int, tag: str) -> None:
            for i in range(n):  # each settle lands below the threshold
                assert (await ledger.reserve(f"{tag}{i}", "acme", "201", 100_000, now=at + i)).ok
                await _settle_and_pay(runner, f"{tag}{i}", 100_000, now=at + i)
                await runner.drain()

        await calls(30, NOW, "a")
        assert len(provider.charges) == 2, "two attempts on the first day, not one per call"
        await calls(30, NOW + day, "b")
        acc = await ledger.account("acme")
        assert len(provider.charges) == 3 and acc.topup_paused and acc.topup_failures == 3
        assert runner.outcomes == {"failed": 3, "paused": 1}  # what the metrics show
        await calls(30, NOW + 2 * day, "c")
        assert len(provider.charges) == 3, "paused: no attempt until the administrator acts"
        audit = [e.action for e in await ledger.audit("acme")]
        assert audit.count("automatic top-up failed") == 3 and audit.count("automatic top-up paused") == 1
        s = (await ledger.account("acme")).settings
        await ledger.update_settings("acme", replace(s, topup_amount=30 * EUR), actor="web:admin", now=NOW + 2 * day)
        acc = await ledger.account("acme")
        assert not acc.topup_paused and acc.topup_failures == 0
        await calls(1, NOW + 2 * day + 100, "d")
        assert len(provider.charges) == 4 and "automatic top-up resumed" in [
            e.action for e in await ledger.audit("acme")
        ]
        assert await ledger.check() == []


async def test_a_hanging_provider_is_asked_again_with_the_same_key_and_never_blocks_settlement(url: str) -> None:
    provider = ScriptedProvider("hang", "hang")
    async with opened(url) as ledger:
        runner = TopupRunner(ledger, provider, timeout=0.2, retry_delays=(0.05, 0.05))
        await funded(ledger, 6 * EUR, threshold=5 * EUR, on_low=OnLow.TOPUP, topup_amount=20 * EUR)
        await ledger.reserve("c1", "acme", "201", 2 * EUR, now=NOW)
        settled = await asyncio.wait_for(_settle_and_pay(runner, "c1", 2 * EUR), 2)
        assert settled.settled and settled.topup is not None
        await runner.drain()
        [t] = [t for t in await ledger.topups("acme") if t.source == "auto"]
        assert t.status is TopupStatus.SUCCEEDED and runner.attempts == 3  # two timeouts, then the answer
        assert [key for _, _, key in provider.charges] == [t.reference] * 3 and await ledger.check() == []


async def test_manual_provider_leaves_the_topup_pending_for_the_operator(url: str) -> None:
    async with opened(url) as ledger:
        runner = TopupRunner(ledger, ManualProvider())
        await funded(ledger, 6 * EUR, threshold=5 * EUR, on_low=OnLow.TOPUP, topup_amount=20 * EUR)
        await ledger.reserve("c1", "acme", "201", 2 * EUR, now=NOW)
        result = await _settle_and_pay(runner, "c1", 2 * EUR)
        await runner.drain()
        assert result.topup is not None
        assert (await ledger.account("acme")).topup_pending == result.topup.reference
        confirmed = await ledger.complete_topup(result.topup.reference, ok=True)
        assert confirmed.status is TopupStatus.SUCCEEDED and confirmed.amount == 21 * EUR  # 4 up to 5 + 20
        assert (await ledger.account("acme")).balance == 25 * EUR
        assert (await ledger.complete_topup(result.topup.reference, ok=True)).status is TopupStatus.SUCCEEDED
        assert (await ledger.account("acme")).balance == 25 * EUR


async def test_block_mode_stops_at_the_threshold(ledger: Ledger) -> None:
    await funded(ledger, 5 * EUR, threshold=4 * EUR)
    assert (await ledger.reserve("c1", "acme", "201", EUR, now=NOW)).ok
    assert (await ledger.reserve("c2", "acme", "202", 1, now=NOW)).refusal is Refusal.ACCOUNT_BLOCKED


async def test_settings_change_moves_the_floor(ledger: Ledger) -> None:
    await funded(ledger, 5 * EUR, threshold=4 * EUR)
    acc = await ledger.update_settings("acme", AccountSettings("office-fr", "EUR", threshold=0))
    assert acc.floor == 0 and acc.available == 5 * EUR


async def test_concurrent_calls_never_take_available_money_below_the_floor(ledger: Ledger) -> None:
    await funded(ledger, 50 * EUR, threshold=5 * EUR)
    rng = random.Random(3)
    floor_breaches: list[int] = []

    async def call(i: int) -> int:
        amount = rng.randint(10_000, 3 * EUR)
        held = await ledger.reserve(f"c{i}", "acme", f"2{i % 30:02d}", amount, now=NOW)
        acc = await ledger.account("acme")
        if acc.available < 0:
            floor_breaches.append(acc.available)
        if not held.ok:
            return 0
        await asyncio.sleep(rng.random() / 100)
        cost = rng.randint(0, amount)
        if cost == 0:
            await ledger.release(f"c{i}")
        else:
            assert (await ledger.settle(f"c{i}", cost, now=NOW + 60)).settled
        return cost

    spent = sum(await asyncio.gather(*(call(i) for i in range(500))))
    acc = await ledger.account("acme")
    assert floor_breaches == []
    assert acc.balance == 50 * EUR - spent and acc.reserved == 0 and acc.balance >= acc.floor
    rows = await ledger.activity("acme")
    assert len({r.call_id for r in rows}) == len(rows) and sum(r.cost for r in rows) == spent
    assert not any(r.overdraft for r in rows)
    assert await ledger.check() == []


async def test_check_finds_a_balance_that_does_not_match_its_journal(url: str) -> None:
    async with opened(url) as ledger:
        await funded(ledger)
    await raw_sql(url, "UPDATE accounts SET balance = balance + 1")
    async with opened(url) as ledger:
        [problem] = await ledger.check()
        assert problem.account_id == "acme" and "journal" in problem.message


async def test_check_names_rows_whose_account_does_not_exist(url: str) -> None:
    """On PostgreSQL the tables every call writes keep their account without a foreign key: a row
    written behind the ledger's back for an account that is not there is found by the check."""
    async with opened(url) as ledger:
        await funded(ledger)
    await raw_sql(
        url,
        "INSERT INTO journal (account_id, at, entry, amount, reference, balance_after)"
        " VALUES ('ghost', 1, 'topup', 5, 'x', 5)",
    )
    await raw_sql(
        url,
        "INSERT INTO activity_days (account_id, day, ext, calls, seconds, cost)"
        " VALUES ('ghost', '2026-12-06', '201', 1, 60, 0)",
    )
    async with opened(url) as ledger:
        problems = sorted((p.account_id, p.message) for p in await ledger.check())
    assert problems == [
        ("ghost", "rows of activity_days name this account, which does not exist"),
        ("ghost", "rows of journal name this account, which does not exist"),
    ]


async def test_calls_of_an_account_that_does_not_exist_write_nothing_in_a_batch(ledger: Ledger) -> None:
    """What the foreign keys also guarded: every writer finds the account first. Reservations sent
    at once (one batch on PostgreSQL) with some for an unknown account: those are refused, the rest
    are held and settled, and no row names the unknown account."""
    await funded(ledger, 10 * EUR)
    names = ["acme" if i % 3 else "ghost" for i in range(12)]
    held = await asyncio.gather(*(ledger.reserve(f"c{i}", a, "201", EUR // 10, now=NOW) for i, a in enumerate(names)))
    assert [(r.ok, r.refusal) for r in held] == [
        (True, None) if a == "acme" else (False, Refusal.UNKNOWN_ACCOUNT) for a in names
    ]
    settled = await asyncio.gather(*(ledger.settle(f"c{i}", 1000, now=NOW + 60) for i in range(12)))
    assert [s.settled for s in settled] == [a == "acme" for a in names]
    assert {r.account_id for r in await ledger.activity("acme")} == {"acme"}
    assert len(await ledger.activity("acme")) == 8
    assert await ledger.check() == []


async def test_a_database_from_a_newer_version_is_refused_untouched(url: str) -> None:
    async with opened(url) as ledger:
        await funded(ledger)
    await raw_sql(url, "INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(SchemaTooNew, match="newer rating-engine"):
        async with opened(url):
            pass


async def test_a_reservation_held_after_its_caller_gave_up_is_handed_back(url: str) -> None:
    """The engine waits `answer_timeout` for a reservation, then tells the dialplan no. One that the
    database was still working on then, and takes once it is free, holds money for a call that
    will never be made: it is handed to `on_late_reservation` (the engine releases it through its
    spool), or, with no one to take it, released by the ledger itself. One refused, or given up on
    before its batch began, holds nothing and is not handed over."""
    async with opened(url) as ledger:
        await funded(ledger)
        late: list[str] = []
        ledger.on_late_reservation = late.append

        async def given_up(call_id: str, amount: int) -> None:
            async with write_lock_held(url, "acme"):
                waiting = asyncio.create_task(ledger.reserve(call_id, "acme", "201", amount, now=NOW))
                await asyncio.sleep(0.3)  # in its batch, waiting for the lock
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting

        await given_up("c1", EUR)
        assert await until(lambda: late == ["c1"])
        assert ledger.late_reservations == 1
        [held] = await ledger.reservations()  # the taker's to release
        assert (held.call_id, held.amount) == ("c1", EUR)
        assert await ledger.release("c1", now=NOW)

        await given_up("c2", 11 * EUR)  # more than the balance: refused, nothing held
        await asyncio.sleep(0.3)
        assert late == ["c1"] and ledger.late_reservations == 1

        ledger.on_late_reservation = None
        await given_up("c3", 2 * EUR)
        assert await until(lambda: ledger.late_reservations == 2)
        assert await until_settled(ledger)  # released by the ledger itself
        account = await ledger.account("acme")
        assert (account.balance, account.reserved) == (10 * EUR, 0)
        assert await ledger.activity("acme") == [] and await ledger.check() == []


async def test_each_batch_is_timed_and_a_slow_one_is_said(url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A slow answer must say where it waited: a ledger batch held up (a stalled disk, a locked row)
    shows in `rating_ledger_batch_seconds` and, from `SLOW_BATCH`, in a log line."""
    from rating_engine.ledger.base import SLOW_BATCH

    caplog.set_level(logging.WARNING, logger="rating_engine.ledger")
    async with opened(url) as ledger:
        await funded(ledger)
        assert (await ledger.reserve("quick", "acme", "201", EUR, now=NOW)).ok
        quick = ledger.batch_seconds.n
        assert quick >= 1 and not [r for r in caplog.records if r.getMessage() == "a ledger batch was slow"]
        async with write_lock_held(url, "acme"):
            waiting = asyncio.create_task(ledger.reserve("held", "acme", "201", EUR, now=NOW))
            await asyncio.sleep(SLOW_BATCH + 0.2)
        assert (await waiting).ok
    [slow] = [r for r in caplog.records if r.getMessage() == "a ledger batch was slow"]
    assert slow.seconds >= SLOW_BATCH and slow.operations == 1  # type: ignore[attr-defined]
    assert observed_above(ledger.batch_seconds, 1.0) >= 1  # the held batch, in a bucket above 1 s
