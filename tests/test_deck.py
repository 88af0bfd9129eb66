import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating_engine.errors import TariffErrors
from rating_engine.rating.deck import load_deck, parse_deck

from .helpers import HEADER, deck, deck_text


def problems(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(TariffErrors) as info:
        parse_deck(text, "bad.csv")
    return [(e.line, e.column, e.message) for e in info.value.errors]


def test_a_good_deck_loads_with_defaults_for_the_optional_columns() -> None:
    d = deck("# comment", "33,France,0.02,0,60,,,,", "", "+44,UK,0.0250,0.10,30,6,0.05,,")
    fr, uk = d.rows
    assert (fr.prefix, fr.price.per_minute, fr.price.increment, fr.price.minimum) == ("33", 20_000, 60, 0)
    assert (uk.prefix, uk.price.connect_fee, uk.price.initial, uk.price.increment) == ("44", 100_000, 30, 6)
    assert fr.line == 3 and uk.line == 5


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        ("3a3,France,0.02,0,60,60,,,", 1, "prefix must be digits"),
        ("33,,0.02,0,60,60,,,", 2, "destination is empty"),
        ("33,France,-0.02,0,60,60,,,", 3, "negative"),
        ("33,France,1e-3,0,60,60,,,", 3, "not a decimal"),
        ("33,France,0.02,0,0,60,,,", 5, "from 1 to 3600 seconds"),
        ("33,France,0.02,0,60,0,,,", 6, "from 1 to 3600 seconds"),
        ("33,France,0.02,0,60,6.5,,,", 6, "whole number"),
        ("33,France,0.02,0,60,60,,2026-01-01,", 8, "time zone"),
        ("33,France,0.02,0,60,60,,yesterday,", 8, "ISO 8601"),
        ("33,France,0.02,0,60,60,,2026-02-01T00:00+00:00,2026-01-01T00:00+00:00", 9, "after valid_from"),
        ("33,France,0.02", 1, "expected 9 columns"),
        ("1234567890123456,Long,0.02,0,60,60,,,", 1, "longer than 15"),
    ],
)
def test_each_bad_cell_is_reported_with_line_and_column(row: str, column: int, words: str) -> None:
    [(line, col, message)] = problems(deck_text("33,Ok,0.01,0,60,60,,,", row))
    assert (line, col) == (3, column)
    assert words in message


def test_every_problem_is_reported_at_once() -> None:
    found = problems(deck_text("x,A,0.01,0,60,60,,,", "33,B,-1,0,60,60,,,", "34,C,0.01,0,60,60,,,"))
    assert [(line, col) for line, col, _ in found] == [(2, 1), (3, 3)]


def test_duplicate_prefix_in_the_same_window_is_refused() -> None:
    [(line, _, message)] = problems(deck_text("33,A,0.01,0,60,60,,,", "34,B,0.01,0,60,60,,,", "33,C,0.02,0,60,60,,,"))
    assert line == 4 and "duplicate prefix 33 (line 2)" in message


def test_overlapping_windows_are_refused_but_adjacent_ones_load() -> None:
    jan, feb, mar = "2026-01-01T00:00+00:00", "2026-02-01T00:00+00:00", "2026-03-01T00:00+00:00"
    d = deck(f"33,A,0.01,0,60,60,,,{feb}", f"33,B,0.02,0,60,60,,{feb},{mar}", f"33,C,0.03,0,60,60,,{mar},")
    assert len(d.rows) == 3
    [(line, _, message)] = problems(deck_text(f"33,A,0.01,0,60,60,,{jan},{mar}", f"33,B,0.02,0,60,60,,{feb},"))
    assert line == 3 and "overlapping" in message


def test_a_long_window_overlapping_a_later_row_is_caught() -> None:
    a, b, c, d = (
        "2026-01-01T00:00+00:00",
        "2026-02-01T00:00+00:00",
        "2026-03-01T00:00+00:00",
        "2026-04-01T00:00+00:00",
    )
    found = problems(
        deck_text(f"33,A,0.01,0,60,60,,{a},{d}", f"33,B,0.02,0,60,60,,{a},{b}", f"33,C,0.02,0,60,60,,{c},{d}")
    )
    assert {line for line, _, _ in found} == {3, 4}


def test_wrong_header_and_empty_file() -> None:
    assert "header must be" in problems("prefix,name,price\n33,France,0.01\n")[0][2]
    assert "empty deck" in problems("# nothing\n")[0][2]


def test_load_deck_reports_a_missing_file_with_its_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TariffErrors, match=r"missing\.csv"):
        load_deck(tmp_path / "missing.csv")


def test_quoted_destination_with_a_comma() -> None:
    d = parse_deck(f'{HEADER}\n1876,"Jamaica, mobile",0.30,0,60,60,,,\n')
    assert d.rows[0].destination == "Jamaica, mobile"


def test_sample_world_deck_loads() -> None:
    d = load_deck("tariffs/world.csv")
    assert len(d.rows) > 300


# The fast path (columns, each distinct cell parsed once) and the checking path (`_parse_row`, one
# row at a time, saying what is wrong) must accept exactly the same rows with the same values.
VALID = {
    "prefix": ["33", "+44", "0", "007", " 49 "],
    "destination": ["France", " Spain ", '"Jamaica, mobile"', "Zürich"],
    "rate": ["0.02", "0", " 1.5 ", "100000"],
    "seconds": ["60", "1", " 6 ", "3600"],
    "instant": ["", "", "2026-01-01T00:00+00:00", "2027-01-01T00:00:00+01:00"],
}
INVALID = {
    "prefix": ["3a", "", "１２", "1234567890123456", "+"],
    "destination": [""],
    "rate": ["-1", "1e3", "", "100000.000001", "０.１", "0.0000001"],
    "seconds": ["3601", "0", "", "6.5", "٣"],
    "instant": ["2026-01-01", "yesterday"],
}


def cell(kind: str) -> st.SearchStrategy[str]:
    """Mostly valid cells, so that rows with exactly one bad cell come up often."""
    return st.sampled_from(VALID[kind] * 8 + INVALID[kind])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            cell("prefix"),
            cell("destination"),
            cell("rate"),
            cell("rate"),
            cell("seconds"),
            st.sampled_from(["", *VALID["seconds"], *INVALID["seconds"]]),
            st.sampled_from(["", *VALID["rate"], *INVALID["rate"]]),
            cell("instant"),
            cell("instant"),
            st.sampled_from([0] * 8 + [1, 2]),  # 0: as is; 1: a column missing; 2: a comment line instead
        ),
        max_size=8,
    )
)
def test_the_fast_path_accepts_exactly_what_the_checking_path_accepts(rows: list[tuple[object, ...]]) -> None:
    import csv

    from rating_engine.errors import TariffError
    from rating_engine.rating.deck import _parse_row

    lines, expected_rows, expected_errors = [], [], []
    for n, (*raw, shape) in enumerate(rows):
        cells = [str(c) for c in raw]
        if cells[0].strip().removeprefix("+").isdigit():
            cells[0] = cells[0].replace(cells[0].strip(), cells[0].strip() + str(n).zfill(2))  # one row a prefix
        if shape == 2:
            lines.append(f"# {','.join(cells)}")
            continue
        line = ",".join(cells if shape == 0 else cells[:-1])
        lines.append(line)
        errors: list[TariffError] = []
        row = _parse_row(next(csv.reader([line])), "t.csv", len(lines) + 1, errors)
        expected_errors += [(e.line, e.column, e.message) for e in errors]
        if row is not None and len(row.prefix) <= 15:
            expected_rows.append(row)
    text = "\n".join([HEADER, *lines]) + "\n"
    if expected_errors:
        with pytest.raises(TariffErrors) as info:
            parse_deck(text, "t.csv")
        assert [(e.line, e.column, e.message) for e in info.value.errors] == expected_errors
    else:
        assert list(parse_deck(text, "t.csv").rows) == expected_rows


def test_a_deck_read_from_a_file_and_from_text_agree(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = deck_text("33,France,0.02,0,60,,,,", ' +44 ,"UK, all", 0.0250 ,0.10,30,6,0.05,,', "# end")
    (tmp_path / "d.csv").write_text(text.replace("\n", "\r\n"))
    assert list(load_deck(tmp_path / "d.csv").rows) == list(parse_deck(text).rows)
    (tmp_path / "bad.csv").write_bytes(text.encode() + b"34,Spain\xff,0.02,0,60,60,,,\n")
    with pytest.raises(TariffErrors, match="not UTF-8"):
        load_deck(tmp_path / "bad.csv")
