from pathlib import Path

import pytest

from rating_engine.errors import TariffErrors
from rating_engine.numbering import Kind
from rating_engine.rating.catalog import load_tariffs
from rating_engine.rating.plan import load_plan

from .conftest import OFFICE_FR


def write_plan(tmp_path: Path, body: str) -> Path:
    (tmp_path / "d.csv").write_text(
        "prefix,destination,rate_per_minute,connect_fee,initial_increment,"
        "increment,minimum_charge,valid_from,valid_until\n1,US,0.01,0,60,60,,,\n"
    )
    p = tmp_path / "p.toml"
    p.write_text(body)
    return p


def test_the_sample_plan_includes_france_and_twelve_european_fixed_networks() -> None:
    plan = load_plan(OFFICE_FR)
    assert (plan.country, plan.currency, plan.deck.name) == ("FR", "EUR", "world.csv")
    assert plan.is_included("FR", Kind.MOBILE) and plan.is_included("FR", Kind.FIXED)
    europe = next(r for r in plan.included if "DE" in r.regions)
    assert len(europe.regions) == 12 and europe.kinds == {"fixed"}
    assert not plan.is_included("DE", Kind.MOBILE) and not plan.is_included("US", Kind.FIXED)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('country="FR"\ncurrency="EUR"\n', "`deck`"),
        ('country="FR"\ncurrency="XXX"\ndeck="d.csv"\n', "unknown currency"),
        ('country="FR"\ncurrency="EUR"\ndeck="nope.csv"\n', "deck file not found"),
        ('country="FR"\ncurrency="EUR"\ndeck="d.csv"\npremium="maybe"\n', "`premium` must be one of"),
        (
            'country="FR"\ncurrency="EUR"\ndeck="d.csv"\n[[included]]\nregions=["FR"]\nkinds=["landline"]\n',
            "unknown kind",
        ),
        ('country="FR"\ncurrency="EUR"\ndeck="d.csv"\ncolour="blue"\n', "unknown key `colour`"),
        ('country="FR"\ncurrency="EUR"\ndeck="d.csv"\n[blocked]\nprefixes=["+88"]\n', "digit strings"),
    ],
)
def test_bad_plans_say_what_is_wrong(tmp_path: Path, body: str, words: str) -> None:
    with pytest.raises(TariffErrors, match=r"p\.toml") as info:
        load_plan(write_plan(tmp_path, body))
    assert words in str(info.value)


def test_toml_syntax_errors_carry_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(TariffErrors) as info:
        load_plan(write_plan(tmp_path, 'country="FR"\ncurrency = = "EUR"\n'))
    [err] = info.value.errors
    assert err.line == 2 and err.column > 0


def test_a_plan_with_a_bad_deck_loads_nothing(tmp_path: Path) -> None:
    p = write_plan(tmp_path, 'country="US"\ncurrency="USD"\ndeck="d.csv"\n')
    (tmp_path / "d.csv").write_text("prefix,destination\n")
    with pytest.raises(TariffErrors, match=r"d\.csv:1:1"):
        load_tariffs([p])
