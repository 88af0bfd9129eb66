"""What the engine is asked and told about calls, and what it answers: typed, with no wire in it.

The Asterisk agent (`asterisk/agent.py`) makes these from FastAGI requests and AMI events and turns
an `Authorization` back into the dialplan's variables; the engine sees nothing else. Another switch
would need another agent, not another engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from .contract import Reason, Status


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    """A call being set up asks whether it may go through."""

    uniqueid: str
    """The caller channel's id ("" when the PBX did not give one: charged calls are then refused)."""
    dialed: str
    extension: str
    account: str
    """The prepaid account's name ("" when the PBX did not say)."""


@dataclass(frozen=True, slots=True)
class Authorization:
    """The engine's answer: every field always set (empty where it does not apply)."""

    status: Status
    reason: Reason
    e164: str = ""
    guard_seconds: int | None = None
    """A charged call: seconds from now the caller's channel may live at most (ring + first quota)."""
    quota_seconds: int | None = None
    """A charged call: the first paid quota, counted from the answer."""
    call_id: str = ""

    @property
    def allowed(self) -> bool:
        return self.status is Status.ALLOW


@dataclass(frozen=True, slots=True)
class Answered:
    """The called party answered: the paid time starts."""

    uniqueid: str
    at: float | None
    """Asterisk's own time of the event (None: it gave none, the engine uses its clock)."""
    channel: str
    called_channel: str
    called_uniqueid: str


@dataclass(frozen=True, slots=True)
class CdrBilled:
    """Asterisk's CDR of the caller's channel: its own count of billable seconds."""

    uniqueid: str
    billable_seconds: int


@dataclass(frozen=True, slots=True)
class HungUp:
    """A channel of the call hung up (the caller's or the called one)."""

    uniqueid: str
    at: float | None


CallEvent = Answered | CdrBilled | HungUp
