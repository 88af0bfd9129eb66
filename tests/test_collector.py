"""What the engine keeps between calls stays small for the cyclic garbage collector.

Every object the engine keeps is walked at each full collection while the event loop waits, so a
cache that grows with the distinct numbers or rate rows seen makes every FastAGI answer of that
moment late (200,000 cached classifications made each full collection 67 ms instead of 2)."""

from __future__ import annotations

import gc
from collections.abc import Callable

from rating_engine.numbering import CLASSIFIED_KEPT, _classify, classify
from rating_engine.rating.deck import ROWS_KEPT, parse_deck
from rating_engine.rating.price import Fare, Price

from .helpers import HEADER


def _tracked_after(work: Callable[[], object]) -> int:
    gc.collect()
    before = len(gc.get_objects())
    work()
    gc.collect()
    return len(gc.get_objects()) - before


def test_classifying_ever_new_numbers_keeps_a_bounded_number_of_objects() -> None:
    distinct = 3 * CLASSIFIED_KEPT
    # The number table, loaded once, is not a cache: load it first. A cached classification would
    # not (an earlier test may have left this one cached and the table unloaded).
    _classify.cache_clear()
    classify("0123456789", "FR")
    grown = _tracked_after(lambda: [classify(f"06{i:08d}", "FR") for i in range(distinct)])
    assert grown <= CLASSIFIED_KEPT + 200


def test_reading_ever_new_rate_rows_keeps_a_bounded_number_of_objects() -> None:
    count = 2 * ROWS_KEPT + 100
    lines = "".join(f"{331000000 + i},Row {i % 7},0.{i % 90 + 10:02d},0,60,60,,,\n" for i in range(count))
    rows = parse_deck(HEADER + "\n" + lines, "wide.csv").rows
    assert len(rows) == count
    grown = _tracked_after(lambda: [rows[i].price for i in range(count)])
    assert grown <= ROWS_KEPT + 200


def test_calls_at_one_price_share_its_fare() -> None:
    """A live call holds its fare: one object per price, not one per call."""
    price = Price(800_000, 120_000, 1, 1, 200_000)
    same = Price(800_000, 120_000, 1, 1, 200_000)
    assert Fare.flat(price) is Fare.flat(same)
    assert Fare.flat(price).cost(61) == Fare(((0, price),)).cost(61)
    grown = _tracked_after(lambda: [Fare.flat(Price(800_000, 120_000, 1, 1, 200_000)) for _ in range(10_000)])
    assert grown < 100


def _full_collections(keep: int) -> int:
    """Full collections while `keep` objects pile up (live calls, never hung up), each with the
    short-lived garbage an authorization leaves behind."""
    full = 0

    def count(phase: str, info: dict[str, int]) -> None:
        nonlocal full
        full += phase == "stop" and info["generation"] == 2

    kept: list[list[int]] = []
    gc.collect()
    gc.callbacks.append(count)
    try:
        for i in range(keep):
            kept.append([i])
            for _ in range(5):
                [[i]]  # noqa: B018 - garbage, as an authorization's coroutines and futures are
    finally:
        gc.callbacks.remove(count)
    return full


def test_the_service_makes_full_collections_ten_times_rarer() -> None:
    """`rating-engine run` (and bench_authorize) tune the collector: a full pass stops the event loop
    for as long as it takes to walk every live call."""
    from rating_engine.service import tune_collector

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # Python's defaults
        default = _full_collections(400_000)
        tune_collector()
        assert gc.get_threshold()[:2] == (700, 10)
        tuned = _full_collections(400_000)
    finally:
        gc.set_threshold(*saved)
    assert default >= 3 and tuned * 3 <= default
