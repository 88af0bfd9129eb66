"""A call's details, kept in its reservation for an engine restarted to follow it, are the JSON
`json.dumps` gives: written out by hand for speed, they must not differ by a byte."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from rating_engine.engine import Call, _call_from
from rating_engine.rating.price import Fare, Price

prices = st.builds(
    Price,
    per_minute=st.integers(0, 10**9),
    connect_fee=st.integers(0, 10**7),
    initial=st.integers(1, 3600),
    increment=st.integers(1, 3600),
    minimum=st.integers(0, 10**7),
)
fares = st.one_of(
    prices.map(Fare.flat),
    st.lists(prices, min_size=2, max_size=4).map(lambda ps: Fare(tuple((60 * k, p) for k, p in enumerate(ps)))),
)
texts = st.text()  # quotes, backslashes, control characters, any plane of Unicode
times = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 2**40))


def _as_json_dumps_writes_it(call: Call, node: str) -> str:
    def price(p: Price) -> list[int]:
        return [p.per_minute, p.connect_fee, p.initial, p.increment, p.minimum]

    fields: dict[str, Any] = {
        "node": node,
        "uid": call.uid,
        "channel": call.channel,
        "dest_channel": call.dest_channel,
        "dest_uid": call.dest_uid,
        "dialed": call.dialed,
        "e164": call.e164,
        "kind": call.kind,
        "destination": call.destination,
        "price": price(call.fare.first),
        "fare": [[o, *price(p)] for o, p in call.fare.pieces],
        "granted": call.granted,
        "answered_at": call.answered_at,
        "started_at": call.started_at,
    }
    return json.dumps(fields)


@given(
    strings=st.lists(texts, min_size=9, max_size=9),
    fare=fares,
    granted=st.integers(0, 10**6),
    started=times,
    answered=st.one_of(st.none(), times),
)
def test_details_are_what_json_dumps_writes(
    strings: list[str], fare: Fare, granted: int, started: float, answered: float | None
) -> None:
    node, uid, channel, dest_channel, dest_uid, dialed, e164, kind, destination = strings
    call = Call("c", "acme", "201", dialed, e164, kind, destination, fare, granted, 0, started, uid)
    call.channel, call.dest_channel, call.dest_uid, call.answered_at = channel, dest_channel, dest_uid, answered
    assert call.details(node) == _as_json_dumps_writes_it(call, node)


@given(fare=fares, uid=texts, started=st.floats(0, 2e9))
def test_a_call_read_back_from_its_details_has_its_fare(fare: Fare, uid: str, started: float) -> None:
    call = Call("n:1:2", "acme", "201", "0899123456", "+33899123456", "premium_rate", "FR", fare, 60, 9, started, uid)
    back = _call_from("n:1:2", "acme", "201", 9, json.loads(call.details("n")))
    assert (back.fare, back.uid, back.started_at) == (fare, uid, started)
