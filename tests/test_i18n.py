"""The page's two languages: every text it can show has its French, amounts and days are read the
way each language writes them, and nothing typed is read two ways."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rating_engine.errors import InvalidAmount
from rating_engine.ledger.programs import AUDITED
from rating_engine.money import MAX_AMOUNT
from rating_engine.notices import BODIES, SUBJECTS
from rating_engine.web.i18n import ACTIONS, Tongue, catalogue

WEB = Path(__file__).parent.parent / "rating_engine" / "web"
EN, FR = Tongue("en"), Tongue("fr")


def _texts_the_page_can_show() -> set[str]:
    found: set[str] = set()
    for template in (WEB / "templates").glob("*.html"):
        found |= set(re.findall(r"""_\(\s*"((?:[^"\\]|\\.)*)"\s*\)""", template.read_text()))
        found |= set(re.findall(r"""_\(\s*'((?:[^'\\]|\\.)*)'\s*\)""", template.read_text()))
    for module in WEB.glob("*.py"):
        found |= set(re.findall(r"""gettext\(\s*"((?:[^"\\]|\\.)*)"\s*\)""", module.read_text()))
    return found | set(ACTIONS.values()) | set(SUBJECTS.values()) | set(BODIES.values())


def test_every_text_the_page_shows_has_its_french() -> None:
    texts = _texts_the_page_can_show()
    assert len(texts) > 100  # the scan finds the templates' texts, not nothing
    missing = sorted(t for t in texts if t not in catalogue("fr"))
    assert missing == []


def test_every_audited_setting_has_words_on_the_page() -> None:
    assert {f"set {name}" for name in AUDITED} <= set(ACTIONS)
    assert FR.action("set threshold") == "Seuil modifié" and EN.action("set threshold") == "Threshold changed"
    assert FR.action("something new") == "something new"  # a newer ledger's action is still shown


@pytest.mark.parametrize(
    ("tongue", "text", "micro"),
    [
        (FR, "2,5", 2_500_000),
        (FR, "2.5", 2_500_000),
        (FR, "1 000,50", 1_000_500_000),
        (FR, "1\u202f000,50", 1_000_500_000),
        (FR, "0,0125", 12_500),
        (EN, "2.5", 2_500_000),
        (EN, "1,000.50", 1_000_500_000),
        (EN, "12,345,678", 12_345_678_000_000),
    ],
)
def test_amounts_are_read_as_each_language_writes_them(tongue: Tongue, text: str, micro: int) -> None:
    assert tongue.parse_amount(text) == micro


@pytest.mark.parametrize(
    ("tongue", "text"),
    [(EN, "2,5"), (EN, "1,00"), (FR, "1,000.50"), (FR, "2,5,0"), (FR, "10 00"), (FR, "-2,5"), (EN, "1e3"), (FR, "")],
)
def test_what_could_be_read_two_ways_is_refused(tongue: Tongue, text: str) -> None:
    with pytest.raises(InvalidAmount):
        tongue.parse_amount(text)


@given(st.integers(0, MAX_AMOUNT), st.sampled_from(["EUR", "USD", "JPY"]), st.sampled_from([EN, FR]))
def test_an_amount_the_page_fills_in_reads_back_the_same(amount: int, currency: str, tongue: Tongue) -> None:
    shown = tongue.amount_input(amount, currency)
    assert tongue.parse_amount(shown) == amount
    assert ("," in shown) == (tongue is FR and "." in EN.amount_input(amount, currency))


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("01/12/2026", date(2026, 12, 1)),
        ("1/2/2026", date(2026, 2, 1)),
        ("01.12.2026", date(2026, 12, 1)),
        ("2026-12-01", date(2026, 12, 1)),
        (" 24/11/2026 ", date(2026, 11, 24)),
        ("31/02/2026", None),
        ("12/31/2026", None),  # month first is not how either language writes a day
        ("yesterday", None),
        ("2026-1-1", None),
    ],
)
def test_days_are_read_day_first_or_iso(text: str, day: date | None) -> None:
    assert FR.parse_day(text) == day and EN.parse_day(text) == day


@given(st.dates(date(1970, 1, 1), date(9999, 12, 31)))
def test_a_day_the_page_fills_in_reads_back_the_same(day: date) -> None:
    assert FR.parse_day(FR.day_input(day)) == day


@pytest.mark.parametrize(
    ("tongue", "text", "said"),
    [
        (EN, "", None),
        (EN, " 01/12/2026 ", None),
        (FR, "2026-12-01", None),
        (EN, "yesterday", "A date, e.g. 01/12/2026."),
        (FR, "31/02/2026", "Une date, par exemple 01/12/2026."),
        (EN, "01/01/0001", "A date from 1900 to 9998."),
        (FR, "9999-12-31", "Une date de 1900 à 9998."),
        (FR, "31/12/1899", "Une date de 1900 à 9998."),
    ],
)
def test_a_filter_day_refused_says_why(tongue: Tongue, text: str, said: str | None) -> None:
    assert tongue.day_problem(text) == said
    assert (tongue.parse_day(text) is None) == (said is not None or not text.strip())
