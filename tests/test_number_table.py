"""The compiled number table says what phonenumbers says, for every country calling code."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from bisect import bisect_right
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumberType

from rating_engine import number_cache, number_table
from rating_engine.dialed_column import classify_column
from rating_engine.digit_ranges import Unreducible, ranges
from rating_engine.numbering import _TYPE_TO_KIND, Kind, classify

CODES = sorted(COUNTRY_CODE_TO_REGION_CODE)
TYPES = ("general_desc", "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number",
         "voip", "pager", "uan", "voicemail")  # fmt: skip


def _metas() -> list[PhoneMetadata]:
    return [
        m
        for cc, regions in COUNTRY_CODE_TO_REGION_CODE.items()
        for r in regions
        if (m := PhoneMetadata.metadata_for_region_or_calling_code(cc, r)) is not None
    ]


PATTERNS = sorted(
    {d.national_number_pattern for m in _metas() for t in TYPES if (d := getattr(m, t)) and d.national_number_pattern}
)
PREFIX_PATTERNS = sorted({p for m in _metas() for p in (m.national_prefix_for_parsing, m.leading_digits) if p})


def _inside(rs: list[tuple[int, int]], v: int) -> bool:
    i = bisect_right([a for a, _b in rs], v) - 1
    return i >= 0 and v < rs[i][1]


# --- the pattern compiler -------------------------------------------------------------------


def test_ranges_of_small_patterns() -> None:
    assert ranges(r"1\d", 2) == [(10, 20)]
    assert ranges(r"[2-4]\d{2}|5\d?", 3) == [(200, 500)]
    assert ranges(r"5\d?", 2) == [(50, 60)]
    assert ranges(r"5\d?", 1) == [(5, 6)]
    assert ranges(r"(?:1|23)\d{0,2}", 3) == [(100, 200), (230, 240)]
    assert ranges(r"1|23", 3, prefix=True) == [(100, 200), (230, 240)]
    assert ranges(r"(7\d{2})$|1", 3, prefix=True) == [(100, 200), (700, 800)]
    assert ranges(r"(7\d{2})$|1", 4, prefix=True) == [(1000, 2000)]  # $: only at the end
    assert ranges(r"\d{3}", 2) == [] and ranges(r"0", 1) == [(0, 1)]


@pytest.mark.parametrize("pattern", [r"\d+", r"1*", r".", r"[^1]", r"(?=1)1", r"\w", r"a", r"(1", r"1{2,1}"])
def test_what_the_compiler_does_not_reduce_it_says(pattern: str) -> None:
    with pytest.raises(Unreducible):
        ranges(pattern, 3)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATTERNS + PREFIX_PATTERNS), st.integers(1, 17), st.data())
def test_ranges_are_the_strings_re_matches(pattern: str, length: int, data: st.DataObject) -> None:
    prefix = pattern in PREFIX_PATTERNS and pattern not in PATTERNS
    rs = ranges(pattern, length, prefix=prefix)
    assert all(a < b <= c for (a, b), (c, _d) in itertools.pairwise(rs))  # sorted, disjoint, merged
    rx = re.compile(pattern)
    edges = [v for a, b in rs[:40] for v in (a - 1, a, b - 1, b)]
    randoms = data.draw(st.lists(st.integers(0, 10**length - 1), max_size=40))
    for v in [e for e in edges if 0 <= e < 10**length] + randoms:
        s = str(v).zfill(length)
        assert _inside(rs, v) is bool(rx.match(s) if prefix else rx.fullmatch(s)), s


# --- the table against phonenumbers -----------------------------------------------------------


def _reference(cc: int, nsn: str) -> number_table.NumberClass:
    number = phonenumbers.PhoneNumber(country_code=cc, national_number=int(nsn))
    zeros = len(nsn) - len(nsn.lstrip("0"))
    if zeros:
        number.italian_leading_zero = True
        number.number_of_leading_zeros = zeros if zeros > 1 else None
    assert phonenumbers.national_significant_number(number) == nsn
    kind = phonenumbers.number_type(number)
    possible = phonenumbers.is_possible_number(number)
    why = number_table.IMPOSSIBLE if not possible else number_table.NO_RANGE if kind == PhoneNumberType.UNKNOWN else ""
    return number_table.NumberClass(phonenumbers.region_code_for_number(number) or "", int(kind), why)


def _nsn_near_examples() -> st.SearchStrategy[tuple[int, str]]:
    """Numbers near real ranges: an example of each type of each region, its tail redrawn."""
    seeds: list[tuple[int, str]] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for t in range(12):
            ex = phonenumbers.example_number_for_type(region, t)
            if ex is not None and ex.country_code is not None:
                seeds.append((ex.country_code, phonenumbers.national_significant_number(ex)))
    for cc in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        ex = phonenumbers.example_number_for_non_geo_entity(cc)
        if ex is not None:
            seeds.append((cc, phonenumbers.national_significant_number(ex)))

    @st.composite
    def near(draw: st.DrawFn) -> tuple[int, str]:
        cc, nsn = draw(st.sampled_from(seeds))
        keep = draw(st.integers(min(number_table.MIN_NSN, len(nsn)), len(nsn)))
        tail = draw(st.text("0123456789", min_size=0, max_size=len(nsn) - keep + 2))
        return cc, (nsn[:keep] + tail)[: number_table.MAX_NSN]

    return near()


def _any_nsn() -> st.SearchStrategy[tuple[int, str]]:
    """Every country calling code, any digits: valid, invalid, too short, too long."""
    return st.tuples(st.sampled_from(CODES), st.text("0123456789", min_size=number_table.MIN_NSN, max_size=17))


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_any_nsn(), _nsn_near_examples()))
def test_the_table_says_what_phonenumbers_says(case: tuple[int, str]) -> None:
    cc, nsn = case
    if not nsn.strip("0"):
        return  # all zeros: not a national number phonenumbers can hold
    t = number_table.table()
    cid = t.class_id(f"{cc}{nsn}")
    assert cid >= 0, "every country code of this phonenumbers compiles"
    assert t.classes[cid] == _reference(cc, nsn)


def test_every_example_of_every_type_of_every_region_is_in_the_table() -> None:
    t = number_table.table()
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in range(12):
            ex = phonenumbers.example_number_for_type(region, kind)
            if ex is None:
                continue
            nsn = phonenumbers.national_significant_number(ex)
            assert ex.country_code is not None
            assert t.classes[t.class_id(f"{ex.country_code}{nsn}")] == _reference(ex.country_code, nsn), (region, kind)
            checked += 1
    assert checked > 1300  # the loop did check them


def _reference_classify(text: str, country: str) -> tuple[str, str, Kind]:
    """phonenumbers' own answers for a dialed string, in our terms: parse, region, possible, type."""
    try:
        n = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        return "", "", Kind.INVALID
    e164 = f"+{n.country_code}{phonenumbers.national_significant_number(n)}"
    region = phonenumbers.region_code_for_number(n) or ""
    kind = _TYPE_TO_KIND.get(phonenumbers.number_type(n), Kind.UNKNOWN)
    if not phonenumbers.is_possible_number(n) or kind is Kind.UNKNOWN:
        kind = Kind.INVALID
    return e164, region, kind


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_any_nsn(), _nsn_near_examples()), st.sampled_from(["FR", "US", "DE", "GB", "IT", "JP", "BR", "RU"]))
def test_classify_agrees_with_phonenumbers_in_every_country_code(case: tuple[int, str], country: str) -> None:
    cc, nsn = case
    text = f"+{cc}{nsn}"
    c = classify(text, country)
    assert (c.e164, c.region, c.kind) == _reference_classify(text, country)


def test_plus_zero_is_not_a_country_code() -> None:
    """'+033…' once read as +33 by the fast parse; phonenumbers refuses it."""
    assert classify("+033612345678", "FR").kind is Kind.INVALID
    assert classify("00033612345678", "FR").kind is Kind.INVALID


# --- the batch path gives what the one-call path gives ------------------------------------------

DIALED = st.one_of(
    st.builds(lambda cc, n: f"+{cc}{n}", st.sampled_from(CODES), st.text("0123456789", min_size=1, max_size=17)),
    st.builds(lambda cc, n: f"00{cc}{n}", st.sampled_from(CODES), st.text("0123456789", min_size=1, max_size=17)),
    st.builds(lambda cc, n: f"011{cc}{n}", st.sampled_from(CODES), st.text("0123456789", min_size=1, max_size=15)),
    st.builds(lambda cc, n: f"+{cc}{n}", _nsn_near_examples().map(lambda c: c[0]), st.text("0123456789", max_size=14)),
    _nsn_near_examples().map(lambda c: f"+{c[0]}{c[1]}"),
    _nsn_near_examples().map(lambda c: f"0{c[1]}"),
    st.text("0123456789", min_size=0, max_size=20),
    st.text("0123456789+ -.()/#*a\u00e9\n\x00", max_size=20),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(DIALED, max_size=40), st.sampled_from(["FR", "US", "DE", "GB", "IT", "JP", "BR", "RU", "AR", "CH"]))
def test_the_column_classifies_every_string_as_classify_does(dialed: list[str], country: str) -> None:
    col = classify_column(dialed, country)
    for i, d in enumerate(dialed):
        assert col.number(i) == classify(d, country), d
        c = classify(d, country)
        if i not in col.slow:
            assert (int(col.length[i]), int(col.value[i])) == (len(c.digits), int(c.digits))


def test_every_length_of_a_country_whose_national_prefix_may_match_is_classified_as_one_by_one() -> None:
    """Where a national prefix for parsing can match a number that does not start with 0, the
    column asks, per length, which numbers it may match; at some lengths none can (+352 and four
    digits), and that must read as "none", not fail."""
    from rating_engine.dialed_column import _npp_live

    live = [cc for cc in range(1000) if _npp_live()[cc]]
    assert 352 in live
    dialed = [f"+{cc}{first}{'0' * (n - 1)}" for cc in live for n in range(1, 16) for first in "19"]
    col = classify_column(dialed, "FR")
    assert [col.number(i) for i in range(len(dialed))] == [classify(d, "FR") for d in dialed]


def test_the_common_forms_take_the_vectorized_path() -> None:
    dialed = ["+33612345678", "0033612345678", "0612345678", "+4930123456", "0899123456", "112", "06 12 34 56 78"]
    col = classify_column(dialed, "FR")
    assert sorted(col.slow) == [5, 6]  # the short number and the one with spaces go one by one
    assert [col.number(i).kind for i in range(5)] == [Kind.MOBILE, Kind.MOBILE, Kind.MOBILE, Kind.FIXED, Kind.PREMIUM]
    assert col.number(5).kind is Kind.EMERGENCY


# --- the cache ---------------------------------------------------------------------------------


def test_the_cache_holds_the_same_table_and_is_named_by_version(tmp_path: Path) -> None:
    built = number_table.table()
    path = tmp_path / number_cache.file_name()
    number_cache.save(built, path)
    assert phonenumbers.__version__ in path.name and f"v{number_table.VERSION}" in path.name
    back = number_cache.read(path)
    assert back.classes == built.classes
    assert all((a == b).all() for a, b in zip(back.starts, built.starts, strict=True))
    assert all((a == b).all() for a, b in zip(back.ids, built.ids, strict=True))
    for digits in ("33612345678", "12125550100", "4930123456", "80012345678", "999"):
        assert back.class_id(digits) == built.class_id(digits)


def test_a_damaged_cache_is_rebuilt_and_an_unwritable_one_only_costs_the_build(tmp_path: Path) -> None:
    path = tmp_path / number_cache.file_name()
    path.write_bytes(b"not a table")
    t = number_cache.load(tmp_path)
    assert t.classes == number_table.table().classes
    assert number_cache.read(path).classes == t.classes  # rewritten whole
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    assert number_cache.load(not_a_directory / "cache").classes == t.classes


def test_each_phonenumbers_version_has_its_own_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    number_cache.save(number_table.table(), tmp_path / number_cache.file_name())
    monkeypatch.setattr(phonenumbers, "__version__", "99.0.0")
    assert "99.0.0" in number_cache.file_name()
    assert not (tmp_path / number_cache.file_name()).exists()  # an upgrade never reads the old table


def test_the_live_and_batch_paths_read_the_one_table_installed() -> None:
    """Swap in a table whose French mobiles are premium-rate: both paths follow it."""
    from rating_engine.numbering import _classify

    real = number_table.table()
    mobile = real.class_id("33612345678")
    premium = real.class_id("33899123456")
    classes = list(real.classes)
    classes[mobile] = classes[premium]
    try:
        number_table.install(number_table.NumberTable(classes, real.starts, real.ids))
        _classify.cache_clear()
        assert classify("0612345678", "FR").kind is Kind.PREMIUM
        assert classify_column(["0612345678"], "FR").number(0).kind is Kind.PREMIUM
    finally:
        number_table.install(real)
        _classify.cache_clear()
    assert classify("0612345678", "FR").kind is Kind.MOBILE


def test_the_cache_goes_where_xdg_says_else_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert number_cache.default_dir() == tmp_path / "rating-engine"
    number_cache.install()  # built or read, and written there
    assert (tmp_path / "rating-engine" / number_cache.file_name()).is_file()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert number_cache.default_dir() == tmp_path / "home" / ".cache" / "rating-engine"


def test_a_process_that_builds_the_table_leaves_the_collector_little_to_walk(tmp_path: Path) -> None:
    """An engine's first start builds the table: phonenumbers then keeps every region's metadata,
    which each full collection would walk while the event loop waits. Built in a fresh process
    here, so that nothing this test process has loaded counts."""
    script = (
        "import gc, sys\n"
        "from pathlib import Path\n"
        "from rating_engine import number_cache\n"
        "number_cache.load(Path(sys.argv[1]))\n"
        "gc.collect()\n"
        "print(len(gc.get_objects()), gc.get_freeze_count())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True, timeout=120
    )
    walked, frozen = map(int, out.stdout.split())
    assert (tmp_path / number_cache.file_name()).exists()
    assert frozen > 100_000  # the metadata the build read
    assert walked < 60_000  # what a process that reads the file has (~25,000 with numpy and the package)
