"""The contract with the dialplan: the channel variables the engine sets and the reasons it gives.

These names and codes are a public interface: the shipped `asterisk_conf/extensions.conf`
clears every variable before `AGI()` and branches on the reasons (a test reads the file
and holds it to this module).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

STATUS = "RATING_STATUS"
REASON = "RATING_REASON"
E164 = "RATING_E164"
GUARDSEC = "RATING_GUARDSEC"
QUOTASEC = "RATING_QUOTASEC"
CALLID = "RATING_CALLID"
VARIABLES: tuple[str, ...] = (REASON, E164, GUARDSEC, QUOTASEC, CALLID, STATUS)
"""Every variable the engine sets, in the order it sets them: RATING_STATUS last. They go one
command at a time, so an engine killed midway leaves Asterisk the first few; without the status
the dialplan fails closed. (Sent first, "ALLOW" and "charged" alone made a call without its
deadline.)"""


class Status(StrEnum):
    """RATING_STATUS."""

    ALLOW = "ALLOW"
    DENY = "DENY"


class Reason(StrEnum):
    """Stable codes: part of the dialplan contract (RATING_REASON)."""

    EMERGENCY = "emergency"
    INCLUDED = "included"
    CHARGED = "charged"
    INVALID_NUMBER = "invalid_number"
    BLOCKED_DESTINATION = "blocked_destination"
    NO_RATE = "no_rate"
    EXTENSION_NOT_ALLOWED = "extension_not_allowed"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    CAP_REACHED = "cap_reached"
    ACCOUNT_BLOCKED = "account_blocked"
    UNKNOWN_ACCOUNT = "unknown_account"
    TOO_MANY_CALLS = "too_many_calls"
    RATE_LIMITED = "rate_limited"
    VELOCITY_LIMIT = "velocity_limit"
    OUTSIDE_HOURS = "outside_hours"
    ENGINE_ERROR = "engine_error"


class Refusal(StrEnum):
    """Why the ledger refused to reserve. Each is told to the dialplan as the `Reason` of the same
    name; those the caller causes or handles itself are an engine error there (`REASON_OF`)."""

    INSUFFICIENT_FUNDS = "insufficient_funds"
    ACCOUNT_BLOCKED = "account_blocked"
    CAP_REACHED = "cap_reached"
    EXTENSION_NOT_ALLOWED = "extension_not_allowed"
    UNKNOWN_ACCOUNT = "unknown_account"
    TOO_MANY_CALLS = "too_many_calls"
    RATE_LIMITED = "rate_limited"
    VELOCITY_LIMIT = "velocity_limit"
    UNKNOWN_CALL = "unknown_call"
    DUPLICATE_CALL = "duplicate_call"
    SETTINGS_CHANGED = "settings_changed"
    """The account's or the extension's settings are no longer those the call was decided with."""


_CALLERS_OWN = (Refusal.UNKNOWN_CALL, Refusal.DUPLICATE_CALL, Refusal.SETTINGS_CHANGED)
"""Refusals the engine causes or handles itself (it decides again on SETTINGS_CHANGED)."""

REASON_OF: dict[Refusal, Reason] = {
    **{r: Reason(r.value) for r in Refusal if r not in _CALLERS_OWN},
    **{r: Reason.ENGINE_ERROR for r in _CALLERS_OWN},
}
"""What the dialplan is told for each refusal: every refusal has one (a test holds it whole)."""


class DestinationClass(StrEnum):
    """What an administrator can allow an extension to call, beyond included destinations."""

    NATIONAL = "national"
    INTERNATIONAL = "international"
    MOBILE_ABROAD = "mobile_abroad"
    PREMIUM = "premium"


ALL_CLASSES: frozenset[DestinationClass] = frozenset(DestinationClass)


class Treatment(StrEnum):
    """What a plan does with premium-rate numbers and non-emergency short codes."""

    CHARGE = "charge"
    BLOCK = "block"


NO_FUNDS_REASONS = frozenset({Reason.INSUFFICIENT_FUNDS, Reason.ACCOUNT_BLOCKED})
"""Refusals the dialplan answers with its "credit exhausted" prompt."""
LIMIT_REASONS = frozenset({Reason.TOO_MANY_CALLS, Reason.RATE_LIMITED, Reason.VELOCITY_LIMIT, Reason.OUTSIDE_HOURS})
"""Refusals by the account's fraud limits: the dialplan says "not now" rather than "no service"."""

# Asterisk's AGI `SET VARIABLE` and the dialplan both work on (name, value) pairs.
Variables = Sequence[tuple[str, str]]


def answer(
    status: str, reason: str, e164: str = "", guard: str = "", call_id: str = "", quota: str = ""
) -> list[tuple[str, str]]:
    """The variables for one answer, every name always set (an empty value clears it), in the
    order of `VARIABLES`: the status last."""
    return [(REASON, reason), (E164, e164), (GUARDSEC, guard), (QUOTASEC, quota), (CALLID, call_id), (STATUS, status)]
