"""Time bands: the calendar file, calls cut at band changes, and both paths priced alike."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating_engine.calls import Answered, AuthorizeRequest, HungUp
from rating_engine.config import EngineSection
from rating_engine.contract import Reason
from rating_engine.engine import Engine
from rating_engine.errors import TariffErrors
from rating_engine.ledger import AccountSettings, Ledger, make_ledger
from rating_engine.rating.bands import parse_bands
from rating_engine.rating.batch import rate_batch
from rating_engine.rating.catalog import TariffStore, load_tariffs
from rating_engine.rating.decision import decide
from rating_engine.rating.price import UNLIMITED_SECONDS, Fare, Price, cost, max_seconds

from .helpers import EUR, reference_cost
from .test_engine import FakePbx, ManualClock
from .test_price import prices

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")
SAMPLE_BANDS = (ROOT / "tariffs" / "bands-fr.csv").read_text(encoding="utf-8").splitlines()


@st.composite
def fares(draw: st.DrawFn) -> Fare:
    offsets = sorted(draw(st.sets(st.integers(1, 3000), max_size=4)))
    return Fare(tuple((o, draw(prices)) for o in [0, *offsets]))


def reference_fare_cost(seconds: int, fare: Fare) -> int:
    """The per-segment rule of docs/bands.md in Decimal, written apart from price.py."""
    if seconds <= 0:
        return 0
    total = Decimal(0)
    bounds = [o for o, _p in fare.pieces[1:]] + [math.inf]
    for k, ((start, p), end) in enumerate(zip(fare.pieces, bounds, strict=True)):
        if start >= seconds:
            break
        length = min(end, seconds) - start
        if k == 0:
            charged = max(p.initial, p.initial + math.ceil(Decimal(length - p.initial) / p.increment) * p.increment)
        else:
            charged = math.ceil(Decimal(length) / p.increment) * p.increment
        total += math.ceil(Decimal(charged) * p.per_minute / 60)
    first = fare.pieces[0][1]
    return int(max(Decimal(first.minimum), first.connect_fee + total))


@given(prices, st.integers(0, 100_000))
def test_one_piece_is_todays_price(p: Price, s: int) -> None:
    assert Fare.flat(p).cost(s) == cost(s, p) == reference_cost(s, p)


@settings(max_examples=400)
@given(fares(), st.integers(0, 8000))
def test_the_fare_is_the_decimal_reading_and_never_falls(fare: Fare, s: int) -> None:
    assert fare.cost(s) == reference_fare_cost(s, fare)
    assert fare.cost(s + 1) >= fare.cost(s)


@settings(max_examples=400)
@given(fares(), st.integers(0, 300_000_000))
def test_max_seconds_is_the_exact_inverse_across_segments(fare: Fare, budget: int) -> None:
    m = fare.max_seconds(budget)
    if m == 0:
        assert fare.cost(1) > budget
        return
    assert fare.cost(m) <= budget
    assert m == UNLIMITED_SECONDS or fare.cost(m + 1) > budget


@given(prices, st.integers(0, 300_000_000))
def test_max_seconds_of_one_piece_is_todays(p: Price, budget: int) -> None:
    assert Fare.flat(p).max_seconds(budget) == max_seconds(budget, p)


def test_each_segment_is_rounded_on_its_own() -> None:
    peak = Price(per_minute=600_000, initial=60, increment=60)
    off = Price(per_minute=60_000, initial=30, increment=1)
    fare = Fare(((0, peak), (30, off)))  # 30 s of peak left when the call starts
    assert [(s.seconds, s.charged) for s in fare.segments(95)] == [(30, 60), (65, 65)]
    assert fare.cost(95) == 600_000 + 65_000


# --- the calendar ------------------------------------------------------------------------------


def _local(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=PARIS).timestamp())


def test_the_sample_calendar_in_paris_time() -> None:
    bands = parse_bands(SAMPLE_BANDS, "bands-fr.csv", [date(2026, 12, 25)])
    name = bands.names.__getitem__
    at = bands.band_at
    assert name(at(_local(2026, 12, 3, 7, 59, 59), "Europe/Paris")) == "offpeak"
    assert name(at(_local(2026, 12, 3, 8), "Europe/Paris")) == "peak"
    assert name(at(_local(2026, 12, 3, 18, 59, 59), "Europe/Paris")) == "peak"
    assert name(at(_local(2026, 12, 3, 19), "Europe/Paris")) == "offpeak"
    assert name(at(_local(2026, 12, 5, 12), "Europe/Paris")) == "weekend"
    assert name(at(_local(2026, 12, 25, 12), "Europe/Paris")) == "holiday"
    assert name(at(_local(2027, 3, 30, 8), "Europe/Paris")) == "peak"  # summer time: 06:00 UTC
    assert name(at(_local(2026, 12, 3, 8), "America/New_York")) == "offpeak"  # 02:00 in New York


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "peak,mon-fri,08:00,19:00\noff,mon-sun,00:00,08:00\noff,mon-sun,18:00,24:00\nw,sat-sun,08:00,18:00",
            3,
            "overlaps line 1",
        ),
        (
            "peak,mon-sun,08:00,19:00\noff,mon-sun,00:00,08:00\noff,mon-sun,20:00,24:00",
            3,
            "no band from 19:00 to 20:00",
        ),
        ("peak,mon-sun,00:00,19:00", 1, "no band from 19:00 to 24:00"),
        ("peak,mon-sunday,00:00,24:00", 1, "days must be"),
        ("peak,mon-sun,8h,24:00", 1, "hours must be HH:MM"),
        ("peak,mon-sun,19:00,08:00", 1, "across midnight is two lines"),
        ("peak,mon-sun,00:00,24:00,extra", 1, "expected 4 columns"),
        ("all,mon-sun,00:00,24:00\nh,holiday,00:00,12:00", 2, "holidays: no band from 12:00 to 24:00"),
    ],
)
def test_overlapping_and_gapped_bands_are_reported_with_their_line(text: str, line: int, message: str) -> None:
    with pytest.raises(TariffErrors) as exc:
        parse_bands(text.splitlines(), "b.csv")
    assert any(e.line == line and message in e.message and e.file == "b.csv" for e in exc.value.errors), exc.value


def test_holidays_without_a_holiday_line_are_an_error() -> None:
    with pytest.raises(TariffErrors, match="no line covers `holiday`"):
        parse_bands(["all,mon-sun,00:00,24:00"], "b.csv", [date(2026, 12, 25)])


def _plan(tmp_path: Path, extra: str, bands: str = "") -> Path:
    for name in ("world.csv", "world-offpeak.csv"):
        (tmp_path / name).write_text((ROOT / "tariffs" / name).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "bands.csv").write_text(bands or "\n".join(SAMPLE_BANDS), encoding="utf-8")
    plan = tmp_path / "p.toml"
    plan.write_text(f'name = "p"\ncountry = "FR"\ncurrency = "EUR"\ndeck = "world.csv"\n{extra}', encoding="utf-8")
    return plan


@pytest.mark.parametrize(
    ("extra", "message", "line"),
    [
        ('timezone = "Mars/Olympus"\n', "unknown time zone", 0),
        ('[bands]\nfile = "bands.csv"\nholidays = ["2026-02-30"]\n', "'2026-02-30' is not a date", 7),
        ('[bands]\nfile = "bands.csv"\n[bands.decks]\nlunch = "world.csv"\n', "no band 'lunch'", 0),
        ('[bands]\nfile = "bands.csv"\n[bands.decks]\nweekend = "nope.csv"\n', "deck file for 'weekend' not found", 0),
        ('[bands]\nfile = "missing.csv"\n', "cannot read", 0),
    ],
)
def test_a_plan_s_bands_are_checked_with_the_plan(tmp_path: Path, extra: str, message: str, line: int) -> None:
    with pytest.raises(TariffErrors) as exc:
        load_tariffs([_plan(tmp_path, extra)])
    assert any(message in e.message and e.line == line for e in exc.value.errors), exc.value


def test_every_band_s_deck_prices_the_same_prefixes(tmp_path: Path) -> None:
    plan = _plan(tmp_path, '[bands]\nfile = "bands.csv"\n[bands.decks]\noffpeak = "world-offpeak.csv"\n')
    off = tmp_path / "world-offpeak.csv"
    lines = off.read_text(encoding="utf-8").splitlines()
    dropped = next(i for i, x in enumerate(lines) if x.startswith("33,"))
    off.write_text("\n".join(lines[:dropped] + lines[dropped + 1 :]) + "\n", encoding="utf-8")
    with pytest.raises(TariffErrors) as exc:
        load_tariffs([plan])
    n = next(i for i, x in enumerate(lines, start=1) if x.startswith("33,"))
    assert any(
        "prefix 33 has no price in band 'offpeak'" in e.message and (e.file, e.line) == (str(tmp_path / "world.csv"), n)
        for e in exc.value.errors
    ), exc.value


# --- both paths, on the sample plan with bands ---------------------------------------------------


@pytest.fixture(scope="module")
def banded():  # type: ignore[no-untyped-def]
    tariffs = load_tariffs([ROOT / "tariffs" / "office-fr-bands.toml", ROOT / "tariffs" / "office-fr.toml"])
    plan = tariffs.plan("office-fr-bands")
    return plan, tariffs.rates_for(plan), tariffs


def test_a_quota_granted_before_19_00_is_sized_with_the_change_in_view(banded) -> None:  # type: ignore[no-untyped-def]
    plan, rates, tariffs = banded
    at = _local(2026, 12, 3, 18, 59, 30)
    d = decide(plan, rates, "+12125550100", at, budget=1_000_000)
    office = tariffs.plan("office-fr")
    flat = decide(office, tariffs.rates_for(office), "+12125550100", at, budget=1_000_000)
    assert d.band == "peak" and d.fare is not None and len(d.fare.pieces) > 1
    assert d.fare.pieces[1][0] == 30  # 19:00 is 30 s away
    assert d.max_seconds is not None and flat.max_seconds is not None
    assert d.max_seconds > flat.max_seconds  # the off-peak minutes make the same money last longer
    assert d.fare.cost(d.max_seconds) <= 1_000_000 < d.fare.cost(d.max_seconds + 1)


def test_effective_dates_work_in_every_band(banded) -> None:  # type: ignore[no-untyped-def]
    plan, rates, _t = banded
    example = phonenumbers.example_number_for_type("GB", phonenumbers.PhoneNumberType.PREMIUM_RATE)
    assert example is not None
    premium = phonenumbers.format_number(
        example, phonenumbers.PhoneNumberFormat.E164
    )  # priced by row 44, whose price changes on 2027-01-01
    before = decide(plan, rates, premium, _local(2026, 12, 31, 21))  # offpeak, old UK price
    after = decide(plan, rates, premium, _local(2027, 1, 2, 12))  # weekend, the new one
    assert before.band == "offpeak" and after.band == "weekend"
    assert before.row is not None and after.row is not None
    assert after.row.price.per_minute < before.row.price.per_minute


EDGES = [_local(2026, 12, 3, 19), _local(2026, 12, 4, 8), _local(2026, 12, 5, 0), _local(2026, 12, 7, 8)]
NUMBERS = [
    "+12125550100",
    "+447911123456",
    "+4915123456789",
    "0899123456",
    "+8613812345678",
    "3615",
    "112",
    "0612345678",
]


@settings(max_examples=120, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(NUMBERS),
            st.one_of(
                st.integers(_local(2026, 12, 3, 18, 40), _local(2026, 12, 7, 8, 10)),  # Thursday evening to Monday
                st.builds(lambda edge, back: edge - back, st.sampled_from(EDGES), st.integers(0, 150)),
            ),
            st.one_of(st.integers(0, 5000), st.integers(0, 200)),
        ),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([None, "Europe/Paris", "America/New_York", "Asia/Tokyo"]),
)
def test_batch_equals_one_by_one_across_bands(banded, calls, tz) -> None:  # type: ignore[no-untyped-def]
    plan, rates, _t = banded
    res = rate_batch(
        plan, rates, [c[0] for c in calls], np.array([c[1] for c in calls]), np.array([c[2] for c in calls]), tz=tz
    )
    for i, (number, at, secs) in enumerate(calls):
        d = decide(plan, rates, number, at, tz=tz)
        assert (res.reason(i), int(res.rows[i])) == (d.reason, d.row_index)
        want = d.fare.cost(secs) if d.charged and d.fare is not None else 0
        assert int(res.costs[i]) == want, (number, at, secs)
        if d.charged and d.fare is not None:
            assert int(res.charged_seconds[i]) == sum(s.charged for s in d.fare.segments(secs))
            assert rates.band_name(int(res.bands[i])) == d.band


# --- the engine: a call priced from its answer, never beyond what it holds ---------------------


@asynccontextmanager
async def banded_engine(balance: int, start: float) -> AsyncIterator[tuple[Engine, Ledger, ManualClock, FakePbx]]:
    ledger = make_ledger("sqlite:///")
    await ledger.open()
    await ledger.create_account("acme", AccountSettings("office-fr-bands", "EUR", timezone="Europe/Paris"))
    await ledger.topup("acme", balance, "opening")
    clock, pbx = ManualClock(start), FakePbx()
    settings = EngineSection(quota_seconds=60, renew_margin=10, warning_seconds=30, final_warning_seconds=10)
    engine = Engine(TariffStore([ROOT / "tariffs" / "office-fr-bands.toml"]), ledger, clock, settings, pbx)
    try:
        yield engine, ledger, clock, pbx
    finally:
        await ledger.close()


async def test_a_call_across_19_00_is_billed_per_segment_from_its_answer(banded) -> None:  # type: ignore[no-untyped-def]
    _plan, rates, _t = banded
    start = _local(2026, 12, 3, 18, 58, 50)
    async with banded_engine(10 * EUR, start) as (engine, ledger, clock, pbx):
        uid = "1796000000.1"
        a = await engine.authorize(AuthorizeRequest(uid, "+12125550100", "201", "acme"))
        assert a.reason is Reason.CHARGED
        clock.advance(20)  # answered at 18:59:10: 50 s of peak, then off-peak
        await engine.handle(Answered(uid, start + 20, f"PJSIP/201-{uid}", f"PJSIP/trunk-{uid}", f"{uid}-b"))
        await pbx.next(), await pbx.next()
        clock.advance(45)
        assert (await pbx.next())[0] == "timeout"  # renewed across the change
        await pbx.next()
        clock.advance(55)
        await engine.handle(HungUp(uid, start + 120))
        [row] = await ledger.activity("acme")
        fare = rates.fare_at("12125550100", start + 20, "Europe/Paris")
        assert fare is not None and row.billable_seconds == 100 and row.cost == fare.cost(100)
        assert [s.seconds for s in fare.segments(100)] == [50, 50]
        assert row.cost < cost(100, fare.first)  # the off-peak minutes are cheaper
        assert (await ledger.account("acme")).balance == 10 * EUR - row.cost and await ledger.check() == []


async def test_answered_in_a_dearer_band_the_call_gets_what_its_reservation_pays(banded) -> None:  # type: ignore[no-untyped-def]
    _plan, rates, _t = banded
    start = _local(2026, 12, 3, 7, 59, 30)  # off-peak; the answer comes at peak
    fare_then = rates.fare_at("447911123456", start, "Europe/Paris")
    assert fare_then is not None
    balance = fare_then.cost(60)  # pays a minute at the authorization's fare
    async with banded_engine(balance, start) as (engine, ledger, clock, pbx):
        uid = "1796000000.2"
        a = await engine.authorize(AuthorizeRequest(uid, "+447911123456", "201", "acme"))
        assert a.reason is Reason.CHARGED and a.quota_seconds == 60
        clock.advance(40)
        await engine.handle(Answered(uid, start + 40, f"PJSIP/201-{uid}", f"PJSIP/trunk-{uid}", f"{uid}-b"))
        call = engine.calls[a.call_id]
        peak = rates.fare_at("447911123456", start + 40, "Europe/Paris")
        assert peak is not None and call.fare == peak
        assert call.granted < 60 and peak.cost(call.granted) <= call.reserved < peak.cost(call.granted + 1)
        assert {(await pbx.next())[2], (await pbx.next())[2]} == {call.granted}
        clock.advance(call.granted)
        await engine.handle(HungUp(uid, start + 40 + call.granted))
        [row] = await ledger.activity("acme")
        assert row.cost <= balance and not row.overdraft and await ledger.check() == []


async def test_a_reservation_that_cannot_pay_the_answer_s_first_increment_keeps_its_fare(banded) -> None:  # type: ignore[no-untyped-def]
    _plan, rates, _t = banded
    start = _local(2026, 12, 3, 7, 59, 50)
    before = rates.fare_at("447911123456", start, "Europe/Paris")
    after = rates.fare_at("447911123456", start + 20, "Europe/Paris")
    assert before is not None and after is not None and after.cost(1) > before.cost(1)
    async with banded_engine(before.cost(1), start) as (engine, ledger, clock, pbx):  # one off-peak increment
        uid = "1796000000.3"
        a = await engine.authorize(AuthorizeRequest(uid, "+447911123456", "201", "acme"))
        assert a.reason is Reason.CHARGED
        clock.advance(20)
        await engine.handle(Answered(uid, start + 20, f"PJSIP/201-{uid}", f"PJSIP/trunk-{uid}", f"{uid}-b"))
        call = engine.calls[a.call_id]
        assert call.fare == before and call.fare.cost(call.granted) <= call.reserved
        await pbx.next(), await pbx.next()
        clock.advance(call.granted)
        await engine.handle(HungUp(uid, start + 20 + call.granted))
        [row] = await ledger.activity("acme")
        assert not row.overdraft and (await ledger.account("acme")).balance >= 0


def test_a_call_s_fare_survives_a_restart_in_its_reservation_details(banded) -> None:  # type: ignore[no-untyped-def]
    import json

    from rating_engine.engine import Call, _call_from

    _plan, rates, _t = banded
    fare = rates.fare_at("12125550100", _local(2026, 12, 3, 18, 59, 30), "Europe/Paris")
    assert fare is not None and len(fare.pieces) > 2
    call = Call("n:1:2", "acme", "201", "+12125550100", "+12125550100", "fixed_or_mobile", "USA", fare, 60, 900, 1.0)
    back = _call_from("n:1:2", "acme", "201", 900, json.loads(call.details("n")))
    assert back.fare == fare and back.fare.cost(125) == fare.cost(125)
    old = json.loads(call.details("n"))
    del old["fare"]  # a reservation written before fares: its flat price
    assert _call_from("n:1:2", "acme", "201", 900, old).fare.pieces == ((0, fare.first),)


def test_a_calendar_of_one_band_prices_like_no_bands() -> None:
    """One band all week: a single change ever (its timeline once looped for ever looking for the next)."""
    bands = parse_bands(["all,mon-sun,00:00,24:00"], "b.csv")
    edges, names = bands.timeline("Europe/Paris", _local(2026, 12, 3, 12), 8 * 86400)
    assert names == [0] and len(edges) == 1 and edges[0] < _local(2026, 12, 3, 12)
    assert bands.band_at(_local(2027, 6, 1, 3), "Asia/Tokyo") == 0
