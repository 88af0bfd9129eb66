"""Where a slow answer waited: the event loop's lag is measured and a stall is said, the
collector's passes are timed, and the histograms (the loop's, the collector's, the ledger's
batches) are in the metrics' text."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time

from rating_engine.metrics import STALL, CollectorPauses, Histogram, Metrics, Snapshot, watch_loop

from .helpers import observed_above


async def test_a_stalled_event_loop_is_measured_and_said() -> None:
    lag, stalls = Histogram(), list[float]()
    watching = asyncio.create_task(watch_loop(lag, stalls.append, tick=0.02))
    try:
        await asyncio.sleep(0.1)  # a few ticks on time
        on_time = lag.n
        time.sleep(0.3)  # a step that holds the loop: every answer of that moment waits with it
        await asyncio.sleep(0.1)
    finally:
        watching.cancel()
    assert on_time >= 2
    assert observed_above(lag, 0.25) >= 1, "the stall is not in the histogram"
    assert stalls and max(stalls) >= 0.25 and all(s >= STALL for s in stalls)
    assert lag.n > on_time + 1, "the watch went on after the stall"


def test_the_loop_and_ledger_histograms_are_in_the_text() -> None:
    metrics = Metrics(lambda: Snapshot())
    metrics.loop_lag.observe(0.3)
    text = metrics.render()
    assert "# TYPE rating_event_loop_lag_seconds histogram" in text
    assert 'rating_event_loop_lag_seconds_bucket{le="0.25"} 0' in text
    assert 'rating_event_loop_lag_seconds_bucket{le="0.5"} 1' in text
    assert "rating_ledger_batch_seconds" not in text  # no ledger given: nothing made up
    metrics.ledger_batches = Histogram()
    metrics.ledger_batches.observe(0.004)
    text = metrics.render()
    assert "# TYPE rating_ledger_batch_seconds histogram" in text
    assert 'rating_ledger_batch_seconds_bucket{le="0.005"} 1' in text and "rating_ledger_batch_seconds_count 1" in text


def test_each_pass_of_the_collector_is_timed_while_watched_and_only_then() -> None:
    pauses = Histogram()
    watch = CollectorPauses(pauses)
    automatic = gc.isenabled()
    gc.disable()  # the passes counted are this test's own
    try:
        watch.start()
        watch.start()  # once only: a second start must not time each pass twice
        ring: list[list[object]] = [[] for _ in range(100_000)]
        for a, b in itertools.pairwise(ring):
            a.append(b)
        ring[-1].append(ring[0])  # a cycle: only the collector frees it
        del ring
        gc.collect()
        assert pauses.n == 1 and pauses.total > 0
        watch.stop()
        gc.collect()
        assert pauses.n == 1, "a pass was timed after the watch stopped"
    finally:
        watch.stop()
        if automatic:
            gc.enable()
    metrics = Metrics(lambda: Snapshot())
    metrics.collector_pauses = pauses
    text = metrics.render()
    assert "# TYPE rating_collector_pause_seconds histogram" in text
    assert "rating_collector_pause_seconds_count 1" in text
