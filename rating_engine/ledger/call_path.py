"""The call path's operations as both fast ways know them: which programs they are, the checks made
before the first statement, and what each returns when it went the common way.

PostgreSQL's batch function (`pg_batch`), its one-statement operations (`pg_lone`) and SQLite's walk
(`sqlite_batch`) each do the common case of these programs and hand the rest back to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import programs as P
from .models import ReserveResult, SettleResult

FAST_PROGRAMS: dict[Callable[..., Any], str] = {
    P.reserve: "reserve",
    P.extend: "extend",
    P.release: "release",
    P.settle: "settle",
    P.annotate: "annotate",
}


def validate(op: str, args: tuple[Any, ...]) -> None:
    """The checks the program would make before its first statement, with the same errors."""
    if op == "reserve":
        P.check_amount(args[3], "a reservation")
    elif op == "extend":
        P.check_amount(args[1], "an extension of a reservation")
    elif op == "settle":
        P.check_amount(args[1], "a cost", zero=True)


def result(op: str, args: tuple[Any, ...], a: int, b: int, c: int) -> Any:
    """What the program would have returned, for an operation that went the common way: from the
    fast way's three numbers (the amount held or the cost, what was held, the balance after)."""
    if op in ("reserve", "extend"):
        return ReserveResult(True, None, a)
    if op in ("release", "annotate"):
        return bool(a)
    return SettleResult(True, cost=a, reserved=b, overdraft=a > b, balance_after=c)
