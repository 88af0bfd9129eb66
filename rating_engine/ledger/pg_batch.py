"""The call path's operations on PostgreSQL, many per statement: one server-side function per batch.

A reservation and a settle take eight statements and as many round trips when run as programs,
each in its own transaction, each queuing on the account row. Here a batch of them (reserve,
extend, release, settle, annotate) is sent as arrays to `rating_engine_batch_v1`, which runs
them in order in the batch's transaction and commits once. The function only does the common
case: an operation the programs would refuse, or that raises a notice or an automatic top-up,
or whose account's time zone this engine does not know yet, is handed back untouched ("slow")
and its program runs there, in a savepoint, before the function goes on with the rest. So the
rules stay in `programs.py`; the function repeats only what they write when every check passes,
and the contract suite runs both against the same tests.

Checks before writes: the function first locks every extension row, then every account row, the
batch touches, each set in key order (the programs' own order, extension before account), so
that two batches, of two writers or of two engines, cannot deadlock; with the rows locked, a
check that passes still holds at the write. No subtransactions: PostgreSQL slows every session
down once a transaction holds more than 64.

Dates are the engine's: the day and month a cap counts in are computed here in Python, by
`periods`, for the time zone this engine read from the account; if the account's zone is not
that one, the function stops there and says it, and the operation is sent again with the right
days (a server's tzdata never decides a cap's day).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import programs as P
from .models import CallDetails, ReserveResult, SettleResult, periods

FUNCTION = "rating_engine_batch_v1"
"""Versioned by name: an engine only calls the function its own code installed."""

COLUMNS = (
    ("op", "text"),
    ("call", "text"),
    ("account", "text"),
    ("ext", "text"),
    ("amount", "bigint"),
    ("now", "bigint"),
    ("deadline", "bigint"),
    ("details", "text"),
    ("tz", "text"),
    ("day", "text"),
    ("month", "text"),
    ("end_day", "text"),
    ("started", "bigint"),
    ("ended", "bigint"),
    ("dialed", "text"),
    ("e164", "text"),
    ("destination", "text"),
    ("kind", "text"),
    ("billable", "bigint"),
    ("estimated", "integer"),
)
CALL = (
    f"SELECT o_i, o_fast, o_a, o_b, o_c, o_tz, o_account FROM {FUNCTION}($1, "
    + ", ".join(f"${n}::{kind}[]" for n, (_name, kind) in enumerate(COLUMNS, start=2))
    + ")"
)

_SLOW = "o_i := q.k; o_fast := false; RETURN NEXT; RETURN;"
_FORGET = (  # handed back as it came: the row made for it goes too
    "IF v_created THEN DELETE FROM extensions WHERE account_id = v_account AND ext = v_extension; END IF;"
)
_NOT_MY_ZONE = "o_i := q.k; o_fast := false; o_tz := v_acc.timezone; o_account := v_account; RETURN NEXT; RETURN;"
# The programs' tests (`_CAPS`, `_NEW_CALL_LIMITS`, `_ACCOUNT_TAKE…`), read before writing.
_EXTENSION_FITS = """SELECT x.chargeable = 1
                AND (x.daily_cap IS NULL
                     OR (CASE WHEN x.day = q.day THEN x.day_spent ELSE 0 END) + x.reserved + q.amount <= x.daily_cap)
                AND (x.monthly_cap IS NULL
                     OR (CASE WHEN x.month = q.month THEN x.month_spent ELSE 0 END) + x.reserved + q.amount
                        <= x.monthly_cap)
                AND (q.op = 'extend' OR (
                    (x.max_calls IS NULL OR x.live_calls < x.max_calls)
                    AND (x.max_attempts IS NULL OR x.attempt_minute <> v_minute OR x.attempts < x.max_attempts)))
            INTO v_fits FROM extensions x WHERE x.account_id = v_account AND x.ext = v_extension"""
_ACCOUNT_FITS = """a.balance - a.reserved - a.floor >= q.amount
                AND (q.op = 'extend' OR (
                    (a.max_calls IS NULL OR a.live_calls < a.max_calls)
                    AND (a.max_attempts IS NULL OR a.attempt_minute <> v_minute OR a.attempts < a.max_attempts)))
                AS fits"""

CREATE = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}(p_start integer, {", ".join(f"p_{name} {kind}[]" for name, kind in COLUMNS)})
RETURNS TABLE (o_i integer, o_fast boolean, o_a bigint, o_b bigint, o_c bigint, o_tz text, o_account text)
LANGUAGE plpgsql AS $fn$
DECLARE
    q record;
    v_acc record;
    v_account text;
    v_extension text;
    v_held bigint;
    v_fits boolean;
    v_minute bigint;
    v_spent bigint;
    v_balance bigint;
    v_created boolean;
BEGIN
    -- Every extension row, then every account row, this batch touches: locked in key order.
    PERFORM 1 FROM extensions x WHERE (x.account_id, x.ext) IN (
        SELECT w.a, w.e FROM unnest(p_account[p_start:], p_ext[p_start:]) AS w(a, e) WHERE w.a IS NOT NULL
        UNION SELECT r.account_id, r.ext FROM reservations r WHERE r.call_id = ANY (p_call[p_start:])
    ) ORDER BY x.account_id, x.ext FOR UPDATE;
    PERFORM 1 FROM accounts y WHERE y.id IN (
        SELECT w.a FROM unnest(p_account[p_start:]) AS w(a) WHERE w.a IS NOT NULL
        UNION SELECT r.account_id FROM reservations r WHERE r.call_id = ANY (p_call[p_start:])
    ) ORDER BY y.id FOR UPDATE;
    FOR q IN SELECT * FROM unnest({", ".join(f"p_{name}" for name, _kind in COLUMNS)}) WITH ORDINALITY
        AS u({", ".join(name for name, _kind in COLUMNS)}, k) WHERE u.k >= p_start ORDER BY u.k LOOP
        o_i := q.k; o_fast := true; o_a := 0; o_b := 0; o_c := 0; o_tz := NULL; o_account := NULL;
        v_minute := q.now / 60;
        IF q.op = 'annotate' THEN
            UPDATE reservations SET deadline = q.deadline, details = q.details WHERE call_id = q.call;
            o_a := CASE WHEN FOUND THEN 1 ELSE 0 END;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF q.op = 'reserve' THEN
            v_account := q.account; v_extension := q.ext; v_held := 0;
            SELECT a.timezone, a.reserved, a.velocity_limit, {_ACCOUNT_FITS},
                EXISTS (SELECT 1 FROM reservations WHERE call_id = q.call)
                OR EXISTS (SELECT 1 FROM activity WHERE call_id = q.call) AS taken
            INTO v_acc FROM accounts a WHERE a.id = q.account;
            IF NOT FOUND OR v_acc.taken THEN {_SLOW} END IF;
        ELSE
            SELECT r.account_id, r.ext, r.amount, a.timezone, a.reserved, a.velocity_limit, a.balance, a.threshold,
                a.on_low, a.topup_pending, {_ACCOUNT_FITS}
            INTO v_acc FROM reservations r JOIN accounts a ON a.id = r.account_id WHERE r.call_id = q.call;
            IF NOT FOUND THEN
                IF q.op = 'release' THEN RETURN NEXT; CONTINUE; END IF;
                {_SLOW}
            END IF;
            v_account := v_acc.account_id; v_extension := v_acc.ext; v_held := v_acc.amount;
        END IF;
        IF v_acc.timezone IS DISTINCT FROM q.tz THEN {_NOT_MY_ZONE} END IF;

        IF q.op IN ('reserve', 'extend') THEN
            v_created := false;
            {_EXTENSION_FITS};
            IF NOT FOUND AND q.op = 'reserve' THEN
                -- the first call of this extension: its row, with the default rules
                INSERT INTO extensions (account_id, ext) VALUES (v_account, v_extension) ON CONFLICT DO NOTHING;
                v_created := FOUND;
                {_EXTENSION_FITS};
            END IF;
            IF v_fits IS NOT TRUE OR v_acc.fits IS NOT TRUE THEN {_FORGET} {_SLOW} END IF;
            IF v_acc.velocity_limit IS NOT NULL THEN
                SELECT COALESCE(SUM(cost), 0) INTO v_spent FROM activity
                WHERE account_id = v_account AND ended_at > q.now - 3600;
                IF v_spent + v_acc.reserved + q.amount > v_acc.velocity_limit THEN {_FORGET} {_SLOW} END IF;
            END IF;
            IF q.op = 'reserve' THEN
                INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at, deadline, details)
                VALUES (q.call, v_account, v_extension, q.amount, q.now, q.now, q.deadline, q.details);
                UPDATE extensions SET reserved = reserved + q.amount, live_calls = live_calls + 1,
                    attempts = CASE WHEN attempt_minute = v_minute THEN attempts + 1 ELSE 1 END,
                    attempt_minute = v_minute,
                    day_spent = CASE WHEN day = q.day THEN day_spent ELSE 0 END, day = q.day,
                    month_spent = CASE WHEN month = q.month THEN month_spent ELSE 0 END, month = q.month
                WHERE account_id = v_account AND ext = v_extension;
                UPDATE accounts SET reserved = reserved + q.amount, live_calls = live_calls + 1,
                    attempts = CASE WHEN attempt_minute = v_minute THEN attempts + 1 ELSE 1 END,
                    attempt_minute = v_minute
                WHERE id = v_account;
                o_a := q.amount;
            ELSE
                UPDATE extensions SET reserved = reserved + q.amount,
                    day_spent = CASE WHEN day = q.day THEN day_spent ELSE 0 END, day = q.day,
                    month_spent = CASE WHEN month = q.month THEN month_spent ELSE 0 END, month = q.month
                WHERE account_id = v_account AND ext = v_extension;
                UPDATE accounts SET reserved = reserved + q.amount WHERE id = v_account;
                UPDATE reservations SET amount = amount + q.amount, updated_at = q.now,
                    deadline = CASE WHEN q.deadline > deadline THEN q.deadline ELSE deadline END
                WHERE call_id = q.call;
                o_a := v_held + q.amount;
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;

        -- release (spent nothing) or settle (spent q.amount): the reservation goes back.
        v_balance := v_acc.balance - q.amount;
        IF q.op = 'settle' AND ((v_balance < v_acc.threshold AND v_acc.threshold <= v_acc.balance)
            OR (v_acc.on_low = 'topup' AND v_balance < v_acc.threshold AND v_acc.topup_pending IS NULL)) THEN
            {_SLOW}
        END IF;
        DELETE FROM reservations WHERE call_id = q.call;
        UPDATE extensions SET reserved = reserved - v_held, live_calls = live_calls - 1,
            day_spent = CASE WHEN day = q.day THEN day_spent ELSE 0 END + q.amount, day = q.day,
            month_spent = CASE WHEN month = q.month THEN month_spent ELSE 0 END + q.amount, month = q.month
        WHERE account_id = v_account AND ext = v_extension;
        IF q.op = 'release' THEN
            UPDATE accounts SET reserved = reserved - v_held, live_calls = live_calls - 1 WHERE id = v_account;
            o_a := 1;
            RETURN NEXT;
            CONTINUE;
        END IF;
        UPDATE accounts SET balance = balance - q.amount, reserved = reserved - v_held, live_calls = live_calls - 1
        WHERE id = v_account;
        IF q.amount > 0 THEN
            INSERT INTO journal (account_id, at, entry, amount, reference, balance_after)
            VALUES (v_account, q.now, 'debit', -q.amount, q.call, v_balance);
        END IF;
        INSERT INTO activity (call_id, account_id, ext, started_at, ended_at, dialed, e164, destination, kind,
            billable_seconds, cost, reserved, balance_after, estimated, overdraft, day)
        VALUES (q.call, v_account, v_extension, q.started, CASE WHEN q.ended <> 0 THEN q.ended ELSE q.now END,
            q.dialed, q.e164, q.destination, q.kind, q.billable, q.amount, v_held, v_balance, q.estimated,
            CASE WHEN q.amount > v_held THEN 1 ELSE 0 END, q.end_day);
        o_a := q.amount; o_b := v_held; o_c := v_balance;
        RETURN NEXT;
    END LOOP;
END
$fn$
"""

FAST_PROGRAMS: dict[Callable[..., Any], str] = {
    P.reserve: "reserve",
    P.extend: "extend",
    P.release: "release",
    P.settle: "settle",
    P.annotate: "annotate",
}


class Zones:
    """What this engine knows of the accounts it rates: each one's time zone, and whose call is whose.

    Learnt from the ledger (the function says an account's zone when it was not the one given);
    a call it does not know, or an account it has not seen, simply goes the slow way once.
    """

    LIMIT = 200_000

    def __init__(self) -> None:
        self.of_account: dict[str, str] = {}
        self.account_of_call: dict[str, str] = {}

    def learn(self, account_id: str, tz: str) -> None:
        if len(self.of_account) >= self.LIMIT:
            self.of_account.clear()
        self.of_account[account_id] = tz

    def called(self, call_id: str, account_id: str) -> None:
        if len(self.account_of_call) >= self.LIMIT:
            self.account_of_call.clear()
        self.account_of_call[call_id] = account_id


def validate(op: str, args: tuple[Any, ...]) -> None:
    """The checks the program would make before its first statement, with the same errors."""
    if op == "reserve":
        P.check_amount(args[3], "a reservation")
    elif op == "extend":
        P.check_amount(args[1], "an extension of a reservation")
    elif op == "settle":
        P.check_amount(args[1], "a cost", zero=True)


def row(op: str, args: tuple[Any, ...], zones: Zones) -> tuple[Any, ...]:
    """One operation as a row of the function's arrays, in the order of COLUMNS."""
    if op == "reserve":
        call_id, account_id, ext, amount, now, deadline, details = args
        tz = zones.of_account.get(account_id)
        day, month = periods(now, tz) if tz else ("", "")
        return (op, call_id, account_id, ext, amount, now, deadline, details, tz, day, month, "", 0, 0, "", "", "", "",
                0, 0)  # fmt: skip
    call_id = args[0]
    account_id = zones.account_of_call.get(call_id)
    tz = zones.of_account.get(account_id) if account_id else None
    if op == "annotate":
        _call, deadline, details = args
        return (op, call_id, None, None, 0, 0, deadline, details, tz, "", "", "", 0, 0, "", "", "", "", 0, 0)
    if op == "release":
        now = args[1]
        day, month = periods(now, tz) if tz else ("", "")
        return (op, call_id, None, None, 0, now, 0, "", tz, day, month, "", 0, 0, "", "", "", "", 0, 0)
    if op == "extend":
        _call, amount, now, deadline = args
        day, month = periods(now, tz) if tz else ("", "")
        return (op, call_id, None, None, amount, now, deadline, "", tz, day, month, "", 0, 0, "", "", "", "", 0, 0)
    _call, cost, d, now = args
    d = d if isinstance(d, CallDetails) else CallDetails()
    day, month = periods(now, tz) if tz else ("", "")
    end_day = periods(d.ended_at or now, tz)[0] if tz else ""
    return (op, call_id, None, None, cost, now, 0, "", tz, day, month, end_day, d.started_at, d.ended_at, d.dialed,
            d.e164, d.destination, d.kind, d.billable_seconds, int(d.estimated))  # fmt: skip


def columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)]


def result(op: str, args: tuple[Any, ...], a: int, b: int, c: int) -> Any:
    """What the program would have returned, from the function's row for a fast operation."""
    if op in ("reserve", "extend"):
        return ReserveResult(True, None, a)
    if op in ("release", "annotate"):
        return bool(a)
    return SettleResult(True, cost=a, reserved=b, overdraft=a > b, balance_after=c)
