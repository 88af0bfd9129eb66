import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating_engine.contract import DestinationClass, Reason
from rating_engine.numbering import Kind
from rating_engine.rating.batch import rate_batch
from rating_engine.rating.catalog import Tariffs
from rating_engine.rating.decision import ExtensionRules, decide
from rating_engine.rating.price import cost

AT = 1_795_535_109  # 2026-11-24


@pytest.fixture(scope="module")
def office(tariffs: Tariffs):  # type: ignore[no-untyped-def]
    plan = tariffs.plan("office-fr")
    return plan, tariffs.table_for(plan)


@pytest.mark.parametrize(
    ("number", "allowed", "reason", "destination"),
    [
        ("0899123456", True, Reason.CHARGED, "France premium 0899"),
        ("0612345678", True, Reason.INCLUDED, None),
        ("112", True, Reason.EMERGENCY, None),
        ("+1 212 555 0100", True, Reason.CHARGED, "USA and Canada"),
        ("+49 30 1234567", True, Reason.INCLUDED, None),
        ("+49 151 23456789", True, Reason.CHARGED, "Germany mobile"),
        ("118712", True, Reason.CHARGED, "France directory 118"),
        ("+870 773 111 111", False, Reason.BLOCKED_DESTINATION, None),
        ("0123", False, Reason.INVALID_NUMBER, None),
    ],
)
def test_the_office_plan_decides(office, number: str, allowed: bool, reason: Reason, destination: str | None) -> None:  # type: ignore[no-untyped-def]
    plan, table = office
    d = decide(plan, table, number, AT)
    assert (d.allowed, d.reason) == (allowed, reason)
    assert (d.row.destination if d.row else None) == destination


def test_emergency_goes_through_whatever_the_rules_and_budget(office) -> None:  # type: ignore[no-untyped-def]
    plan, table = office
    d = decide(plan, table, "112", AT, ExtensionRules(chargeable=False, classes=frozenset()), budget=0)
    assert d.allowed and d.reason is Reason.EMERGENCY and d.max_seconds is None


def test_budget_gives_the_exact_max_seconds_or_insufficient_funds(office) -> None:  # type: ignore[no-untyped-def]
    plan, table = office
    d = decide(plan, table, "0899123456", AT, budget=5_000_000)
    assert d.allowed and d.max_seconds is not None and d.row is not None
    assert cost(d.max_seconds, d.row.price) <= 5_000_000 < cost(d.max_seconds + 1, d.row.price)
    poor = decide(plan, table, "0899123456", AT, budget=d.minimum_cost - 1)
    assert not poor.allowed and poor.reason is Reason.INSUFFICIENT_FUNDS


@pytest.mark.parametrize(
    ("classes", "number", "allowed"),
    [
        ({DestinationClass.NATIONAL}, "0899123456", False),
        ({DestinationClass.NATIONAL, DestinationClass.PREMIUM}, "0899123456", True),
        ({DestinationClass.INTERNATIONAL}, "+1 212 555 0100", True),
        ({DestinationClass.INTERNATIONAL}, "+49 151 23456789", False),
        ({DestinationClass.INTERNATIONAL, DestinationClass.MOBILE_ABROAD}, "+49 151 23456789", True),
        (set(), "0612345678", True),
    ],
)
def test_extension_classes_restrict_chargeable_calls_only(office, classes, number: str, allowed: bool) -> None:  # type: ignore[no-untyped-def]
    plan, table = office
    d = decide(plan, table, number, AT, ExtensionRules(classes=frozenset(classes)))
    assert d.allowed is allowed
    if not allowed:
        assert d.reason is Reason.EXTENSION_NOT_ALLOWED


def test_an_extension_without_chargeable_calls_still_calls_included_numbers(office) -> None:  # type: ignore[no-untyped-def]
    plan, table = office
    rules = ExtensionRules(chargeable=False)
    assert decide(plan, table, "0612345678", AT, rules).allowed
    assert decide(plan, table, "+1 212 555 0100", AT, rules).reason is Reason.EXTENSION_NOT_ALLOWED


SAMPLE = [
    "0899123456",
    "0612345678",
    "112",
    "+1 212 555 0100",
    "118712",
    "+447911123456",
    "0892123456",
    "+8816123456",
    "garbage",
    "0033 1 44 55 66 77",
    "+44 20 7946 0000",
    "3615",
    "+49 151 23456789",
    "+86 10 1234 5678",
    "0810123456",
]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(SAMPLE), st.integers(0, 4000), st.sampled_from([AT, 1_798_761_600])),
        min_size=1,
        max_size=50,
    )
)
def test_batch_equals_one_by_one(office, calls) -> None:  # type: ignore[no-untyped-def]
    plan, table = office
    res = rate_batch(
        plan, table, [c[0] for c in calls], np.array([c[2] for c in calls]), np.array([c[1] for c in calls])
    )
    for i, (number, secs, at) in enumerate(calls):
        d = decide(plan, table, number, at)
        assert res.reason(i) is d.reason
        assert int(res.rows[i]) == d.row_index
        assert int(res.costs[i]) == (cost(secs, d.row.price) if d.charged and d.row else 0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(SAMPLE), st.from_regex(r"(\+|00|0)?[1-9][0-9]{3,13}", fullmatch=True)),
            st.integers(0, 4000),
        ),
        min_size=1,
        max_size=60,
    ),
    st.booleans(),
    st.sets(st.sampled_from(list(DestinationClass))),
    st.lists(st.sampled_from(["33", "336", "3389", "1", "44", "4930", "0333615"]), max_size=3),
)
def test_batch_equals_one_by_one_under_extension_rules(office, calls, chargeable, classes, prefixes) -> None:  # type: ignore[no-untyped-def]
    """The batch decides per number class and applies blocked prefixes per call: same as one by one."""
    plan, table = office
    rules = ExtensionRules(chargeable, frozenset(classes), tuple(prefixes))
    res = rate_batch(plan, table, [c[0] for c in calls], AT, np.array([c[1] for c in calls]), rules)
    for i, (number, secs) in enumerate(calls):
        d = decide(plan, table, number, AT, rules)
        assert res.number(i) == d.number
        assert (res.reason(i), int(res.rows[i])) == (d.reason, d.row_index), number
        assert int(res.costs[i]) == (cost(secs, d.row.price) if d.charged and d.row else 0)


def test_short_codes_use_a_key_no_e164_number_has(office) -> None:  # type: ignore[no-untyped-def]
    plan, table = office
    fixed_03 = decide(plan, table, "+33 3 61 51 23 45", AT)  # 03 numbers start +333…
    assert fixed_03.number.kind is Kind.FIXED and fixed_03.reason is Reason.INCLUDED
    assert decide(plan, table, "3615", AT).row.destination.startswith("France short")  # type: ignore[union-attr]
