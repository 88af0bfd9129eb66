from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rating_engine.errors import InvalidAmount
from rating_engine.money import MICRO, format_amount, format_money, parse_amount


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("0", 0),
        ("12", 12 * MICRO),
        ("0.0125", 12_500),
        ("1.5", 1_500_000),
        (".5", 500_000),
        ("3.", 3 * MICRO),
        ("0.000001", 1),
        (" 7.25 ", 7_250_000),
        ("1.2500000", 1_250_000),
    ],
)
def test_parse_amount_is_exact(text: str, micro: int) -> None:
    assert parse_amount(text) == micro


@pytest.mark.parametrize(
    "text", ["1e-3", "1E3", "1,5", "", " ", "abc", "0.0000001", "1.2.3", "+", "-", ".", "nan", "inf", "0x10"]
)
def test_parse_amount_refuses_what_is_not_an_exact_decimal(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(text)


def test_negative_amounts_need_permission() -> None:
    with pytest.raises(InvalidAmount, match="negative"):
        parse_amount("-1")
    assert parse_amount("-1.5", allow_negative=True) == -1_500_000


def test_float_is_refused_not_converted() -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("micro", "currency", "text"),
    [
        (1_500_000, "EUR", "1.50"),
        (12_345, "EUR", "0.012345"),
        (0, "EUR", "0.00"),
        (-2_000_000, "USD", "-2.00"),
        (5 * MICRO, "JPY", "5"),
        (1_500_000, "JPY", "1.5"),
        (1_234_000, "KWD", "1.234"),
    ],
)
def test_format_amount_uses_minor_units_and_never_rounds(micro: int, currency: str, text: str) -> None:
    assert format_amount(micro, currency) == text


def test_format_money_names_the_currency() -> None:
    assert format_money(250_000, "EUR") == "0.25 EUR"


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(["EUR", "JPY", "KWD"]))
def test_format_then_parse_round_trips(micro: int, currency: str) -> None:
    assert parse_amount(format_amount(micro, currency), allow_negative=True) == micro


@given(st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False))
def test_parse_agrees_with_decimal(value: Decimal) -> None:
    assert parse_amount(str(value)) == int(value * MICRO)
