"""A batch made only of reservations on PostgreSQL, in one statement instead of a call of the batch function.

Authorizations arrive in bursts of new calls, and their reservations are what the dialplan waits
for; at a moderate rate the batches hold two to eight of them. The batch function costs the server
a fixed ~400–500 µs a call, mostly each of its statements' executor start and end, whatever the
batch holds; this one statement of data-modifying CTEs (as `pg_lone`'s, for several calls) cost
35–50% less server CPU for batches of 2 to 32 reservations, measured one after the other.

It does only the case where every reservation passes. The operations of the batch are grouped by
extension and by account: n reservations in order pass one after the other exactly when the row,
as it stands, takes their sum and their number at once (the amounts are positive, so the largest
running sum is the last; a call limit or an attempts limit counts to n), provided they fall in one
minute, one day and one month. Python sends the batch here only so (each call once, every
account's time zone known, one minute, day and month per account); if a reservation is a duplicate,
a settled call, an unknown account, or if a row will not take the sum (a cap, a limit, the money,
changed settings, a first call without an extension row, a velocity limit, another time zone), the
statement undoes all of it and the batch goes to the function, which runs the reservations one
after the other and hands back the one that fails. The rules stay in `programs.py` and the
function; this repeats only what they write when everything passes, and the equivalence tests run
it against both.

The rows are taken in the order every program and the function take them: the reservations (new
rows), then the extensions in key order, then the accounts in key order, each set locked by a
`FOR NO KEY UPDATE` in its own CTE before the UPDATE that writes it; each UPDATE's checks read the
row under that lock.
"""

from __future__ import annotations

from typing import Any

from .models import periods
from .pg_batch import Zones, _column
from .pg_lone import HAND_BACK

COLUMNS = (
    ("c", "text"),
    ("a", "text"),
    ("e", "text"),
    ("amount", "bigint"),
    ("now", "bigint"),
    ("deadline", "bigint"),
    ("details", "text"),
    ("tz", "text"),
    ("day", "text"),
    ("month", "text"),
    ("arev", "bigint"),
    ("erev", "bigint"),
)
_UNNEST = ", ".join(f"${n}::text::{kind}[]" for n, (_name, kind) in enumerate(COLUMNS, start=2))

# $1 the number of reservations, then one array per column. An expected settings revision (`arev`
# of 0 or more) must be the same for every reservation of a row, and the row's.
RESERVES = f"""
WITH b AS (
    SELECT * FROM unnest({_UNNEST}) AS b({", ".join(name for name, _kind in COLUMNS)})
), r AS (
    INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at, deadline, details)
    SELECT b.c, b.a, b.e, b.amount, b.now, b.now, b.deadline, b.details FROM b
    WHERE EXISTS (SELECT 1 FROM accounts y WHERE y.id = b.a)
        AND NOT EXISTS (SELECT 1 FROM activity t WHERE t.call_id = b.c)
    ORDER BY b.c
    ON CONFLICT DO NOTHING RETURNING 1
), ge AS (
    SELECT b.a, b.e, sum(b.amount) AS total, count(*) AS n, min(b.day) AS day, min(b.month) AS month,
        min(b.now / 60) AS minute,
        min(b.erev) FILTER (WHERE b.arev >= 0) AS rev, max(b.erev) FILTER (WHERE b.arev >= 0) AS rev_hi
    FROM b GROUP BY b.a, b.e
), lx AS (
    SELECT 1 FROM extensions x JOIN ge ON x.account_id = ge.a AND x.ext = ge.e
    ORDER BY x.account_id, x.ext FOR NO KEY UPDATE OF x
), e AS (
    UPDATE extensions x SET reserved = x.reserved + g.total, live_calls = x.live_calls + g.n,
        attempts = CASE WHEN x.attempt_minute = g.minute THEN x.attempts ELSE 0 END + g.n, attempt_minute = g.minute,
        day_spent = CASE WHEN x.day = g.day THEN x.day_spent ELSE 0 END, day = g.day,
        month_spent = CASE WHEN x.month = g.month THEN x.month_spent ELSE 0 END, month = g.month
    FROM ge g
    WHERE (SELECT count(*) FROM r) = $1 AND (SELECT count(*) FROM lx) >= 0
        AND x.account_id = g.a AND x.ext = g.e AND x.chargeable = 1
        AND (g.rev IS NULL OR (g.rev = g.rev_hi AND x.settings_rev = g.rev))
        AND (x.daily_cap IS NULL
            OR (CASE WHEN x.day = g.day THEN x.day_spent ELSE 0 END) + x.reserved + g.total <= x.daily_cap)
        AND (x.monthly_cap IS NULL
            OR (CASE WHEN x.month = g.month THEN x.month_spent ELSE 0 END) + x.reserved + g.total <= x.monthly_cap)
        AND (x.max_calls IS NULL OR x.live_calls + g.n - 1 < x.max_calls)
        AND (x.max_attempts IS NULL OR ((x.attempt_minute <> g.minute OR x.attempts < x.max_attempts)
            AND (g.n = 1
                OR (CASE WHEN x.attempt_minute = g.minute THEN x.attempts ELSE 0 END) + g.n - 1 < x.max_attempts)))
    RETURNING 1
), ga AS (
    SELECT b.a, sum(b.amount) AS total, count(*) AS n, min(b.now / 60) AS minute, min(b.tz) AS tz,
        min(b.arev) FILTER (WHERE b.arev >= 0) AS rev, max(b.arev) FILTER (WHERE b.arev >= 0) AS rev_hi
    FROM b GROUP BY b.a
), ly AS (
    SELECT 1 FROM accounts y JOIN ga ON y.id = ga.a ORDER BY y.id FOR NO KEY UPDATE OF y
), a AS (
    UPDATE accounts y SET reserved = y.reserved + g.total, live_calls = y.live_calls + g.n,
        attempts = CASE WHEN y.attempt_minute = g.minute THEN y.attempts ELSE 0 END + g.n, attempt_minute = g.minute
    FROM ga g
    WHERE (SELECT count(*) FROM e) = (SELECT count(*) FROM ge) AND (SELECT count(*) FROM ly) >= 0
        AND y.id = g.a AND y.timezone = g.tz AND y.velocity_limit IS NULL
        AND (g.rev IS NULL OR (g.rev = g.rev_hi AND y.settings_rev = g.rev))
        AND y.balance - y.reserved - y.floor >= g.total
        AND (y.max_calls IS NULL OR y.live_calls + g.n - 1 < y.max_calls)
        AND (y.max_attempts IS NULL OR ((y.attempt_minute <> g.minute OR y.attempts < y.max_attempts)
            AND (g.n = 1
                OR (CASE WHEN y.attempt_minute = g.minute THEN y.attempts ELSE 0 END) + g.n - 1 < y.max_attempts)))
    RETURNING 1
)
SELECT CASE WHEN (SELECT count(*) FROM a) = (SELECT count(*) FROM ga) THEN 1
    WHEN EXISTS (SELECT 1 FROM r) THEN {HAND_BACK}() ELSE 0 END
"""
"""1: all held; 0: nothing written, the function's to answer; RE001 raised: undone, the function's too."""


def reserves_args(batch: list[tuple[Any, ...]], zones: Zones) -> tuple[Any, ...] | None:
    """`programs.reserve`'s arguments of a batch as RESERVES's, or None where the statement cannot
    take the batch: a call named twice, an account whose time zone this engine does not know, or an
    account's reservations in more than one minute, day or month."""
    rows = []
    seen: set[str] = set()
    moment: dict[str, tuple[int, str, str]] = {}  # each account's minute, day and month
    for call_id, account_id, ext, amount, now, deadline, details, expect in batch:
        tz = zones.of_account.get(account_id)
        if tz is None or call_id in seen:
            return None
        seen.add(call_id)
        day, month = periods(now, tz)
        if moment.setdefault(account_id, (now // 60, day, month)) != (now // 60, day, month):
            return None
        arev, erev = expect if expect is not None else (-1, -1)
        rows.append((call_id, account_id, ext, amount, now, deadline, details, tz, day, month, arev, erev))
    columns = zip(*rows, strict=True)
    return (len(rows), *(_column(col, kind) for col, (_name, kind) in zip(columns, COLUMNS, strict=True)))
