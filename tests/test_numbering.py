import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating_engine.numbering import Kind, classify, fast_parse


@pytest.mark.parametrize(
    ("dialed", "country", "e164", "region", "kind"),
    [
        ("0612345678", "FR", "+33612345678", "FR", Kind.MOBILE),
        ("06 12 34 56 78", "FR", "+33612345678", "FR", Kind.MOBILE),
        ("01-44-55-66-77", "FR", "+33144556677", "FR", Kind.FIXED),
        ("0899123456", "FR", "+33899123456", "FR", Kind.PREMIUM),
        ("0033899123456", "FR", "+33899123456", "FR", Kind.PREMIUM),
        ("+33 899 123 456", "FR", "+33899123456", "FR", Kind.PREMIUM),
        ("0800123456", "FR", "+33800123456", "FR", Kind.TOLL_FREE),
        ("0810123456", "FR", "+33810123456", "FR", Kind.SHARED_COST),
        ("0912345678", "FR", "+33912345678", "FR", Kind.VOIP),
        ("+1 212 555 0100", "FR", "+12125550100", "US", Kind.FIXED_OR_MOBILE),
        ("011 44 20 7946 0000", "US", "+442079460000", "GB", Kind.FIXED),
        ("(212) 555-0100", "US", "+12125550100", "US", Kind.FIXED_OR_MOBILE),
        ("+44 7911 123456", "FR", "+447911123456", "GG", Kind.MOBILE),
        ("+49 30 1234567", "FR", "+49301234567", "DE", Kind.FIXED),
        ("+39 06 4567 8901", "FR", "+390645678901", "IT", Kind.FIXED),
    ],
)
def test_what_people_dial_is_read_as_e164_region_and_kind(
    dialed: str, country: str, e164: str, region: str, kind: Kind
) -> None:
    c = classify(dialed, country)
    assert (c.e164, c.region, c.kind) == (e164, region, kind)
    assert c.valid and c.digits == e164[1:]


@pytest.mark.parametrize(
    ("dialed", "country"),
    [("112", "FR"), ("15", "FR"), ("17", "FR"), ("18", "FR"), ("911", "US"), ("112", "DE"), ("999", "GB")],
)
def test_emergency_numbers_are_recognised(dialed: str, country: str) -> None:
    c = classify(dialed, country)
    assert c.kind is Kind.EMERGENCY
    assert c.e164 == dialed and c.digits == ""


def test_directory_short_codes_carry_their_expected_cost() -> None:
    c = classify("118712", "FR")
    assert c.kind is Kind.SHORT_CODE
    assert c.short_cost == "premium_rate"


@pytest.mark.parametrize(
    ("dialed", "reason"),
    [
        ("", "empty number"),
        ("abc", "not a dialable number"),
        ("06*12", "not a dialable number"),
        ("+999123", "unknown country code"),
        ("0123", "impossible number length"),
        ("0612345678901234567", "too long"),
        ("+33 612", "impossible number length"),
    ],
)
def test_invalid_input_gives_a_reason_not_an_exception(dialed: str, reason: str) -> None:
    c = classify(dialed, "FR")
    assert c.kind is Kind.INVALID and not c.valid
    assert c.reason == reason


@given(st.text(max_size=30))
def test_classify_never_raises(text: str) -> None:
    c = classify(text, "FR")
    assert c.valid or c.reason


@given(st.from_regex(r"\+?[0-9 ]{0,20}", fullmatch=True), st.sampled_from(["FR", "US", "DE", "GB"]))
def test_valid_results_are_e164_or_short(text: str, country: str) -> None:
    c = classify(text, country)
    if c.valid:
        assert (c.e164.startswith("+") and c.e164[1:].isdigit()) or c.kind in (
            Kind.EMERGENCY,
            Kind.SHORT_CODE,
        )


forms = st.one_of(
    st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),
    st.from_regex(r"00[1-9][0-9]{6,14}", fullmatch=True),
    st.from_regex(r"011[1-9][0-9]{6,14}", fullmatch=True),
    st.from_regex(r"0[1-9][0-9]{7,9}", fullmatch=True),
    st.from_regex(r"1[2-9][0-9]{9}", fullmatch=True),
    st.from_regex(r"\+(7|44|49|54|55|52|39|81)[0-9]{6,12}", fullmatch=True),
    st.from_regex(r"(\+|00|011)0[0-9]{6,12}", fullmatch=True),
)


@settings(max_examples=2000)
@given(forms, st.sampled_from(["FR", "US", "DE", "GB", "IT", "AR", "BR", "RU", "JP", "MX"]))
def test_fast_parse_agrees_with_phonenumbers_parse_whenever_it_answers(text: str, country: str) -> None:
    fast = fast_parse(text, country)
    if fast is None:
        return
    slow = phonenumbers.parse(text, country)
    assert (fast.country_code, fast.national_number) == (slow.country_code, slow.national_number)
    assert bool(slow.italian_leading_zero) is False


def test_fast_parse_answers_the_common_forms() -> None:
    assert fast_parse("+33612345678", "FR") is not None
    assert fast_parse("0033612345678", "FR") is not None
    assert fast_parse("0612345678", "FR") is not None
    assert fast_parse("+390645678901", "FR") is None  # Italian leading zero: parse decides
    assert fast_parse("+78121234567", "FR") is None  # Russia's national prefix 8 could be stripped
