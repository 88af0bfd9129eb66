import csv
import json
from pathlib import Path

import pytest

from .conftest import OFFICE_FR, ROOT
from .helpers import HEADER, office_plan_on, run

PLAN = str(OFFICE_FR)


def test_validate_accepts_the_sample_tariffs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "tariffs", "validate", PLAN, str(ROOT / "tariffs/world.csv"))
    rates = sum(1 for line in (ROOT / "tariffs/world.csv").read_text().splitlines()[1:] if line[:1].isdigit())
    assert code == 0 and err == "" and rates > 100
    assert out.splitlines() == [
        f"ok: {PLAN}: plan office-fr, deck {ROOT / 'tariffs/world.csv'} ({rates:,} rates)",
        f"ok: {ROOT / 'tariffs/world.csv'}: {rates:,} rates",
    ]


def test_validate_warns_of_a_deck_with_no_rates_and_the_plan_it_empties(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A deck cut short to its header loads (a plan may include everything it allows), but every
    call outside the plan would be refused: said, on the error stream, without failing."""
    deck = tmp_path / "deck.csv"
    deck.write_text(HEADER + "\n")
    plan = office_plan_on(deck)
    code, out, err = run(capsys, "tariffs", "validate", str(plan), str(deck))
    assert code == 0 and f"deck {deck} (0 rates)" in out and f"ok: {deck}: 0 rates" in out
    assert err.splitlines() == [
        f"warning: {deck}: no rates: plan 'office-fr' refuses every call it does not include (no_rate)",
        f"warning: {deck}: no rates: a plan with this deck refuses every call it does not include",
    ]


def test_validate_lists_every_problem_with_its_place_and_exits_1(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "prefix,destination,rate_per_minute,connect_fee,initial_increment,increment,minimum_charge,"
        "valid_from,valid_until\n33,A,x,0,60,60,,,\n33,B,0.1,0,0,60,,,\n"
    )
    code, _, err = run(capsys, "tariffs", "validate", str(bad))
    assert code == 1
    assert f"{bad}:2:3:" in err and f"{bad}:3:5:" in err and "nothing was loaded" in err


@pytest.mark.parametrize(
    ("number", "words"),
    [
        ("0899123456", ["kind premium", "ALLOW (charged)", "prefix 33899 France premium 0899"]),
        ("0612345678", ["kind mobile", "ALLOW (included)"]),
        ("112", ["kind emergency", "ALLOW (emergency)"]),
        ("+1 212 555 0100", ["region US", "ALLOW (charged)", "prefix 1 USA and Canada"]),
    ],
)
def test_rate_explains_the_acceptance_numbers(capsys, number: str, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "rate", "--plan", PLAN, number)
    assert code == 0
    for w in words:
        assert w in out


def test_rate_json_gives_cost_and_max_seconds(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(
        capsys,
        "rate",
        "--plan",
        PLAN,
        "0899123456",
        "--seconds",
        "95",
        "--budget",
        "5",
        "--at",
        "2026-11-24T10:00:00+01:00",
        "--json",
    )
    data = json.loads(out)
    assert code == 0
    # 0.12 connect + 95 s at 0.80/min = 0.12 + 1.266667 (rounded up to the micro-unit)
    assert data["cost"] == "1.386667" and data["charged_seconds"] == 95
    assert data["max_seconds"] == 366 and data["rate"]["prefix"] == "33899"


@pytest.mark.parametrize(
    "argv",
    [
        ["rate", "--plan", PLAN, "0899123456", "--budget", "1e3"],
        ["rate", "--plan", "nope.toml", "0899123456"],
        ["rate", "--plan", PLAN, "0899123456", "--at", "tomorrow"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("rating-engine: ") and "Traceback" not in err


def test_show_filters_rows_by_prefix(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "tariffs", "show", PLAN, "--prefix", "3389")
    assert code == 0 and "France premium 0899" in out and "USA and Canada" not in out


def test_rate_file_rates_good_rows_and_rejects_bad_ones_with_their_line(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "calls.csv"
    src.write_text(
        "call_id,extension,dialed,start,billsec\n"
        "c1,201,0899123456,2026-11-24T10:00:00+01:00,95\n"
        "c2,202,0612345678,2026-11-24T10:00:00+01:00,300\n"
        "c3,203,+1 212 555 0100,1795535109,61\n"
        "c4,204,0899123456,not-a-time,10\n"
        "c5,205,112,2026-11-24T10:00:00Z,-3\n"
        "c6,206,garbage,2026-11-24T10:00:00Z,10\n"
        "c7,207,0899123456,1795535109,95,5\n"  # 95,5 s with a decimal comma, unquoted: was rated as 95 s
        "c1,201,0899123456,2026-11-24T10:00:00+01:00,95\n"  # an export given twice: not billed twice
        "c7,207,0899123456,1795535109,95\n"  # its rejected row's correction
    )
    out = tmp_path / "out.csv"
    code, _, err = run(capsys, "rate-file", "--plan", PLAN, str(src), "-o", str(out))
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["call_id"] for r in rows] == ["c1", "c2", "c3", "c6", "c7"]
    assert (rows[0]["decision"], rows[0]["cost"], rows[0]["prefix"]) == ("charged", "1.386667", "33899")
    assert (rows[1]["decision"], rows[1]["cost"]) == ("included", "0.00")
    assert (rows[2]["charged_seconds"], rows[2]["cost"]) == ("66", "0.0132")
    assert (rows[3]["decision"], rows[3]["kind"]) == ("invalid_number", "invalid")
    rejects = list(csv.DictReader((tmp_path / "out.csv.rejects.csv").open()))
    assert [(r["line"], r["call_id"]) for r in rejects] == [("5", "c4"), ("6", "c5"), ("8", "c7"), ("9", "c1")]
    assert f"{src}:5: start:" in err and f"{src}:6: billsec" in err
    assert f"{src}:8: 6 columns where the header has 5: a comma outside quotes?" in err
    assert f"{src}:9: call_id 'c1' is already on line 2: rated once" in err


def test_rate_file_keeps_the_columns_of_a_longer_header(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "calls.csv"
    src.write_text("call_id,extension,dialed,start,billsec,trunk\nc1,201,0899123456,1795535109,95,sip-a\n")
    code, _, _ = run(capsys, "rate-file", "--plan", PLAN, str(src), "-o", str(tmp_path / "out.csv"))
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert code == 0 and [(r["call_id"], r["cost"]) for r in rows] == [("c1", "1.386667")]


BANDS_PLAN = str(ROOT / "tariffs/office-fr-bands.toml")


def test_rate_explains_the_segments_of_a_call_across_a_band_change(capsys) -> None:  # type: ignore[no-untyped-def]
    argv = ("rate", "--plan", BANDS_PLAN, "+12125550100", "--at", "2026-12-03T18:59:30+01:00", "--seconds", "125")
    code, out, _ = run(capsys, *argv, "--json")
    o = json.loads(out)
    assert code == 0 and (o["band"], o["timezone"]) == ("peak", "Europe/Paris")
    segments = [(g["band"], g["seconds"], g["charged_seconds"]) for g in o["segments"]]
    assert segments == [("peak", 30, 30), ("offpeak", 95, 95)]
    assert o["segments"][1]["from"] == "2026-12-03T19:00:00+01:00" and o["cost"] == "0.0174"
    code, out, _ = run(capsys, *argv)
    assert "from 2026-12-03T19:00:00+01:00  offpeak: 95 s" in out and "connect fee and minimum once per call" in out
    code, out, _ = run(capsys, *argv, "--tz", "America/New_York", "--json")  # 12:59 there: peak throughout
    assert [g["band"] for g in json.loads(out)["segments"]] == ["peak"]


def test_rate_refuses_an_unknown_time_zone(capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "rate", "--plan", BANDS_PLAN, "+12125550100", "--tz", "Mars/Olympus")
    assert code != 0 and "--tz: unknown time zone 'Mars/Olympus'" in err


def test_rate_file_names_each_call_s_band(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "calls.csv"
    src.write_text(
        "call_id,extension,dialed,start,billsec\n"
        "c1,201,+12125550100,2026-12-03T18:59:30+01:00,125\n"
        "c2,201,+12125550100,2026-12-05T12:00:00+01:00,125\n"
        "c3,201,0612345678,2026-12-03T12:00:00+01:00,60\n"
    )
    out = tmp_path / "out.csv"
    code, _, _ = run(capsys, "rate-file", "--plan", BANDS_PLAN, str(src), "-o", str(out))
    rows = list(csv.DictReader(out.open()))
    assert code == 0 and [(r["band"], r["cost"]) for r in rows] == [
        ("peak", "0.0174"),
        ("weekend", "0.015"),
        ("", "0.00"),
    ]


def test_validate_reads_a_bands_file_and_names_its_gaps(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "tariffs", "validate", str(ROOT / "tariffs/bands-fr.csv"), BANDS_PLAN)
    assert code == 0 and f"ok: {ROOT / 'tariffs/bands-fr.csv'}: time bands" in out and "plan office-fr-bands" in out
    bad = tmp_path / "bands.csv"
    bad.write_text("band,days,from,until\npeak,mon-sun,08:00,19:00\noff,mon-sun,00:00,08:00\n")
    code, _, err = run(capsys, "tariffs", "validate", str(bad))
    assert code == 1 and f"{bad}:2: mon: no band from 19:00 to 24:00" in err


def test_show_lists_a_plan_s_bands_and_their_hours(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "tariffs", "show", BANDS_PLAN, "--prefix", "1")
    assert code == 0 and "in Europe/Paris" in out and "12 holiday(s)" in out
    assert "peak      world.csv: mon-fri 08:00-19:00" in out
    assert "offpeak   world-offpeak.csv: mon-fri 00:00-08:00, 19:00-24:00" in out
    assert "weekend   world-offpeak.csv: sat-sun 00:00-24:00" in out
