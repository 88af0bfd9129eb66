import threading
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating_engine.errors import TariffErrors
from rating_engine.rating.catalog import TariffStore
from rating_engine.rating.deck import Deck, RateRow
from rating_engine.rating.price import Price
from rating_engine.rating.table import RateTable

from .helpers import deck


def brute_force(rows: Sequence[RateRow], digits: str, at: int) -> int:
    best = -1
    for i, r in enumerate(rows):
        if r.active_at(at) and digits.startswith(r.prefix) and (best < 0 or len(r.prefix) > len(rows[best].prefix)):
            best = i
    return best


prefix_st = st.text(alphabet="0123", min_size=1, max_size=6)
number_st = st.text(alphabet="0123", min_size=0, max_size=16)


@st.composite
def decks(draw: st.DrawFn) -> Deck:
    prefixes = draw(st.lists(prefix_st, min_size=0, max_size=40, unique=True))
    rows: list[RateRow] = []
    for i, p in enumerate(prefixes):
        shapes: list[list[tuple[int | None, int | None]]] = [[(None, None)], [(None, 100), (100, None)], [(50, 150)]]
        windows = draw(st.sampled_from(shapes))
        for lo, hi in windows:
            rows.append(
                RateRow(
                    p,
                    f"d{i}",
                    Price(per_minute=i + 1),
                    -(2**62) if lo is None else lo,
                    2**62 if hi is None else hi,
                    len(rows) + 2,
                )
            )
    return Deck(tuple(rows))


@settings(max_examples=300)
@given(decks(), st.lists(number_st, min_size=1, max_size=30), st.sampled_from([0, 49, 50, 99, 100, 149, 150]))
def test_lookup_is_the_longest_valid_prefix_and_batch_agrees(d: Deck, numbers: list[str], at: int) -> None:
    t = RateTable(d)
    expected = [brute_force(d.rows, n, at) for n in numbers]
    assert [t.lookup_index(n, at) for n in numbers] == expected
    keys, lens = t.keys_of(numbers)
    assert t.lookup_batch(keys, lens, at).tolist() == expected


def test_batch_judges_each_call_at_its_own_start_time() -> None:
    t = RateTable(
        deck(
            "44,UK old,0.02,0,60,60,,,2027-01-01T00:00:00+00:00",
            "44,UK new,0.01,0,60,60,,2027-01-01T00:00:00+00:00,",
        )
    )
    before, after = 1798761599, 1798761600  # one second either side of 2027-01-01
    keys, lens = t.keys_of(["442079460000", "442079460000"])
    rows = t.lookup_batch(keys, lens, np.array([before, after]))
    assert [t.rows[i].destination for i in rows] == ["UK old", "UK new"]
    assert t.lookup("442079460000", before).destination == "UK old"  # type: ignore[union-attr]


def test_a_number_shorter_than_a_prefix_does_not_match_it() -> None:
    t = RateTable(deck("336,Mobile,0.1,0,60,60,,,", "33612,Special,0.5,0,60,60,,,"))
    assert t.lookup("3361", 0).destination == "Mobile"  # type: ignore[union-attr]
    assert t.lookup("33", 0) is None


def test_empty_deck_matches_nothing() -> None:
    t = RateTable(Deck(()))
    keys, lens = t.keys_of(["33"])
    assert t.lookup("33", 0) is None and t.lookup_batch(keys, lens, 0).tolist() == [-1]


def test_reload_swaps_every_table_at_once_and_a_bad_file_changes_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from .helpers import deck_text

    deck_file = tmp_path / "d.csv"
    plan_file = tmp_path / "p.toml"
    plan_file.write_text('name="p"\ncountry="FR"\ncurrency="EUR"\ndeck="d.csv"\n')
    versions = [deck_text(f"1,v{v},0.0{v},0,60,60,,,", f"44,v{v},0.0{v},0,60,60,,,") for v in range(1, 4)]
    deck_file.write_text(versions[0])
    store = TariffStore([plan_file])
    seen: set[tuple[str, str]] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            tariffs = store.current
            table = tariffs.table_for(tariffs.plan("p"))
            a, b = table.lookup("1212", 0), table.lookup("4420", 0)
            seen.add((a.destination, b.destination))  # type: ignore[union-attr]

    th = threading.Thread(target=reader)
    th.start()
    for text in versions[1:] * 20:
        deck_file.write_text(text)
        store.reload()
    deck_file.write_text("garbage\n")
    with pytest.raises(TariffErrors):
        store.reload()
    stop.set()
    th.join()
    assert all(a == b for a, b in seen)
    assert store.current.table_for(store.current.plan("p")).lookup("1", 0).destination == "v3"  # type: ignore[union-attr]


@settings(max_examples=50)
@given(decks(), st.lists(number_st, min_size=1, max_size=20))
def test_a_table_sent_to_another_process_looks_up_the_same_rows(d: Deck, numbers: list[str]) -> None:
    """A reload compiles in a child process and pickles the table back."""
    import pickle

    t = RateTable(d)
    back = pickle.loads(pickle.dumps(t))
    for at in (0, 100):
        assert [back.lookup(n, at) for n in numbers] == [t.lookup(n, at) for n in numbers]
        keys, lens = t.keys_of(numbers)
        assert back.lookup_batch(keys, lens, at).tolist() == t.lookup_batch(keys, lens, at).tolist()
