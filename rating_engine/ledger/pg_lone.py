"""A lone reservation on PostgreSQL in one statement: one round trip instead of five.

A PBX at a few calls a second sends its reservations one at a time, and the dialplan waits for
each. As its program a reservation is BEGIN, the reservation's INSERT, the extension's UPDATE, the
account's UPDATE and COMMIT: five round trips, each a wake-up of the engine's event loop and of a
server process. Here the same three writes are one statement of data-modifying CTEs, in the same
order (the reservation, then the extension, then the account: the order every program and the batch
function take their rows in), committed by the server on its own. Each UPDATE tests what the
program's tests (`programs._take`, `reserve`'s expected settings revisions) under the row's lock.

Only the common case: if the reservation is written but the extension or the account will not take
it (a cap, a limit, the money, settings changed, a first call without an extension row, a velocity
limit to sum, a time zone that is not the one the day was computed in), the statement raises and
PostgreSQL undoes all of it; if the reservation is not written (a duplicate, a settled call, an
unknown account), nothing was. Either way the program runs next and gives the answer and the
reason, so the rules stay in `programs.py`.
"""

from __future__ import annotations

from typing import Any

from .models import periods
from .pg_batch import HANDED_BACK

HAND_BACK = "rating_engine_hand_back"
CREATE = (
    f"CREATE OR REPLACE FUNCTION {HAND_BACK}() RETURNS integer LANGUAGE plpgsql VOLATILE AS"
    f" $fn$ BEGIN RAISE EXCEPTION 'handed back to the program' USING ERRCODE = '{HANDED_BACK}'; END $fn$"
)
"""Raised from the statement to undo what it wrote: a CASE calls it only when it must."""

# $1 call, $2 account, $3 extension, $4 amount, $5 now, $6 deadline, $7 details, $8 time zone, $9 day,
# $10 month, $11 minute, $12 the account's expected settings revision (-1: none), $13 the extension's
RESERVE = f"""
WITH r AS (
    INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at, deadline, details)
    SELECT $1, $2, $3, $4, $5, $5, $6, $7
    WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $2) AND NOT EXISTS (SELECT 1 FROM activity WHERE call_id = $1)
    ON CONFLICT DO NOTHING RETURNING 1
), e AS (
    UPDATE extensions SET reserved = reserved + $4, live_calls = live_calls + 1,
        attempts = CASE WHEN attempt_minute = $11 THEN attempts + 1 ELSE 1 END, attempt_minute = $11,
        day_spent = CASE WHEN day = $9 THEN day_spent ELSE 0 END, day = $9,
        month_spent = CASE WHEN month = $10 THEN month_spent ELSE 0 END, month = $10
    WHERE account_id = $2 AND ext = $3 AND EXISTS (SELECT 1 FROM r) AND chargeable = 1
        AND ($12 < 0 OR settings_rev = $13)
        AND (daily_cap IS NULL OR (CASE WHEN day = $9 THEN day_spent ELSE 0 END) + reserved + $4 <= daily_cap)
        AND (monthly_cap IS NULL OR (CASE WHEN month = $10 THEN month_spent ELSE 0 END) + reserved + $4 <= monthly_cap)
        AND (max_calls IS NULL OR live_calls < max_calls)
        AND (max_attempts IS NULL OR attempt_minute <> $11 OR attempts < max_attempts)
    RETURNING 1
), a AS (
    UPDATE accounts SET reserved = reserved + $4, live_calls = live_calls + 1,
        attempts = CASE WHEN attempt_minute = $11 THEN attempts + 1 ELSE 1 END, attempt_minute = $11
    WHERE id = $2 AND EXISTS (SELECT 1 FROM e) AND timezone = $8 AND velocity_limit IS NULL
        AND ($12 < 0 OR settings_rev = $12)
        AND balance - reserved - floor >= $4
        AND (max_calls IS NULL OR live_calls < max_calls)
        AND (max_attempts IS NULL OR attempt_minute <> $11 OR attempts < max_attempts)
    RETURNING 1
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM a) THEN 1 WHEN EXISTS (SELECT 1 FROM r) THEN {HAND_BACK}() ELSE 0 END
"""
"""1: held; 0: nothing written, the program's to answer; RE001 raised: undone, the program's too."""


def reserve_args(args: tuple[Any, ...], timezone: str) -> tuple[Any, ...]:
    """`programs.reserve`'s arguments as RESERVE's, its day and month in the account's time zone."""
    call_id, account_id, ext, amount, now, deadline, details, expect = args
    day, month = periods(now, timezone)
    arev, erev = expect if expect is not None else (-1, -1)
    return (call_id, account_id, ext, amount, now, deadline, details, timezone, day, month, now // 60, arev, erev)
