"""The rules the ledger keeps in two places: in Python for sizing a call, in SQL as the guard.

`Extension.cap_left` tells the engine how much the caps still allow; `programs._take` enforces
the caps in SQL. They must agree on every extension state, or the engine would offer calls
the ledger then refuses (or refuse calls it could take).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from rating_engine.contract import Refusal
from rating_engine.ledger import programs as P
from rating_engine.ledger.models import Extension, ExtensionSettings, periods
from rating_engine.ledger.schema import migrations, statements
from rating_engine.ledger.sqlite import run_program_sync

NOW = 1_795_535_109  # 2026-11-24
DAY = 86_400
# UTC, whole-hour offsets with summer time, and the odd ones: -3:30, +5:45, +12:45 (+13:45 in summer)
ZONES = ["UTC", "Europe/Paris", "America/New_York", "America/St_Johns", "Asia/Kathmandu", "Pacific/Chatham"]


def _database() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = sqlite3.Row
    for _, script in migrations("sqlite"):
        for sql in statements(script):
            conn.execute(sql)
    conn.execute(
        "INSERT INTO accounts (id, plan, currency, balance, created_at) VALUES ('acme', 'p', 'EUR', ?, 0)", (10**15,)
    )
    return conn


_DB = _database()

caps = st.none() | st.integers(0, 10**7)
spent = st.integers(0, 10**7)


@settings(max_examples=400)
@given(
    daily=caps,
    monthly=caps,
    reserved=spent,
    day_spent=spent,
    month_spent=spent,
    stale_day=st.booleans(),
    stale_month=st.booleans(),
    amount=st.integers(1, 2 * 10**7),
    later=st.integers(0, 40 * DAY),
    timezone=st.sampled_from(ZONES),
    new_call=st.booleans(),
)
def test_cap_left_agrees_with_the_sql_guard(
    daily: int | None,
    monthly: int | None,
    reserved: int,
    day_spent: int,
    month_spent: int,
    stale_day: bool,
    stale_month: bool,
    amount: int,
    later: int,
    timezone: str,
    new_call: bool,
) -> None:
    day, month = periods(NOW, timezone)
    stored = Extension(
        "acme",
        "201",
        ExtensionSettings(daily_cap=daily, monthly_cap=monthly),
        reserved,
        "2026-01-01" if stale_day else day,
        day_spent,
        "2026-01" if stale_month else month,
        month_spent,
    )
    cur = _DB.cursor()
    cur.execute("BEGIN")
    try:
        cur.execute(
            "INSERT INTO extensions (account_id, ext, daily_cap, monthly_cap, reserved, day, day_spent, month,"
            " month_spent) VALUES ('acme', '201', ?, ?, ?, ?, ?, ?, ?)",
            (daily, monthly, reserved, stored.day, day_spent, stored.month, month_spent),
        )
        refusal, _ = run_program_sync(cur, P._take("acme", "201", amount, NOW + later, timezone, new_call))
    finally:
        cur.execute("ROLLBACK")
    left = stored.cap_left(NOW + later, timezone)
    assert (refusal is None) == (left is None or amount <= left)
    assert refusal in (None, Refusal.CAP_REACHED)


@given(st.integers(0, 4 * 10**9))
def test_periods_are_the_utc_day_and_month(now: int) -> None:
    d = datetime.fromtimestamp(now, UTC)
    assert periods(now) == (d.strftime("%Y-%m-%d"), d.strftime("%Y-%m"))


@settings(max_examples=2000)
@given(st.integers(1_000_000_000, 4 * 10**9), st.sampled_from(ZONES))
def test_periods_are_the_local_day_and_month_of_the_accounts_time_zone(now: int, timezone: str) -> None:
    d = datetime.fromtimestamp(now, ZoneInfo(timezone))
    assert periods(now, timezone) == (d.strftime("%Y-%m-%d"), d.strftime("%Y-%m"))


def test_a_french_office_starts_its_day_at_local_midnight() -> None:
    winter_2330_utc = 1_795_563_000  # 2026-11-24 23:30 UTC = 2026-11-25 00:30 in Paris
    assert periods(winter_2330_utc) == ("2026-11-24", "2026-11")
    assert periods(winter_2330_utc, "Europe/Paris") == ("2026-11-25", "2026-11")


@given(
    st.integers(-(10**12), 10**12),
    st.integers(0, 10**12),
    st.integers(1, 10**12),
    st.sampled_from(["EUR", "JPY", "BHD", "USD"]),
)
def test_an_automatic_top_up_reaches_threshold_plus_amount_in_whole_minor_units(
    balance: int, threshold: int, topup_amount: int, currency: str
) -> None:
    from rating_engine.ledger.programs import topup_to_target
    from rating_engine.money import MICRO, minor_units

    unit = MICRO // 10 ** minor_units(currency)
    amount = topup_to_target(balance, threshold, topup_amount, currency)
    assert amount % unit == 0 and amount >= topup_amount
    assert balance + amount >= threshold + topup_amount  # never short of the target
    assert amount - unit < max(threshold + topup_amount - balance, topup_amount)  # and at most a unit over
