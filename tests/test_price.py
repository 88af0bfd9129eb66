import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rating_engine.rating.price import (
    UNLIMITED_SECONDS,
    Price,
    PriceColumns,
    charged_seconds,
    cost,
    cost_array,
    max_seconds,
    max_seconds_array,
)

from .helpers import reference_cost

prices = st.builds(
    Price,
    per_minute=st.integers(0, 5_000_000),
    connect_fee=st.integers(0, 2_000_000),
    initial=st.sampled_from([1, 6, 30, 60, 90]),
    increment=st.sampled_from([1, 6, 30, 60]),
    minimum=st.integers(0, 3_000_000),
)
budgets = st.integers(0, 200_000_000)
seconds = st.integers(0, 100_000)


def test_the_three_usual_billing_schemes() -> None:
    per_min = Price(per_minute=600_000, initial=60, increment=60)
    thirty_six = Price(per_minute=600_000, initial=30, increment=6)
    per_sec = Price(per_minute=600_000, initial=1, increment=1)
    assert [charged_seconds(s, per_min) for s in (1, 60, 61)] == [60, 60, 120]
    assert [charged_seconds(s, thirty_six) for s in (1, 30, 31, 37)] == [30, 30, 36, 42]
    assert [cost(s, per_sec) for s in (1, 59, 60)] == [10_000, 590_000, 600_000]


def test_connect_fee_and_minimum_apply_to_answered_calls_only() -> None:
    p = Price(per_minute=60_000, connect_fee=150_000, initial=1, increment=1, minimum=200_000)
    assert cost(0, p) == 0
    assert cost(1, p) == 200_000  # 150_000 + 1_000 is below the minimum
    assert cost(120, p) == 150_000 + 120_000


def test_fractions_of_a_micro_unit_round_up() -> None:
    assert cost(1, Price(per_minute=1, initial=1, increment=1)) == 1


@given(seconds, prices)
def test_cost_matches_the_decimal_reference(s: int, p: Price) -> None:
    assert cost(s, p) == reference_cost(s, p)


@given(budgets, prices)
def test_max_seconds_is_the_exact_inverse_of_cost(b: int, p: Price) -> None:
    s = max_seconds(b, p)
    assert cost(s, p) <= b
    if s < UNLIMITED_SECONDS:
        assert b < cost(s + 1, p)


@given(seconds, seconds, prices)
def test_cost_never_decreases_with_time(a: int, b: int, p: Price) -> None:
    lo, hi = sorted((a, b))
    assert cost(lo, p) <= cost(hi, p)


@given(budgets, budgets, prices)
def test_more_budget_never_buys_less_time(a: int, b: int, p: Price) -> None:
    lo, hi = sorted((a, b))
    assert max_seconds(lo, p) <= max_seconds(hi, p)


@given(prices)
def test_unanswered_calls_are_free(p: Price) -> None:
    assert cost(0, p) == 0
    assert max_seconds(0, p) >= 0


@given(st.lists(st.tuples(seconds, budgets, prices), min_size=1, max_size=60))
def test_vectorized_equals_one_by_one(calls: list[tuple[int, int, Price]]) -> None:
    cols = PriceColumns.from_prices([p for _, _, p in calls])
    secs = np.array([s for s, _, _ in calls], dtype=np.int64)
    buds = np.array([b for _, b, _ in calls], dtype=np.int64)
    assert cost_array(secs, cols).tolist() == [cost(s, p) for s, _, p in calls]
    assert max_seconds_array(buds, cols).tolist() == [max_seconds(b, p) for _, b, p in calls]


def test_price_refuses_zero_increment_and_negative_amounts() -> None:
    import pytest

    with pytest.raises(ValueError):
        Price(per_minute=1, increment=0)
    with pytest.raises(ValueError):
        Price(per_minute=-1)
