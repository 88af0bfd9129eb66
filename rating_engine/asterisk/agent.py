"""The Asterisk agent: FastAGI requests and AMI events in, typed engine calls out, and back.

Only here do `agi_*` keys, AMI header names and `RATING_*` variables meet the engine; `engine.py`
works on `calls.AuthorizeRequest` and `calls.CallEvent` alone. The service, the tests and the
benchmarks all wire the engine to Asterisk through `Agent`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..calls import Answered, Authorization, AuthorizeRequest, CallEvent, CdrBilled, HungUp
from ..contract import Variables, answer
from .agi import AgiRequest
from .agi_server import FastAgiServer


@dataclass(frozen=True, slots=True)
class Sources:
    """Where each part of a request is read: "accountcode", "callerid", "extension" (the AGI
    environment), "arg:N" (the N-th AGI argument), or "fixed:VALUE"."""

    account: str = "accountcode"
    extension: str = "arg:1"
    dialed: str = "arg:2"


def _read(req: AgiRequest, spec: str) -> str:
    kind, _, value = spec.partition(":")
    if kind == "arg":
        return req.arg(int(value)).strip()
    if kind == "fixed":
        return value
    return req.env.get(f"agi_{kind}", "").strip()


def authorize_request(req: AgiRequest, sources: Sources) -> AuthorizeRequest:
    """The request in the engine's terms; the dialed number and the extension fall back to the
    channel's own extension and caller id when the dialplan passed no arguments."""
    return AuthorizeRequest(
        uniqueid=req.uniqueid.strip(),
        dialed=_read(req, sources.dialed) or req.env.get("agi_extension", ""),
        extension=_read(req, sources.extension) or req.env.get("agi_callerid", ""),
        account=_read(req, sources.account),
    )


def variables(a: Authorization) -> Variables:
    """The dialplan's variables for an answer (docs/dialplan-contract.md)."""

    def seconds(n: int | None) -> str:
        return "" if n is None else str(n)

    return answer(a.status, a.reason, a.e164, seconds(a.guard_seconds), a.call_id, seconds(a.quota_seconds))


def _at(event: Mapping[str, str]) -> float | None:
    """The event's `Timestamp` (timestampevents = yes): bill from Asterisk's time, not arrival."""
    stamp = event.get("Timestamp", "")
    try:
        at = float(stamp) if stamp else None
    except ValueError:
        return None
    return at if at is not None and math.isfinite(at) else None


def call_event(event: Mapping[str, str]) -> CallEvent | None:
    """The AMI events the engine follows a call by; None for every other one."""
    name = event.get("Event", "")
    if name == "DialEnd" and event.get("DialStatus") == "ANSWER":
        return Answered(
            event.get("Uniqueid", ""),
            _at(event),
            event.get("Channel", ""),
            event.get("DestChannel", ""),
            event.get("DestUniqueid", ""),
        )
    if name == "Cdr":
        billable = event.get("BillableSeconds", "")
        if event.get("DestinationChannel") and billable.isascii() and billable.isdigit():
            return CdrBilled(event.get("UniqueID", ""), int(billable))
        return None
    if name == "Hangup":
        return HungUp(event.get("Uniqueid", ""), _at(event))
    return None


class CallEngine(Protocol):
    """What the agent drives (the engine)."""

    async def authorize(self, request: AuthorizeRequest) -> Authorization: ...

    def fallback(self, request: AuthorizeRequest, why: str) -> Authorization: ...

    async def handle(self, event: CallEvent) -> None: ...

    def pinged(self, at: float, round_trip: float) -> None: ...


class Agent:
    """One engine on one Asterisk: the FastAGI route and the AMI event handler."""

    def __init__(self, engine: CallEngine, sources: Sources | None = None) -> None:
        self.engine = engine
        self.sources = sources or Sources()

    async def authorize(self, req: AgiRequest) -> Variables:
        return variables(await self.engine.authorize(authorize_request(req, self.sources)))

    def fallback(self, req: AgiRequest, why: str) -> Variables:
        return variables(self.engine.fallback(authorize_request(req, self.sources), why))

    async def on_ami_event(self, event: Mapping[str, str]) -> None:
        translated = call_event(event)
        if translated is not None:
            await self.engine.handle(translated)

    def on_pong(self, reply: Mapping[str, str], round_trip: float) -> None:
        """A Ping's reply: Asterisk's time in it, read between sending and receiving, tells its
        clock from the engine's both ways (events alone tell it only one way)."""
        at = _at(reply)
        if at is not None:
            self.engine.pinged(at, round_trip)

    def fastagi_server(
        self, *, answer_timeout: float = 2.0, on_latency: Callable[[float], None] | None = None
    ) -> FastAgiServer:
        return FastAgiServer(
            {"authorize": self.authorize}, self.fallback, answer_timeout=answer_timeout, on_latency=on_latency
        )
