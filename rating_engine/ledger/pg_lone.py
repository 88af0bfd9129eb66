"""The call path's lone operations on PostgreSQL in one statement: one round trip instead of four to six.

A PBX at a few calls a second sends its reservations one at a time, and the dialplan waits for
each. As its program a reservation is BEGIN, the reservation's INSERT, the extension's UPDATE, the
account's UPDATE and COMMIT: five round trips, each a wake-up of the engine's event loop and of a
server process. Here the same three writes are one statement of data-modifying CTEs, in the same
order (the reservation, then the extension, then the account: the order every program and the batch
function take their rows in), committed by the server on its own. Each UPDATE checks, under the
row's lock, what the program checks (`programs._take`, `reserve`'s expected settings revisions).

Only the common case. Each statement first looks, without a lock, at the rows as its snapshot has
them: where the extension or the account would not take the operation (a cap, a limit, the money,
settings changed, a first call without an extension row, a velocity limit to sum, a time zone that
is not the one the day was computed in), nothing is written, and the program runs next and gives the
answer and the reason, so the rules stay in `programs.py`; likewise for a duplicate, a settled call
or an unknown account. The same tests are made again under each row's lock as it is written: if
another writer changed a row in between, the statement raises and PostgreSQL undoes all of it, and
the program answers. That raise is logged by PostgreSQL as an ERROR with its statement, so it is
kept for the race: a refused call (an account out of money, say, refused at every attempt) would
otherwise log one each time. A settle the same way: its reservation taken away, then
the extension's and the account's holds and the balance, the journal's debit and the activity row;
one that would raise a low-balance notice or an automatic top-up, or whose extension has no row,
is left to its program, as is one whose reservation is gone (settled already, unknown).
A renewal too: its reservation first (the row it locks first as its program), then the extension's
caps and the account's money; one that does not fit (a cap, the money, an extension no longer
chargeable or without a row, a velocity limit, another time zone) is answered by its program,
with the reason. Nobody waits on a renewal, but as its program it held the account's row
for four round trips, and every other operation on that account waited behind it. A release (a
call that never connected) likewise: its reservation taken away, the extension's and the account's
holds given back; it refuses nothing, so only a missing extension row or another time zone leave it
to its program.
"""

from __future__ import annotations

from typing import Any

from .models import CallDetails, periods
from .pg_batch import HANDED_BACK

HAND_BACK = "rating_engine_hand_back"
CREATE = (
    f"CREATE OR REPLACE FUNCTION {HAND_BACK}() RETURNS integer LANGUAGE plpgsql VOLATILE AS"
    f" $fn$ BEGIN RAISE EXCEPTION 'handed back to the program' USING ERRCODE = '{HANDED_BACK}'; END $fn$"
)
"""Raised from the statement to undo what it wrote: a CASE calls it only when it must."""

_ZONE_OF_CALL = """(SELECT y.timezone FROM reservations v JOIN accounts y ON y.id = v.account_id
        WHERE v.call_id = $1 AND NOT EXISTS (SELECT 1 FROM a)) AS tz"""
"""For a settle, renewal or release that wrote nothing: the zone of its call's account as found ($1 the call)."""
_HAS_ROW = "EXISTS (SELECT 1 FROM extensions x WHERE x.account_id = v.account_id AND x.ext = v.ext)"
"""The extension of the reservation `v` has a row."""

# $1 call, $2 account, $3 extension, $4 amount, $5 now, $6 deadline, $7 details, $8 time zone, $9 day,
# $10 month, $11 minute, $12 the account's expected settings revision (-1: none), $13 the extension's
_EXTENSION_TAKES = """chargeable = 1 AND ($12 < 0 OR settings_rev = $13)
        AND (daily_cap IS NULL OR (CASE WHEN day = $9 THEN day_spent ELSE 0 END) + reserved + $4 <= daily_cap)
        AND (monthly_cap IS NULL OR (CASE WHEN month = $10 THEN month_spent ELSE 0 END) + reserved + $4 <= monthly_cap)
        AND (max_calls IS NULL OR live_calls < max_calls)
        AND (max_attempts IS NULL OR attempt_minute <> $11 OR attempts < max_attempts)"""
_ACCOUNT_TAKES = """timezone = $8 AND velocity_limit IS NULL
        AND ($12 < 0 OR settings_rev = $12)
        AND balance - reserved - floor >= $4
        AND (max_calls IS NULL OR live_calls < max_calls)
        AND (max_attempts IS NULL OR attempt_minute <> $11 OR attempts < max_attempts)"""
RESERVE = f"""
WITH r AS (
    INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at, deadline, details)
    SELECT $1, $2, $3, $4, $5, $5, $6, $7
    WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $2 AND {_ACCOUNT_TAKES})
        AND EXISTS (SELECT 1 FROM extensions WHERE account_id = $2 AND ext = $3 AND {_EXTENSION_TAKES})
        AND NOT EXISTS (SELECT 1 FROM activity WHERE call_id = $1)
    ON CONFLICT DO NOTHING RETURNING 1
), e AS (
    UPDATE extensions SET reserved = reserved + $4, live_calls = live_calls + 1,
        attempts = CASE WHEN attempt_minute = $11 THEN attempts + 1 ELSE 1 END, attempt_minute = $11,
        day_spent = CASE WHEN day = $9 THEN day_spent ELSE 0 END, day = $9,
        month_spent = CASE WHEN month = $10 THEN month_spent ELSE 0 END, month = $10
    WHERE account_id = $2 AND ext = $3 AND EXISTS (SELECT 1 FROM r) AND {_EXTENSION_TAKES}
    RETURNING 1
), a AS (
    UPDATE accounts SET reserved = reserved + $4, live_calls = live_calls + 1,
        attempts = CASE WHEN attempt_minute = $11 THEN attempts + 1 ELSE 1 END, attempt_minute = $11
    WHERE id = $2 AND EXISTS (SELECT 1 FROM e) AND {_ACCOUNT_TAKES}
    RETURNING 1
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM a) THEN 1 WHEN EXISTS (SELECT 1 FROM r) THEN {HAND_BACK}() ELSE 0 END AS ok,
    (SELECT timezone FROM accounts WHERE id = $2 AND NOT EXISTS (SELECT 1 FROM a)) AS tz
"""
"""ok 1: held; 0: nothing written (a duplicate, or a call that would not fit), the program's to answer; RE001
raised: undone (a row changed under it), the program's too. tz: the account's time zone, where nothing
was written (the driver learns a zone another engine changed)."""


def reserve_args(args: tuple[Any, ...], timezone: str) -> tuple[Any, ...]:
    """`programs.reserve`'s arguments as RESERVE's, its day and month in the account's time zone."""
    call_id, account_id, ext, amount, now, deadline, details, expect = args
    day, month = periods(now, timezone)
    arev, erev = expect if expect is not None else (-1, -1)
    return (call_id, account_id, ext, amount, now, deadline, details, timezone, day, month, now // 60, arev, erev)


# $1 call, $2 cost, $3 now, $4 day, $5 month (of now), $6 time zone, $7 started, $8 ended, $9 dialed,
# $10 e164, $11 destination, $12 kind, $13 billable seconds, $14 estimated, $15 the day it ended
_NO_NOTICE = """y.timezone = $6
        AND NOT ((y.balance - $2 < y.threshold AND y.threshold <= y.balance)
            OR (y.on_low = 'topup' AND y.balance - $2 < y.threshold AND y.topup_pending IS NULL))"""
SETTLE = f"""
WITH d AS (
    DELETE FROM reservations v WHERE call_id = $1
        AND EXISTS (SELECT 1 FROM accounts y WHERE y.id = v.account_id AND {_NO_NOTICE})
        AND {_HAS_ROW}
    RETURNING account_id, ext, amount
), e AS (
    UPDATE extensions x SET reserved = x.reserved - d.amount, live_calls = x.live_calls - 1,
        day_spent = CASE WHEN x.day = $4 THEN x.day_spent ELSE 0 END + $2, day = $4,
        month_spent = CASE WHEN x.month = $5 THEN x.month_spent ELSE 0 END + $2, month = $5
    FROM d WHERE x.account_id = d.account_id AND x.ext = d.ext
    RETURNING 1
), a AS (
    UPDATE accounts y SET balance = y.balance - $2, reserved = y.reserved - d.amount, live_calls = y.live_calls - 1
    FROM d WHERE y.id = d.account_id AND EXISTS (SELECT 1 FROM e) AND {_NO_NOTICE}
    RETURNING y.id, y.balance, d.ext, d.amount
), j AS (
    INSERT INTO journal (account_id, at, entry, amount, reference, balance_after)
    SELECT a.id, $3, 'debit', -$2, $1, a.balance FROM a WHERE $2 > 0
), t AS (
    INSERT INTO activity (call_id, account_id, ext, started_at, ended_at, dialed, e164, destination, kind,
        billable_seconds, cost, reserved, balance_after, estimated, overdraft, day)
    SELECT $1, a.id, a.ext, $7, $8, $9, $10, $11, $12, $13, $2, a.amount, a.balance, $14,
        CASE WHEN $2 > a.amount THEN 1 ELSE 0 END, $15 FROM a
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM a) THEN 1 WHEN EXISTS (SELECT 1 FROM d) THEN {HAND_BACK}() ELSE 0 END AS ok,
    (SELECT balance FROM a) AS balance, (SELECT amount FROM a) AS held,
    {_ZONE_OF_CALL}
"""
"""ok 1: settled (the balance after, what was held); 0: nothing written (no reservation, or one that would
not fit), the program's; RE001: undone (a row changed under it), the program's too. tz: as RESERVE's."""


def settle_args(args: tuple[Any, ...], timezone: str) -> tuple[Any, ...]:
    """`programs.settle`'s arguments as SETTLE's."""
    call_id, cost, d, now = args
    d = d if isinstance(d, CallDetails) else CallDetails()
    day, month = periods(now, timezone)
    ended = d.ended_at or now
    return (call_id, cost, now, day, month, timezone, d.started_at, ended, d.dialed, d.e164, d.destination, d.kind,
            d.billable_seconds, int(d.estimated), periods(ended, timezone)[0])  # fmt: skip


# $1 call, $2 amount, $3 now, $4 deadline, $5 day, $6 month (of now), $7 time zone
_CAPS_TAKE = """x.chargeable = 1
        AND (x.daily_cap IS NULL OR (CASE WHEN x.day = $5 THEN x.day_spent ELSE 0 END) + x.reserved + $2 <= x.daily_cap)
        AND (x.monthly_cap IS NULL
            OR (CASE WHEN x.month = $6 THEN x.month_spent ELSE 0 END) + x.reserved + $2 <= x.monthly_cap)"""
_MONEY_TAKES = "y.timezone = $7 AND y.velocity_limit IS NULL AND y.balance - y.reserved - y.floor >= $2"
EXTEND = f"""
WITH r AS (
    UPDATE reservations v SET amount = amount + $2, updated_at = $3,
        deadline = CASE WHEN $4 > deadline THEN $4 ELSE deadline END
    WHERE call_id = $1
        AND EXISTS (SELECT 1 FROM extensions x WHERE x.account_id = v.account_id AND x.ext = v.ext AND {_CAPS_TAKE})
        AND EXISTS (SELECT 1 FROM accounts y WHERE y.id = v.account_id AND {_MONEY_TAKES})
    RETURNING account_id, ext, amount
), e AS (
    UPDATE extensions x SET reserved = x.reserved + $2,
        day_spent = CASE WHEN x.day = $5 THEN x.day_spent ELSE 0 END, day = $5,
        month_spent = CASE WHEN x.month = $6 THEN x.month_spent ELSE 0 END, month = $6
    FROM r WHERE x.account_id = r.account_id AND x.ext = r.ext AND {_CAPS_TAKE}
    RETURNING 1
), a AS (
    UPDATE accounts y SET reserved = y.reserved + $2
    FROM r WHERE y.id = r.account_id AND EXISTS (SELECT 1 FROM e) AND {_MONEY_TAKES}
    RETURNING r.amount
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM a) THEN 1 WHEN EXISTS (SELECT 1 FROM r) THEN {HAND_BACK}() ELSE 0 END AS ok,
    (SELECT amount FROM a) AS amount,
    {_ZONE_OF_CALL}
"""
"""ok 1: renewed (the reservation's amount now); 0: nothing written (no reservation, or a renewal that
would not fit), the program's; RE001: undone (a row changed under it), the program's too. tz: as RESERVE's."""


def extend_args(args: tuple[Any, ...], timezone: str) -> tuple[Any, ...]:
    """`programs.extend`'s arguments as EXTEND's."""
    call_id, amount, now, deadline = args
    day, month = periods(now, timezone)
    return (call_id, amount, now, deadline, day, month, timezone)


# $1 call, $2 day, $3 month (of now), $4 time zone
RELEASE = f"""
WITH d AS (
    DELETE FROM reservations v WHERE call_id = $1
        AND EXISTS (SELECT 1 FROM accounts y WHERE y.id = v.account_id AND y.timezone = $4)
        AND {_HAS_ROW}
    RETURNING account_id, ext, amount
), e AS (
    UPDATE extensions x SET reserved = x.reserved - d.amount, live_calls = x.live_calls - 1,
        day_spent = CASE WHEN x.day = $2 THEN x.day_spent ELSE 0 END, day = $2,
        month_spent = CASE WHEN x.month = $3 THEN x.month_spent ELSE 0 END, month = $3
    FROM d WHERE x.account_id = d.account_id AND x.ext = d.ext
    RETURNING 1
), a AS (
    UPDATE accounts y SET reserved = y.reserved - d.amount, live_calls = y.live_calls - 1
    FROM d WHERE y.id = d.account_id AND EXISTS (SELECT 1 FROM e) AND y.timezone = $4
    RETURNING 1
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM a) THEN 1 WHEN EXISTS (SELECT 1 FROM d) THEN {HAND_BACK}() ELSE 0 END AS ok,
    {_ZONE_OF_CALL}
"""
"""ok 1: released; 0: nothing written (no reservation, or an extension without a row, another time zone), the
program's to answer; RE001 raised: undone (a row changed under it), the program's too. tz: as RESERVE's."""


def release_args(args: tuple[Any, ...], timezone: str) -> tuple[Any, ...]:
    """`programs.release`'s arguments as RELEASE's."""
    call_id, now = args
    day, month = periods(now, timezone)
    return (call_id, day, month, timezone)
