"""A batch of reservations and settles that all pass, on PostgreSQL in one statement instead of a call of
the batch function.

A call of the function costs the server a fixed ~400–500 µs whatever the batch holds, mostly each
of its statements' executor start and end, and then its loop's work per operation. The common batch
is only new calls' reservations and ended calls' settles, every one of which passes; this one
statement of data-modifying CTEs (as `pg_lone`'s, for several calls) writes such a batch with 35–50%
less of the server's CPU, measured one batch after the other (2 to 32 operations).

It does only the case where every operation passes, and checks that case for the batch at once,
grouped by extension and by account, on the row as it stands under its lock:
- reservations, in order, all fit when the row takes their sum and their number at once (the
  amounts are positive, so the largest running sum is the last; a call or attempts limit counts to
  their number), plus what the settles before them could add (a settle that costs more than its call
  held takes the difference from the money and adds it to the day's and month's spending): a bound,
  so a batch it refuses may still pass one by one, and goes to the function, which runs them so;
- settles take their reservations away and the balance goes down by their costs; none may raise a
  low-balance notice or an automatic top-up, which the balance after the batch tells at once (the
  balance only goes down, so it crosses the threshold in the batch exactly when it starts at or
  above it and ends below);
- all in one minute, one day and one month per account, each call once, every account's time zone
  known, every settled call's account and extension known: Python sends the batch here only so.
A first call's extension gets its row here, with the default rules (which take any reservation) and
the batch's sums already written. If anything does not pass (a duplicate, a settled or unknown call,
an unknown account, a cap, a limit, the money, changed settings, a velocity limit, a notice, another
time zone), the statement undoes all of it and the batch goes to the function, which runs the
operations one after the other and hands the one that fails to its program. The rules stay in
`programs.py` and the function; this repeats only what they write when everything passes, and the
equivalence tests run it against both.

The rows are taken in the order every program and the function take them: the settled calls'
reservations in key order, the new extension rows (in key order), then the extensions in key order,
then the accounts in key order, each set locked by a `FOR … UPDATE` in its own CTE before the
statement that writes it; each UPDATE's checks read the row under that lock. A balance after is the
account's new balance plus the costs settled after that call in the batch.
"""

from __future__ import annotations

from typing import Any

from .models import CallDetails, periods
from .pg_batch import Zones, _column
from .pg_lone import HAND_BACK

COLUMNS = (
    ("op", "text"),
    ("c", "text"),
    ("a", "text"),
    ("e", "text"),
    ("amount", "bigint"),  # held by a reservation, or a settle's cost
    ("now", "bigint"),
    ("deadline", "bigint"),
    ("details", "text"),
    ("tz", "text"),
    ("day", "text"),
    ("month", "text"),
    ("arev", "bigint"),
    ("erev", "bigint"),
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
_UNNEST = ", ".join(f"${n}::text::{kind}[]" for n, (_name, kind) in enumerate(COLUMNS, start=3))
_SUMS = """count(*) FILTER (WHERE s.op = 'reserve') AS n, count(*) FILTER (WHERE s.op = 'settle') AS gone,
        coalesce(sum(s.amount) FILTER (WHERE s.op = 'reserve'), 0)::bigint AS taken,
        coalesce(sum(s.held) FILTER (WHERE s.op = 'settle'), 0)::bigint AS freed,
        coalesce(sum(s.amount) FILTER (WHERE s.op = 'settle'), 0)::bigint AS cost,
        coalesce(sum(greatest(s.amount - s.held, 0)) FILTER (WHERE s.op = 'settle'), 0)::bigint AS over,
        min(s.now / 60) AS minute"""  # a sum of bigints is numeric

# $1 the number of reservations, $2 of settles, then one array per column. An expected settings
# revision (`arev` of 0 or more) must be the same for every reservation of a row, and the row's.
BATCH = f"""
WITH b AS (
    SELECT * FROM unnest({_UNNEST}) WITH ORDINALITY AS b({", ".join(name for name, _kind in COLUMNS)}, k)
), lr AS (
    SELECT 1 FROM reservations r JOIN b ON r.call_id = b.c AND b.op = 'settle'
    ORDER BY r.call_id FOR UPDATE OF r
), d AS (
    DELETE FROM reservations r USING b
    WHERE (SELECT count(*) FROM lr) >= 0 AND b.op = 'settle' AND r.call_id = b.c AND r.account_id = b.a
        AND r.ext = b.e
    RETURNING r.call_id, r.amount
), r AS (
    INSERT INTO reservations (call_id, account_id, ext, amount, created_at, updated_at, deadline, details)
    SELECT b.c, b.a, b.e, b.amount, b.now, b.now, b.deadline, b.details FROM b
    WHERE b.op = 'reserve' AND EXISTS (SELECT 1 FROM accounts y WHERE y.id = b.a)
        AND NOT EXISTS (SELECT 1 FROM activity t WHERE t.call_id = b.c)
    ORDER BY b.c
    ON CONFLICT DO NOTHING RETURNING 1
), s AS (  -- each operation, what its call held (a settle's), and its account's costs settled so far
    SELECT b.*, coalesce(d.amount, 0) AS held,
        (sum(CASE WHEN b.op = 'settle' THEN b.amount ELSE 0 END) OVER (PARTITION BY b.a ORDER BY b.k))::bigint AS spent
    FROM b LEFT JOIN d ON d.call_id = b.c
), ge AS (
    SELECT s.a, s.e, {_SUMS}, min(s.day) AS day, min(s.month) AS month,
        min(s.erev) FILTER (WHERE s.arev >= 0) AS rev, max(s.erev) FILTER (WHERE s.arev >= 0) AS rev_hi
    FROM s GROUP BY s.a, s.e
), mx AS (  -- a first call's row, with the default rules and the batch's sums
    INSERT INTO extensions (account_id, ext, reserved, live_calls, attempts, attempt_minute, day, month)
    SELECT g.a, g.e, g.taken, g.n, g.n, g.minute, g.day, g.month FROM ge g
    WHERE (SELECT count(*) FROM r) = $1 AND (SELECT count(*) FROM d) = $2 AND g.gone = 0
        AND (g.rev IS NULL OR (g.rev = g.rev_hi AND g.rev = 0))
        AND EXISTS (SELECT 1 FROM accounts y WHERE y.id = g.a)
        AND NOT EXISTS (SELECT 1 FROM extensions x WHERE x.account_id = g.a AND x.ext = g.e)
    ORDER BY g.a, g.e
    ON CONFLICT DO NOTHING RETURNING 1
), lx AS (
    SELECT 1 FROM extensions x JOIN ge ON x.account_id = ge.a AND x.ext = ge.e
    ORDER BY x.account_id, x.ext FOR NO KEY UPDATE OF x
), e AS (
    UPDATE extensions x SET reserved = x.reserved + g.taken - g.freed, live_calls = x.live_calls + g.n - g.gone,
        attempts = CASE WHEN g.n = 0 THEN x.attempts
            ELSE (CASE WHEN x.attempt_minute = g.minute THEN x.attempts ELSE 0 END) + g.n END,
        attempt_minute = CASE WHEN g.n = 0 THEN x.attempt_minute ELSE g.minute END,
        day_spent = (CASE WHEN x.day = g.day THEN x.day_spent ELSE 0 END) + g.cost, day = g.day,
        month_spent = (CASE WHEN x.month = g.month THEN x.month_spent ELSE 0 END) + g.cost, month = g.month
    FROM ge g
    WHERE (SELECT count(*) FROM r) = $1 AND (SELECT count(*) FROM d) = $2 AND (SELECT count(*) FROM mx) >= 0
        AND (SELECT count(*) FROM lx) >= 0
        AND x.account_id = g.a AND x.ext = g.e
        AND (g.n = 0 OR (x.chargeable = 1
            AND (g.rev IS NULL OR (g.rev = g.rev_hi AND x.settings_rev = g.rev))
            AND (x.daily_cap IS NULL OR (CASE WHEN x.day = g.day THEN x.day_spent ELSE 0 END)
                + x.reserved + g.taken + g.over <= x.daily_cap)
            AND (x.monthly_cap IS NULL OR (CASE WHEN x.month = g.month THEN x.month_spent ELSE 0 END)
                + x.reserved + g.taken + g.over <= x.monthly_cap)
            AND (x.max_calls IS NULL OR x.live_calls + g.n - 1 < x.max_calls)
            AND (x.max_attempts IS NULL OR ((x.attempt_minute <> g.minute OR x.attempts < x.max_attempts)
                AND (g.n = 1 OR (CASE WHEN x.attempt_minute = g.minute THEN x.attempts ELSE 0 END)
                    + g.n - 1 < x.max_attempts)))))
    RETURNING 1
), ga AS (
    SELECT s.a, {_SUMS}, min(s.tz) AS tz,
        min(s.arev) FILTER (WHERE s.arev >= 0) AS rev, max(s.arev) FILTER (WHERE s.arev >= 0) AS rev_hi
    FROM s GROUP BY s.a
), ly AS (
    SELECT 1 FROM accounts y JOIN ga ON y.id = ga.a ORDER BY y.id FOR NO KEY UPDATE OF y
), a AS (
    UPDATE accounts y SET balance = y.balance - g.cost, reserved = y.reserved + g.taken - g.freed,
        live_calls = y.live_calls + g.n - g.gone,
        attempts = CASE WHEN g.n = 0 THEN y.attempts
            ELSE (CASE WHEN y.attempt_minute = g.minute THEN y.attempts ELSE 0 END) + g.n END,
        attempt_minute = CASE WHEN g.n = 0 THEN y.attempt_minute ELSE g.minute END
    FROM ga g
    WHERE (SELECT count(*) FROM e) + (SELECT count(*) FROM mx) = (SELECT count(*) FROM ge)
        AND (SELECT count(*) FROM ly) >= 0
        AND y.id = g.a AND y.timezone = g.tz
        AND (g.n = 0 OR (y.velocity_limit IS NULL
            AND (g.rev IS NULL OR (g.rev = g.rev_hi AND y.settings_rev = g.rev))
            AND y.balance - y.reserved - y.floor >= g.taken + g.over
            AND (y.max_calls IS NULL OR y.live_calls + g.n - 1 < y.max_calls)
            AND (y.max_attempts IS NULL OR ((y.attempt_minute <> g.minute OR y.attempts < y.max_attempts)
                AND (g.n = 1 OR (CASE WHEN y.attempt_minute = g.minute THEN y.attempts ELSE 0 END)
                    + g.n - 1 < y.max_attempts)))))
        AND NOT (g.gone > 0 AND y.balance - g.cost < y.threshold
            AND (y.threshold <= y.balance OR (y.on_low = 'topup' AND y.topup_pending IS NULL)))
    RETURNING y.id, y.balance, g.cost
), after AS (  -- each settle with the balance it left
    SELECT s.*, a.balance + a.cost - s.spent AS balance FROM s JOIN a ON a.id = s.a WHERE s.op = 'settle'
), j AS (
    INSERT INTO journal (account_id, at, entry, amount, reference, balance_after)
    SELECT w.a, w.now, 'debit', -w.amount, w.c, w.balance FROM after w WHERE w.amount > 0 ORDER BY w.k
), t AS (
    INSERT INTO activity (call_id, account_id, ext, started_at, ended_at, dialed, e164, destination, kind,
        billable_seconds, cost, reserved, balance_after, estimated, overdraft, day)
    SELECT w.c, w.a, w.e, w.started, CASE WHEN w.ended <> 0 THEN w.ended ELSE w.now END, w.dialed, w.e164,
        w.destination, w.kind, w.billable, w.amount, w.held, w.balance, w.estimated,
        CASE WHEN w.amount > w.held THEN 1 ELSE 0 END, w.end_day
    FROM after w ORDER BY w.k
)
SELECT CASE WHEN (SELECT count(*) FROM a) = (SELECT count(*) FROM ga) THEN 1
        WHEN EXISTS (SELECT 1 FROM r) OR EXISTS (SELECT 1 FROM d) OR EXISTS (SELECT 1 FROM mx) THEN {HAND_BACK}()
        ELSE 0 END AS ok,
    (SELECT array_agg(w.held ORDER BY w.k) FROM after w) AS held,
    (SELECT array_agg(w.balance ORDER BY w.k) FROM after w) AS balances
"""
"""ok 1: all done (each settle's held amount and balance after, in order); 0: nothing written, the
function's to run; RE001 raised: undone, the function's too."""


def batch_args(ops: list[tuple[str, tuple[Any, ...]]], zones: Zones) -> tuple[Any, ...] | None:
    """A batch of reservations and settles as BATCH's arguments, or None where the statement cannot
    take it: another operation, a call named twice, a settled call this engine does not know, an
    account whose time zone it does not know, or an account's operations in more than one minute,
    day or month."""
    rows = []
    seen: set[str] = set()
    moment: dict[str, tuple[int, str, str]] = {}  # each account's minute, day and month
    reserves = 0
    for op, args in ops:
        call_id = args[0]
        if op == "reserve":
            _call, account_id, ext, amount, now, deadline, details, expect = args
            reserves += 1
        elif op == "settle":
            whose = zones.of_call.get(call_id)
            if whose is None:
                return None
            account_id, ext = whose
            _call, amount, d, now = args
        else:
            return None
        tz = zones.of_account.get(account_id)
        if tz is None or call_id in seen:
            return None
        seen.add(call_id)
        day, month = periods(now, tz)
        if moment.setdefault(account_id, (now // 60, day, month)) != (now // 60, day, month):
            return None
        if op == "reserve":
            arev, erev = expect if expect is not None else (-1, -1)
            rows.append(("reserve", call_id, account_id, ext, amount, now, deadline, details, tz, day, month, arev,
                         erev, "", 0, 0, "", "", "", "", 0, 0))  # fmt: skip
        else:
            d = d if isinstance(d, CallDetails) else CallDetails()
            end_day = periods(d.ended_at or now, tz)[0]
            rows.append(("settle", call_id, account_id, ext, amount, now, 0, "", tz, day, month, -1, -1, end_day,
                         d.started_at, d.ended_at, d.dialed, d.e164, d.destination, d.kind, d.billable_seconds,
                         int(d.estimated)))  # fmt: skip
    columns = zip(*rows, strict=True)
    return (
        reserves,
        len(rows) - reserves,
        *(_column(col, kind) for col, (_name, kind) in zip(columns, COLUMNS, strict=True)),
    )
